"""Issue-8 options: class-balanced concept loss, residual drop, value-only leakage, the bottleneck table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from testkit.hand import loader, module, train_ceiling
from testkit.runs import fake_run

from sparsecbm.interpret.leakage import split_report
from sparsecbm.lit.module import balanced_class_weights
from sparsecbm.tables import bottleneck_table, load_runs


def test_balanced_class_weights_known_values():
    # concept 0: values 0,0,0,1 (value 2 absent); concept 1: 0,1,2,2
    w = balanced_class_weights([[0, 0], [0, 1], [0, 2], [1, 2]], [3, 3])
    torch.testing.assert_close(w[0], torch.tensor([4 / 9, 4 / 3, 0.0]))
    torch.testing.assert_close(w[1], torch.tensor([4 / 3, 4 / 3, 2 / 3]))
    sqrt = balanced_class_weights([[0, 0], [0, 1], [0, 2], [1, 2]], [3, 3], power=0.5)  # label_class_weight=sqrt
    torch.testing.assert_close(sqrt[0], torch.tensor([(4 / 9) ** 0.5, (4 / 3) ** 0.5, 0.0]))


def test_balanced_concept_loss_is_the_weighted_cross_entropy():
    m = module("probs", concept_class_weight="balanced")
    train = SimpleNamespace(concepts=[[0, 1, 2, 2], [0, 2, 2, 2], [1, 2, 2, 0], [2, 2, 0, 2]])
    m._trainer = SimpleNamespace(datamodule=SimpleNamespace(raw={"train": train}), max_epochs=1)
    m.on_fit_start()
    torch.manual_seed(0)
    logits = [torch.randn(6, 3) for _ in range(4)]
    truth = torch.randint(0, 3, (6, 4))
    expected = torch.stack([F.cross_entropy(lg, truth[:, k], weight=m.concept_weights[k])
                            for k, lg in enumerate(logits)]).mean()
    torch.testing.assert_close(m.concept_loss(logits, truth), expected)
    plain = module("probs")
    assert plain.concept_weights == [None] * 4
    assert not torch.allclose(plain.concept_loss(logits, truth), expected)
    m._trainer = SimpleNamespace(datamodule=None, max_epochs=1)
    with pytest.raises(ValueError, match="concept_class_weight=balanced needs the training split"):
        m.on_fit_start()
    with pytest.raises(ValueError, match=r"concept_class_weight='inverse' is not valid; expected one of \['none', "
                                         r"'balanced', 'sqrt'\]"):
        module("probs", concept_class_weight="inverse")


def test_residual_drop_rate_and_eval():
    m = module("probs", residual_dim=3, residual_drop_prob=0.3).train()
    torch.manual_seed(0)
    r = torch.randn(4000, 3)
    dropped = m.dropped_residual(r)
    held = (dropped == r.mean(0, keepdim=True)).all(-1)
    kept = (dropped == r).all(-1)
    assert torch.all(held | kept) and abs(held.float().mean().item() - 0.3) < 0.03
    assert m.eval().dropped_residual(r) is r  # never at inference
    assert module("probs", residual_dim=3).train().dropped_residual(r) is r
    with pytest.raises(ValueError, match=r"residual_drop_prob=1.5 is not valid; expected a value in \[0, 1\]"):
        module("probs", residual_dim=3, residual_drop_prob=1.5)


def test_value_only_leakage_for_concept_embeddings():
    m = module("embedding").eval()
    b = split_report(m.model, loader(8), train_ceiling())["bottleneck"]
    assert {"hard_value_only", "all_ground_truth_value_only", "leakage_value_only"} <= set(b)
    assert b["leakage_value_only"]["acc"] == pytest.approx(b["soft"]["acc"] - b["hard_value_only"]["acc"])
    # context-free embeddings (the embedders ignore the review): the prototypes are the embeddings themselves
    with torch.no_grad():
        for e in m.model.concept_heads.embedders:
            e.weight.zero_()
    b = split_report(m.model, loader(8), train_ceiling())["bottleneck"]
    assert b["hard_value_only"] == b["hard"] and b["all_ground_truth_value_only"] == b["all_ground_truth"]
    # models without embeddings have no value-only figures
    assert "hard_value_only" not in split_report(module("probs").eval().model, loader(8), train_ceiling())["bottleneck"]


def test_bottleneck_table(tmp_path):
    leak = {"hard": {"acc": 0.6}, "all_ground_truth": {"acc": 0.7}, "ceiling": {"acc": 0.511, "f1": 0.448},
            "leakage": {"acc": 0.05}, "hard_value_only": {"acc": 0.5}, "leakage_value_only": {"acc": 0.15},
            "above_ceiling": {"acc": 0.139, "f1": 0.102}}
    fake_run(tmp_path / "a", "joint", 1, 0.65, activation="embedding", bottleneck=leak,
             cbm={"embedding_dim": 16, "concept_class_weight": "balanced"})
    fake_run(tmp_path / "b", "joint", 1, 0.45, activation="hard", bottleneck={**leak, "hard_value_only": None},
             cbm={"residual_dim": 4, "residual_drop_prob": 0.5})
    for name, folder in (("cebab", "a"), ("imdb_c", "b")):
        path = tmp_path / folder / "results.json"
        r = __import__("json").loads(path.read_text())
        r["data"] = {"name": name}
        path.write_text(__import__("json").dumps(r))
    fake_run(tmp_path / "c", "joint", 1, 0.6, {"scorer": "magnitude", "granularity": "unstructured", "target_sparsity": 0.7},
             activation="hard")
    md = bottleneck_table(load_runs([str(tmp_path)]))
    assert "| SparseCBM magnitude/unstructured @ 0.7 (hard) | 1 |" in md
    assert ("| cebab | joint CBM (embedding) [embedding dim 16, balanced concept loss] | 1 | 5 | 65.0 | 55.0 | 80.0 | "
            "70.0 | 51.1 / 44.8 | 50.0 (value-only) | 70.0 | 5.0 | 15.0 (value-only) | 10.2 | - |") in md
    assert ("| imdb_c | joint CBM (hard) [residual 4, drop 0.5] | 1 | 5 | 45.0 | 35.0 | 80.0 | 70.0 | 51.1 / 44.8 | "
            "60.0 | 70.0 | 25.0 | 5.0 | 10.2 | - |") in md


def test_value_prototypes_average_the_examples_predicted_to_have_the_value():
    from sparsecbm.interpret.leakage import value_prototypes

    emb = torch.arange(4 * 3 * 2, dtype=torch.float).view(4, 3, 2)  # [N=4, C=3, m=2]
    predicted = torch.tensor([0, 0, 1, 0])
    protos = value_prototypes(emb, predicted)
    assert protos.shape == emb.shape and torch.equal(protos[0], protos[3])
    torch.testing.assert_close(protos[0, 0], emb[[0, 1, 3], 0].mean(0))
    torch.testing.assert_close(protos[0, 1], emb[2, 1])
    torch.testing.assert_close(protos[0, 2], emb[:, 2].mean(0))  # never predicted: all examples


def test_strict_cbm_label_is_a_function_of_the_predicted_values(cfg_factory):
    """cbm=strict: the label head is fitted on the true one-hot values and reads only the predicted
    one-hot values, so soft and hard predictions coincide (zero leakage) and the task loss never
    reaches the concept predictor."""
    from testkit import TINY_BERT

    from sparsecbm.models.token_attention import ConceptAttentionPooler
    from sparsecbm.train import train

    results, objs = train(cfg_factory(["experiment=smoke", "cbm=strict", *TINY_BERT]))
    module = objs["module"]
    assert module.mode == "independent" and module.model.activation == "hard"
    assert isinstance(module.model.token_pooler, ConceptAttentionPooler)
    b = results["test"]["bottleneck"]
    assert b["soft"] == b["hard"] and b["leakage"] == {"acc": 0.0, "f1": 0.0}
    batch = next(iter(objs["datamodule"].loader("train")))
    module.train()
    loss, parts, _ = module.training_losses(batch)
    assert set(parts) == {"concept"} and torch.equal(loss, parts["concept"])  # no task loss reaches X->C


def test_independent_label_head_is_fitted_on_true_concepts_and_frozen(cfg_factory):
    """cbm.mode=independent: C->Y is fitted to convergence on the one-hot true training concepts at fit
    start (it matches scikit-learn's logistic regression on the same data) and X->C trains alone."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from testkit import TINY_BERT

    from sparsecbm.models.cbm import one_hot_concepts
    from sparsecbm.train import build

    dm, module, trainer = build(cfg_factory(["experiment=smoke", "cbm=strict", "trainer.max_epochs=2", *TINY_BERT]))
    trainer.fit(module, datamodule=dm)
    head = module.model.label_head
    assert not any(p.requires_grad for p in head.parameters())
    x = one_hot_concepts(torch.as_tensor(dm.raw["train"].concepts), module.concept_set.cardinalities)
    y = np.asarray(dm.raw["train"].labels)
    lr = LogisticRegression(max_iter=5000).fit(x.numpy(), y)
    with torch.no_grad():
        ours = head(x).softmax(-1).numpy()
    theirs = np.zeros_like(ours)
    theirs[:, lr.classes_] = lr.predict_proba(x.numpy())
    assert np.abs(ours - theirs).max() < 0.02
    fitted = {k: v.clone() for k, v in head.state_dict().items()}
    module.fit_independent_label_head()  # deterministic: the same fit again
    assert all(torch.equal(fitted[k], v) for k, v in head.state_dict().items())


def test_logit_adjusted_task_loss_is_the_cross_entropy_of_shifted_logits():
    """cbm.label_logit_adjust=tau: training reads CE(logits + tau * log prior); a head without information
    about the input then learns logits that no longer favour the frequent class (its bias converges to
    (1 - tau) * log prior up to a constant), while evaluation keeps the head's own logits."""
    from sparsecbm.lit.losses import log_prior, task_loss

    m = module("probs", label_logit_adjust=1.0)
    labels = [0] * 6 + [1] * 3 + [2] * 1 + [3] * 1 + [4] * 1  # 12 examples, class 0 holds half
    m._trainer = SimpleNamespace(datamodule=SimpleNamespace(raw={"train": SimpleNamespace(
        labels=labels, concepts=[[0, 0, 0, 0]] * 12)}), max_epochs=1)
    m.on_fit_start()
    freq = torch.tensor([6, 3, 1, 1, 1]) / 12
    torch.testing.assert_close(m.label_offset, freq.log())
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    torch.testing.assert_close(m.task_loss(logits, y), F.cross_entropy(logits + freq.log(), y))
    assert module("probs").label_offset is None  # off by default
    # a bias-only "model" fitted to the labels: plain CE learns the log prior, the adjusted loss a flat one
    y = torch.tensor(labels)
    for tau, expect in ((0.0, freq.log()), (1.0, torch.zeros(5))):
        b = torch.zeros(5, requires_grad=True)
        opt = torch.optim.LBFGS([b], max_iter=200, line_search_fn="strong_wolfe")

        def closure(tau=tau, b=b, opt=opt):
            opt.zero_grad()
            loss = task_loss(b.expand(12, 5), y, None, log_prior(labels, 5, tau) if tau else None)
            loss.backward()
            return loss

        opt.step(closure)
        torch.testing.assert_close(b.detach() - b.detach().mean(), expect - expect.mean(), atol=1e-3, rtol=0)
    with pytest.raises(Exception, match=r"label_logit_adjust=-1.0 is not valid; expected a value >= 0"):
        module("probs", label_logit_adjust=-1)
