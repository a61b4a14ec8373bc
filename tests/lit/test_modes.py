"""The training mode objects (sparsecbm/lit/modes.py): which parameters each mode's phase trains, the
sequential phase switch and learning-rate phases, the independent label-head fit and its freezing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.lit.modes import MODES, Independent, Joint, Sequential, Standard, training_mode
from sparsecbm.lit.module import CBMLitModule
from sparsecbm.models.backbone import Backbone
from sparsecbm.models.cbm_config import CBMConfig

CS = ConceptSet.from_config(
    [{"name": n} for n in ("food", "service")],
    {"column": "y", "values": ["1", "2", "3"]},
    values=["Negative", "Positive", "unknown"],
)
TINY = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64}
BATCH = {"input_ids": torch.randint(1000, 2000, (6, 5)), "attention_mask": torch.ones(6, 5, dtype=torch.long),
         "label": torch.tensor([0, 1, 2, 0, 1, 2]), "concepts": torch.randint(0, 3, (6, 2))}
# training split of 6 examples: label = number of positive concepts, so the true concepts predict it exactly
TRAIN = SimpleNamespace(concepts=[[0, 0], [1, 0], [1, 1], [0, 2], [1, 2], [2, 1]], labels=[0, 1, 2, 0, 1, 1])


def make(mode: str, max_epochs: int = 3, epoch: int = 0, **cbm) -> CBMLitModule:
    torch.manual_seed(0)
    backbone = Backbone("minilm", "mean", pretrained=False, config=TINY, tokenizer="minilm")
    module = CBMLitModule(backbone, CS, cbm={"mode": mode, "activation": "probs", **cbm})
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(raw={"train": TRAIN}), max_epochs=max_epochs,
                                      current_epoch=epoch)
    return module.train()


def trained_groups(module: CBMLitModule) -> set[str]:
    """The parameter groups that got a non-zero gradient from one training step."""
    module.zero_grad(set_to_none=True)
    loss, _, _ = module.training_losses(BATCH)
    loss.backward()
    groups = module.model.parameter_groups()
    return {name for name, params in groups.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)}


def test_every_mode_name_builds_its_object():
    assert {n: type(training_mode(CBMConfig(mode=n))) for n in MODES} == {
        "standard": Standard, "joint": Joint, "sequential": Sequential, "independent": Independent}
    assert make("sequential", label_epochs=1).training_mode.name == "sequential"
    with pytest.raises(ValueError, match="cbm.mode='joined' is not valid"):
        training_mode(CBMConfig(mode="joined"))


def test_standard_and_joint_train_what_they_read():
    std = make("standard")
    assert trained_groups(std) == {"backbone", "label"}
    assert set(std.training_losses(BATCH)[1]) == {"task"}
    joint = make("joint", concept_loss_weight=2.0)
    assert trained_groups(joint) == {"backbone", "concept", "label"}
    loss, parts, _ = joint.training_losses(BATCH)
    torch.testing.assert_close(loss, parts["task"] + 2.0 * parts["concept"])


def test_sequential_switches_from_concepts_to_label_after_max_epochs_minus_label_epochs():
    module = make("sequential", max_epochs=3, label_epochs=1)
    mode = module.training_mode
    assert mode.concept_epochs(module) == 2
    for epoch, label_phase in ((0, False), (1, False), (2, True)):
        module._trainer.current_epoch = epoch
        assert module.in_label_phase() is label_phase
        assert mode.label_head_trained(module) is label_phase  # no best checkpoint with an untrained head
    module._trainer.current_epoch = 0
    assert trained_groups(module) == {"backbone", "concept"}  # concept phase: X->C on the concept loss
    assert set(module.training_losses(BATCH)[1]) == {"concept"}
    module._trainer.current_epoch = 2
    module.on_train_epoch_start()  # label phase: X->C frozen, in eval mode
    assert not any(p.requires_grad for p in module.model.backbone.parameters())
    assert not any(p.requires_grad for p in module.model.concept_heads.parameters())
    assert not module.model.backbone.training and not module.model.concept_heads.training
    assert trained_groups(module) == {"label"}
    assert set(module.training_losses(BATCH)[1]) == {"task"}
    # the learning rates follow the phases: X->C's groups decay to zero at the switch, C->Y's start there
    phases = mode.lr_phases(module, total_steps=30)
    assert phases["backbone"] == phases["concept_heads"] == [(0, 20)]
    assert phases["label_head"] == phases["residual"] == [(20, 30)]


def test_sequential_needs_both_phases():
    make("sequential", max_epochs=3, label_epochs=1).on_fit_start()
    for label_epochs, max_epochs in ((0, 3), (3, 3)):
        with pytest.raises(ValueError, match="needs 1 <= cbm.label_epochs < trainer.max_epochs"):
            make("sequential", max_epochs=max_epochs, label_epochs=label_epochs).on_fit_start()


def test_independent_fits_the_label_head_on_true_concepts_then_freezes_it():
    module = make("independent")
    before = module.model.label_head.weight.detach().clone()
    module.on_fit_start()
    head = module.model.label_head
    assert not torch.equal(head.weight, before) and not any(p.requires_grad for p in head.parameters())
    from sparsecbm.models.cbm import one_hot_concepts

    x = one_hot_concepts(torch.as_tensor(TRAIN.concepts), CS.cardinalities)
    y = torch.as_tensor(TRAIN.labels)
    params = [p.detach().clone().requires_grad_(True) for p in (head.weight, head.bias)]
    objective = torch.nn.functional.cross_entropy(x @ params[0].t() + params[1], y) + 0.5 / len(y) * sum(
        p.pow(2).sum() for p in params)  # L2-regularised logistic regression (C=1): at its minimum
    assert max(g.abs().max().item() for g in torch.autograd.grad(objective, params)) < 1e-3
    assert trained_groups(module) == {"backbone", "concept"}  # X->C alone, on the concept loss
    loss, parts, _ = module.training_losses(BATCH)
    assert set(parts) == {"concept"} and torch.equal(loss, parts["concept"])
    assert module.training_mode.lr_phases(module, 10) == {g: [(0, 10)] for g in
                                                          ("backbone", "concept_heads", "label_head", "residual")}
    module._trainer.datamodule = None
    with pytest.raises(ValueError, match="independent fits its label head on the training split"):
        module.on_fit_start()
