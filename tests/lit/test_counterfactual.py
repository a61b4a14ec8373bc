"""Counterfactual training terms (sparsecbm/lit/counterfactual.py): off at weight 0, approximate partners from
the training split, the loss's gradient direction on a toy case, the teacher mix, and the options' checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from sparsecbm.data.datamodule import Collator, TokenizedSplit
from sparsecbm.errors import ConfigError
from sparsecbm.lit.counterfactual import (
    CounterfactualTerms,
    TrainingCounterfactuals,
    intervened_logits,
    soft_cross_entropy,
)
from sparsecbm.models.cbm import ConceptOutputs
from sparsecbm.models.cbm_config import CBMConfig
from tests.lit.test_modes import BATCH, CS, TRAIN, make

IDS = [[101, 1000 + i, 102] for i in range(len(TRAIN.concepts))]
SPLIT = TokenizedSplit({"input_ids": IDS, "label": TRAIN.labels, "concepts": TRAIN.concepts,
                        "index": list(range(len(IDS)))})


def with_terms(**cbm):
    module = make("joint", **cbm)
    dm = SimpleNamespace(raw={"train": TRAIN}, splits={"train": SPLIT}, collator=lambda: Collator(0))
    module._trainer.datamodule, module._trainer.global_step = dm, 0
    module.run_config = {"seed": 3}
    module.on_fit_start()
    return module


def test_zero_weight_changes_nothing():
    module = with_terms()
    assert module.counterfactual_terms is None and module.counterfactual_penalties(BATCH, None) == {}
    state = torch.get_rng_state()
    _, parts, _ = module.training_losses(BATCH)
    assert set(parts) == {"concept", "task"}
    torch.set_rng_state(state)
    again = with_terms(counterfactual_weight=0.0)
    assert again.counterfactual_terms is None


def test_the_term_keeps_the_runs_other_random_draws():
    """Its draws come from its own generator and the partner's dropout from a forked RNG."""
    module = with_terms(counterfactual_weight=1.0)
    batch = {**BATCH, "concepts": torch.tensor([[0, 0], [1, 0], [1, 1], [0, 2], [1, 2], [2, 1]])}
    out = module.model(batch["input_ids"], batch["attention_mask"])
    state = torch.get_rng_state()
    parts = module.counterfactual_penalties(batch, out.outputs)
    assert torch.equal(torch.get_rng_state(), state)
    assert set(parts) == {"counterfactual"} and parts["counterfactual"].item() > 0
    parts["counterfactual"].backward()  # it trains the label head (and what it reads)
    assert module.model.label_head.weight.grad.abs().sum() > 0


def test_partners_come_from_the_training_split_with_one_concept_changed():
    partners = TrainingCounterfactuals(TRAIN.concepts, [3, 3])
    values = torch.tensor(TRAIN.concepts)
    rows, concept, target, who = partners.sample(values, torch.Generator().manual_seed(0))
    assert len(rows) > 0
    for r, c, t, j in zip(rows.tolist(), concept.tolist(), target.tolist(), who.tolist()):
        expected = list(TRAIN.concepts[r])
        assert expected[c] != t
        expected[c] = t
        assert TRAIN.concepts[j] == expected  # the partner holds x's values with C set to b
    again = partners.sample(values, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(again, (rows, concept, target, who)))
    # an example with no training text one concept away gets no partner
    alone = TrainingCounterfactuals([[0, 0], [2, 2]], [3, 3])
    assert len(alone.sample(torch.tensor([[0, 0], [2, 2]]), torch.Generator().manual_seed(0))[0]) == 0


def test_gradient_moves_the_intervention_toward_the_counterfactual_output():
    """A toy label head reading probabilities: one step on KL(q || p(y | do(C=b))) raises p(q's class | do)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 2)
    model = SimpleNamespace(activation="probs", concepts=CS, label_from_inputs=lambda x, r=None: head(x))
    outputs = ConceptOutputs([torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])])
    rows, concept, target = torch.tensor([0]), torch.tensor([0]), torch.tensor([1])  # food := Positive
    q = torch.tensor([[0.0, 1.0]])
    before = intervened_logits(model, outputs, rows, concept, target).softmax(-1)[0, 1]
    loss = soft_cross_entropy(intervened_logits(model, outputs, rows, concept, target), q).mean()
    loss.backward()
    # the written input is food's one-hot at Positive (column 1): raising class 1's weight there lowers the loss
    assert head.weight.grad[1, 1] < 0 < head.weight.grad[0, 1]
    assert head.weight.grad[:, 0].abs().sum() == 0  # food's predicted value (Negative) is not what was read
    with torch.no_grad():
        for p in head.parameters():
            p -= 0.5 * p.grad
    after = intervened_logits(model, outputs, rows, concept, target).softmax(-1)[0, 1]
    assert after > before
    assert soft_cross_entropy(torch.tensor([[0.0, 5.0]]), torch.tensor([[0.3, 0.7]])).item() > 0
    assert soft_cross_entropy(torch.tensor([[0.3, 0.7]]).log(), torch.tensor([[0.3, 0.7]])).item() == pytest.approx(0)


def test_teacher_mix():
    terms = object.__new__(CounterfactualTerms)
    terms.teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    logits, labels, index = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([2]), torch.tensor([1])
    task = torch.nn.functional.cross_entropy(logits, labels)
    kl = soft_cross_entropy(logits, terms.teacher[[1]]).mean()
    terms.teacher_weight = 1.0
    assert terms.teacher_loss(logits, labels, index, task) == pytest.approx(kl.item())
    terms.teacher_weight = 0.25
    assert terms.teacher_loss(logits, labels, index, task) == pytest.approx(0.75 * task.item() + 0.25 * kl.item())
    terms.teacher = None
    assert terms.teacher_loss(logits, labels, index, task) is task


def test_options_are_checked():
    with pytest.raises(ConfigError, match=r"cbm.counterfactual_weight=-1.0 is not valid; expected a value >= 0"):
        CBMConfig(counterfactual_weight=-1)
    with pytest.raises(ConfigError, match="cbm.mode=independent does not do jointly"):
        CBMConfig(mode="independent", activation="probs", counterfactual_weight=1)
    with pytest.raises(ConfigError, match=r"cbm.teacher_weight=2.0 is not valid; expected a value in \[0, 1\]"):
        CBMConfig(teacher_weight=2)
    assert CBMConfig().to_dict()["counterfactual_weight"] == 0.0 and CBMConfig().teacher is None
