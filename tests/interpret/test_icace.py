"""ICaCE metrics on hand-computed vectors, and the explainers on hand-made cases whose answers are known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from scipy.spatial.distance import cosine as scipy_cosine

from sparsecbm.concepts import ConceptSet
from sparsecbm.data.counterfactuals import CounterfactualPair, CounterfactualPairs
from sparsecbm.interpret.causal_explainers import (
    PairContext,
    TrainingReference,
    approx,
    conexp,
    evaluate_icace,
    intervention,
)
from sparsecbm.interpret.causal_model import CausalModel
from sparsecbm.interpret.icace import ICaCEReport, icace_errors, score
from sparsecbm.interpret.strategies import Bottleneck

CS = ConceptSet.from_config([{"name": "food", "column": "food"}, {"name": "service", "column": "service"}],
                            {"column": "y", "values": ["neg", "pos"]}, ["Negative", "Positive", "unknown"])


def test_metrics_on_hand_computed_vectors():
    true = torch.tensor([[0.1, -0.1, 0.0], [0.3, -0.3, 0.0], [0.12344, -0.12344, 0.0]])
    est = torch.tensor([[0.1, 0.0, -0.1], [0.0, 0.0, 0.0], [0.1234, -0.1234, 0.0]])
    e = icace_errors(true, est)
    # row 0: ||(0, -0.1, 0.1)|| = sqrt(0.02); cos = 0.01 / 0.02 = 0.5; equal norms
    assert e["l2"][0] == pytest.approx(math.sqrt(0.02)) and e["cosine"][0] == pytest.approx(0.5)
    assert e["normdiff"][0] == pytest.approx(0.0, abs=1e-7)  # float32 inputs
    # row 1: a zero estimate: cosine distance 1 (CEBaB's convention), L2 = NormDiff = ||ICaCE||
    assert e["cosine"][1] == 1.0 and e["l2"][1] == pytest.approx(math.sqrt(0.18)) == e["normdiff"][1]
    # row 2: ICaCE is rounded to 4 decimals first (0.12344 -> 0.1234): the estimate is then exact
    assert e["l2"][2] == pytest.approx(0.0, abs=1e-7) and e["cosine"][2] == pytest.approx(0.0, abs=1e-7)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 5, generator=g).double(), torch.randn(5, 5, generator=g).double()
    a = torch.round(a * 1e4) / 1e4
    assert icace_errors(a, b)["cosine"].tolist() == pytest.approx([scipy_cosine(x, y) for x, y in zip(a, b)])


def test_averages_per_concept_direction_and_overall():
    true = torch.tensor([[0.2, -0.2], [0.4, -0.4], [0.0, 0.0]])
    est = torch.tensor([[0.2, -0.2], [0.0, 0.0], [0.1, -0.1]])
    s = score("x", ["food", "food", "service"], ["Negative->Positive", "unknown->Positive", "Positive->Negative"],
              true, est)
    assert s.overall["l2"] == pytest.approx((0 + math.sqrt(0.32) + math.sqrt(0.02)) / 3) and s.overall["n"] == 3
    assert s.per_concept["food"]["l2"] == pytest.approx(math.sqrt(0.32) / 2)
    assert s.per_direction["food"]["unknown->Positive"]["cosine"] == 1.0
    assert s.per_concept["service"]["cosine"] == 1.0  # a zero true effect: distance 1 too


def test_an_estimate_equal_to_the_true_effect_scores_zero():
    true = torch.tensor([[0.25, -0.5, 0.25], [-0.125, 0.0, 0.125]])  # exact in float32 and at 4 decimals
    s = score("exact", ["food", "noise"], ["a->b", "b->a"], true, true.clone())
    for metric in ("l2", "cosine", "normdiff"):
        assert s.overall[metric] == pytest.approx(0.0, abs=1e-12)


class LookupModel(CausalModel):
    """A concept model whose concept logits are looked up per text and whose label reads the hard values."""

    def __init__(self, logits: dict[str, list[list[float]]], head: torch.nn.Module):
        session = SimpleNamespace(concept_set=CS, mode="joint", ckpt_path=None,
                                  model=SimpleNamespace(has_concepts=True, activation="hard", sparse=False))
        super().__init__(session)
        self.logits, self.head = logits, head

    def bottleneck(self, texts):
        rows = [self.logits[t] for t in texts]
        per_concept = [torch.tensor([r[k] for r in rows]) for k in range(len(CS))]
        return Bottleneck(per_concept, lambda x: self.head(x), "hard")

    def label_probs(self, texts):
        return self.bottleneck(texts).label_probs()


def pair(base, cf, concept, before, after, base_values=None):
    return CounterfactualPair(base, cf, concept, before, after, f"t{base}", f"t{cf}", "0",
                              base_values=base_values or {})


def lookup_model() -> LookupModel:
    torch.manual_seed(0)
    head = torch.nn.Linear(6, 2)
    sure = lambda v: [8.0 if i == v else 0.0 for i in range(3)]  # noqa: E731
    # predicted values: t0 food=Positive service=Negative; t1 food=Negative (a food edit); t2 service=Positive
    logits = {"t0": [sure(1), sure(0)], "t1": [sure(0), sure(0)], "t2": [sure(1), sure(1)]}
    return LookupModel(logits, head)


def test_hard_intervention_equal_to_the_true_effect_scores_zero():
    """A label read from hard concept values, texts predicted at their true values: do(C = b) on x is x'."""
    model = lookup_model()
    pairs = CounterfactualPairs("test", "reconstructed", [pair(0, 1, "food", "Positive", "Negative"),
                                                          pair(1, 0, "food", "Negative", "Positive"),
                                                          pair(0, 2, "service", "Negative", "Positive")])
    train = TrainingReference(torch.tensor([[1, 0], [0, 0]]), torch.tensor([[0.3, 0.7], [0.6, 0.4]]),
                              [torch.eye(3)[[1, 0]], torch.eye(3)[[0, 0]]])
    report = evaluate_icace(model, pairs, train, ["hard", "conexp"])
    hard = report.get("hard").overall
    assert hard["l2"] == pytest.approx(0.0, abs=1e-4) and hard["normdiff"] == pytest.approx(0.0, abs=1e-4)
    assert hard["cosine"] == pytest.approx(0.0, abs=1e-6)
    assert report.get("conexp").overall["l2"] > 1e-3  # the baseline is not exact here
    ctx = PairContext(model, pairs, train)
    assert torch.allclose(intervention(ctx, "hard") - ctx.base_probs, ctx.true, atol=1e-6)


def hand_context(pairs, base_probs):
    # training texts: food Positive, Positive, Negative, unknown; service Negative, Positive, Negative, Negative
    train = TrainingReference(torch.tensor([[1, 0], [1, 1], [0, 0], [2, 0]]),
                              torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.5, 0.5]]))
    return SimpleNamespace(model=SimpleNamespace(concept_set=CS), pairs=pairs, train=train,
                           base_probs=torch.tensor(base_probs), seed=0)


def test_conexp_and_approx_on_a_hand_made_case():
    pairs = [pair(0, 1, "food", "Negative", "Positive", {"food": "Negative", "service": "Positive"}),
             pair(1, 0, "food", "Positive", "Negative", {"food": "Positive", "service": "Negative"}),
             pair(2, 3, "service", "Negative", "Positive", {"food": "Negative", "service": "Negative"}),
             pair(4, 5, "food", "Positive", "unknown", {"food": "Positive", "service": "Positive"})]
    ctx = hand_context(pairs, [[0.5, 0.5], [0.3, 0.7], [0.8, 0.2], [0.6, 0.4]])
    # CONEXP: E[N | food=Positive] = (0.3, 0.7), E[N | food=Negative] = (0.9, 0.1), E[N | service=Positive] =
    # (0.4, 0.6), E[N | service=Negative] = (0.2+0.9+0.5, 0.8+0.1+0.5) / 3, E[N | food=unknown] = (0.5, 0.5)
    neg_service = torch.tensor([1.6, 1.4]) / 3
    expected = torch.stack([torch.tensor([-0.6, 0.6]), torch.tensor([0.6, -0.6]),
                            torch.tensor([0.4, 0.6]) - neg_service, torch.tensor([0.2, -0.2])])
    assert torch.allclose(conexp(ctx), expected, atol=1e-6)
    # Approx: a training text with C = b minus N(x); pair 1's pool (food Negative) is training text 2 alone
    est, _ = approx(ctx)
    assert torch.allclose(est[1], torch.tensor([0.9, 0.1]) - torch.tensor([0.3, 0.7]))
    assert torch.allclose(est[3], torch.tensor([0.5, 0.5]) - torch.tensor([0.6, 0.4]))  # food unknown: text 3
    # matched: pair 0 needs food Positive AND service Positive: training text 1 only (unmatched: 0 or 1)
    matched, note = approx(ctx, matched=True)
    assert torch.allclose(matched[0], torch.tensor([0.4, 0.6]) - torch.tensor([0.5, 0.5]))
    # pair 3: food unknown with service Positive: none, so any food-unknown text (text 3) and the note says so
    assert torch.allclose(matched[3], est[3]) and note.startswith("2 of 4 pairs")  # pair 2 (service Positive, food Negative) too


def test_report_round_trip_table_and_plot(tmp_path):
    true = torch.tensor([[0.2, -0.2], [0.1, -0.1]])
    s = score("hard", ["food", "noise"], ["a->b", "a->b"], true, true * 0.5)
    report = ICaCEReport([s], "test", 2, {"food": {"a->b": 1}, "noise": {"a->b": 1}})
    back = ICaCEReport.load(report.save(tmp_path / "icace.json"))
    assert back.to_dict() == report.to_dict()
    assert "| hard | 0.106 / 0.000 |" in report.markdown()
    assert report.plot(tmp_path / "icace.png").stat().st_size > 1000
    assert set(report.summary()["explainers"]["hard"]) == {"l2", "cosine", "normdiff", "n", "per_concept"}


def test_explainer_names_are_checked_in_python_too():
    from sparsecbm.errors import ConfigError
    from sparsecbm.interpret.causal_explainers import resolve_explainers

    model = lookup_model()
    assert resolve_explainers("auto", model, None) == ["hard", "soft", "conexp", "approx", "approx_matched"]
    with pytest.raises(ConfigError, match=r"unknown explainer\(s\) \['magic'\]"):
        resolve_explainers(["hard", "magic"], model, None)
