"""Concept interventions on hand-built models whose right answer is known analytically."""

from __future__ import annotations

import math

import pytest
import torch
from testkit.hand import CS, FOOD_LOGITS, hand_module, label_weights

from sparsecbm.interpret.curves import InterventionCurve, intervention_curve
from sparsecbm.interpret.intervention import (
    InterventionError,
    InterventionResult,
    ground_truth_edits,
    intervene,
    parse_set,
)
from sparsecbm.interpret.policies import budget_masks, get_policy
from sparsecbm.interpret.strategies import LOGIT_EPS, Bottleneck, edited_inputs, target_activation
from sparsecbm.session import InferenceSession


def hand_session(activation: str = "probs", mode: str = "joint") -> InferenceSession:
    """:func:`hand_module`'s model in an inference session (the tokenizer reads any text)."""
    module = hand_module(activation, mode)
    return InferenceSession.for_model(module.model, module.cbm)


def expected_label_probs(food_input: torch.Tensor, other_inputs: torch.Tensor) -> torch.Tensor:
    x = torch.cat([food_input, other_inputs])
    return (label_weights() @ x).softmax(-1)


def written(q: list[float], activation: str) -> torch.Tensor:
    """What the label head must read for food when food's distribution is set to ``q``."""
    q = torch.tensor(q)
    if activation == "probs":
        return q
    if activation == "hard":
        return torch.nn.functional.one_hot(q.argmax(), 3).float()
    logq = ((1 - LOGIT_EPS) * q + LOGIT_EPS / 3).log()
    return logq - logq.mean() + torch.tensor(FOOD_LOGITS).mean()


def other_activations(activation: str) -> torch.Tensor:
    lg = torch.tensor([0.0, 0.0, 1.0])
    one = {"logits": lg, "probs": lg.softmax(-1), "hard": torch.tensor([0.0, 0.0, 1.0])}[activation]
    return one.repeat(3)


@pytest.mark.parametrize("activation", ["logits", "probs", "hard"])
@pytest.mark.parametrize(
    "spec,q,strategy",
    [
        ({"food": "Positive"}, [0.0, 1.0, 0.0], "hard"),
        ({"food": [0.2, 0.1, 0.7]}, [0.2, 0.1, 0.7], "soft"),
        ({"food": {"Positive": 0.6, "Negative": 0.4}}, [0.4, 0.6, 0.0], "soft"),
        ("gt", [0.0, 0.0, 1.0], "ground_truth"),
    ],
)
def test_edit_changes_exactly_the_edited_concept(activation, spec, q, strategy):
    edits = ground_truth_edits({"food": 2}, CS) if spec == "gt" else parse_set(spec, CS)
    assert [(e.target, e.strategy) for e in edits] == [("food", strategy)]
    result = intervene(hand_session(activation), "any text at all", {e.target: e.probs for e in edits})
    before_food = written(torch.tensor(FOOD_LOGITS).softmax(-1).tolist(), "probs")
    if activation == "logits":
        before_in = torch.tensor(FOOD_LOGITS)
    elif activation == "hard":
        before_in = torch.tensor([1.0, 0.0, 0.0])
    else:
        before_in = before_food
    before = expected_label_probs(before_in, other_activations(activation))
    after = expected_label_probs(written(q, activation), other_activations(activation))
    torch.testing.assert_close(torch.tensor(list(result.before.label_probs.values())), before, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(list(result.after.label_probs.values())), after, atol=1e-5, rtol=0)
    assert result.before.label == "1" and result.after.label == CS.label.values[int(after.argmax())]
    assert result.after.concept_probs["food"] == pytest.approx(dict(zip(CS["food"].values, q)))
    for name in ("ambiance", "service", "noise"):  # untouched concepts stay as predicted
        assert result.after.concept_probs[name] == result.before.concept_probs[name]
    changed = result.changed()
    assert changed["concepts"] == (["food"] if result.after.concepts["food"] != "Negative" else [])


def test_logit_strategy_is_a_confident_recentred_logit_vector():
    predicted = torch.tensor([[3.0, -1.0, 1.0]])
    out = target_activation(torch.tensor([[0.0, 1.0, 0.0]]), predicted, "logits", eps=0.01)
    torch.testing.assert_close(out.softmax(-1), torch.tensor([[0.01 / 3, 0.99 + 0.01 / 3, 0.01 / 3]]))
    torch.testing.assert_close(out.mean(-1), predicted.mean(-1))
    assert out[0, 1] - out[0, 0] == pytest.approx(math.log((0.99 + 0.01 / 3) / (0.01 / 3)), rel=1e-5)


def test_edited_inputs_masks_per_example():
    logits = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]] * 2)]
    target = torch.tensor([[0.0, 0.0, 1.0]] * 2)
    out = edited_inputs(logits, "probs", [target, None], [torch.tensor([True, False]), None])
    assert out[0, :3].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(out[1], torch.cat([logits[0][1].softmax(-1), logits[1][1].softmax(-1)]))


def test_predict_only_and_result_round_trip(tmp_path):
    result = intervene(hand_session("probs"), ["a", "b"], None)
    assert len(result) == 2 and result[0].before == result[0].after and result[0].changed()["label"] is None
    result = intervene(hand_session("probs"), "good food", "{food: Positive, noise: unknown}")
    assert result.changed() == {"concepts": ["food"], "label": {"before": "1", "after": "5"}}
    path = result.save(tmp_path / "r.json")
    assert InterventionResult.load(path) == result
    from rich.console import Console

    Console(file=open(tmp_path / "t.txt", "w")).print(result.table())


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "spec,message",
    [
        ({"taste": "Positive"}, "unknown concept 'taste'; valid concepts: ['food', 'ambiance', 'service', 'noise']"),
        ({"food": "Great"}, "unknown value 'Great' for concept 'food'; valid values of 'food': ['Negative', 'Positive', 'unknown']"),
        ({"food": {"Great": 1.0}}, "unknown value(s) ['Great'] for concept 'food'"),
        ({"food": [0.5, 0.2]}, "a soft intervention needs 3 probabilities"),
        ({"food": [0.5, 0.2, 0.1]}, "probabilities must sum to 1"),
        ("{food: Positive", "is not valid YAML"),
        ("food=Positive", "must be a mapping concept -> value"),
        (["food"], "must be a mapping concept -> value"),
    ],
)
def test_bad_set_is_a_clear_error(spec, message):
    with pytest.raises(InterventionError) as e:
        parse_set(spec, CS)
    assert message in str(e.value)


def test_set_from_hydra_dictconfig():
    from omegaconf import OmegaConf

    edits = parse_set(OmegaConf.create({"food": "Positive", "noise": [0.5, 0.5, 0.0]}), CS)
    assert [(e.target, e.strategy, e.probs) for e in edits] == [
        ("food", "hard", [0.0, 1.0, 0.0]), ("noise", "soft", [0.5, 0.5, 0.0])]
    assert parse_set("", CS) == [] and parse_set(None, CS) == []


def test_standard_model_has_nothing_to_intervene_on():
    with pytest.raises(InterventionError, match="without concepts.*cbm=cem, joint, sequential, independent"):
        intervene(hand_session(mode="standard"), "text", {"food": "Positive"})


def test_unknown_policy():
    with pytest.raises(ValueError, match=r"unknown intervention policy 'best'; valid policies: \['random'"):
        get_policy("best")


# ---------------------------------------------------------------------------- policies
def bottleneck(concept_logits, weight=None, activation="probs") -> Bottleneck:
    head = torch.nn.Linear(3 * len(concept_logits), 5)
    with torch.no_grad():
        head.weight.copy_(weight if weight is not None else label_weights()[:, : 3 * len(concept_logits)])
        head.bias.zero_()
    return Bottleneck([torch.tensor(lg) for lg in concept_logits], head, activation)


def test_uncertainty_takes_highest_entropy_first():
    b = bottleneck([[[5.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]], [[9.0, 0.0, 0.0]]])
    assert get_policy("uncertainty").order(b).tolist() == [[1, 2, 0, 3]]


def test_oracle_takes_wrong_concepts_first():
    b = bottleneck([[[5.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]], [[0.0, 0.5, 0.0]], [[9.0, 0.0, 0.0]]])
    truth = torch.tensor([[0, 0, 0, 1]])  # wrong: concept 1 (confidently) , 2 (barely), 3
    order = get_policy("oracle").order(b, truth).tolist()[0]
    assert set(order[:3]) == {1, 2, 3} and order[3] == 0
    with pytest.raises(ValueError, match="needs the true concepts"):
        get_policy("oracle").order(b)


def test_influence_takes_the_concept_that_moves_the_label_most():
    w = torch.zeros(5, 12)
    w[0, 6], w[4, 7] = 1.0, 1.0  # service matters a little
    w[0, 9], w[4, 10] = 8.0, 8.0  # noise matters a lot; food and ambiance not at all
    logits = [[[0.0, 0.0, 0.0]]] * 4
    order = get_policy("influence").order(bottleneck(logits, w)).tolist()[0]
    assert order[:2] == [3, 2]


def test_random_policy_is_a_seeded_permutation():
    b = bottleneck([[[0.0, 0.0, 0.0]] * 50] * 4)
    a, a2, c = (get_policy("random", s).order(b) for s in (0, 0, 1))
    assert torch.equal(a, a2) and not torch.equal(a, c)
    assert (a.sort(-1).values == torch.arange(4)).all()
    assert budget_masks(a, 2).sum(-1).tolist() == [2] * 50 and budget_masks(a, 0).sum() == 0


def test_curve_on_a_constructed_case(tmp_path):
    # 3 examples, food predicted Negative for all; true food values differ, the label follows true food
    food = [[2.0, 0.0, 0.0]] * 3
    other = [[0.0, 0.0, 1.0]] * 3
    b = bottleneck([food, other, other, other], label_weights())
    truth = torch.tensor([[0, 2, 2, 2], [1, 2, 2, 2], [2, 2, 2, 2]])
    labels = torch.tensor([0, 4, 2])
    curve = intervention_curve(b, truth, labels, CS.names, seeds=[0, 1, 2])
    assert list(curve.curves) == ["random", "uncertainty", "influence", "oracle"]
    for pts in curve.curves.values():
        assert [p.k for p in pts] == [0, 1, 2, 3, 4]
        assert pts[0].acc == pytest.approx(1 / 3) and pts[-1].acc == pytest.approx(1.0)
    assert curve.curves["oracle"][1].acc == pytest.approx(1.0)  # the one wrong concept is fixed first
    assert curve.curves["influence"][1].acc == pytest.approx(1.0)  # food is the only influential concept
    assert curve.no_intervention.acc == pytest.approx(1 / 3) and curve.all_ground_truth.f1 == pytest.approx(1.0)
    curve.save(tmp_path / "c.json")
    assert InterventionCurve.load(tmp_path / "c.json") == curve
    assert curve.plot(tmp_path / "c.png").stat().st_size > 1000


# --------------------------------------------------------------------- training side
@pytest.mark.parametrize("activation", ["logits", "probs", "hard"])
def test_train_intervention_prob_one_feeds_only_true_concepts(activation):
    module = hand_module(activation)
    module.train_intervention_prob = 1.0
    module.train()
    seen = []
    module.model.label_head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    truth = torch.tensor([[1, 0, 2, 1], [2, 2, 0, 0]])
    batch = {"input_ids": torch.tensor([[101, 2000, 102], [101, 3000, 102]]), "attention_mask": torch.ones(2, 3, dtype=torch.long),
             "label": torch.tensor([4, 2]), "concepts": truth}
    loss, parts, _ = module.training_losses(batch)
    assert torch.isfinite(loss) and set(parts) == {"task", "concept"}
    read = seen[-1].view(2, 4, 3)
    onehot = torch.nn.functional.one_hot(truth, 3).float()
    if activation == "logits":
        mixed = (1 - LOGIT_EPS) * onehot + LOGIT_EPS / 3
        torch.testing.assert_close(read.softmax(-1), mixed)
    else:
        assert torch.equal(read, onehot)

    module.train_intervention_prob = 0.0  # off: the label head reads the predicted activations
    seen.clear()
    module.training_losses(batch)
    predicted = torch.tensor([[0, 2, 2, 2]] * 2)  # food Negative, the rest unknown
    assert torch.equal(seen[-1].view(2, 4, 3).argmax(-1), predicted)


def test_train_intervention_in_sequential_label_phase():
    module = hand_module("probs", mode="sequential")
    module.train_intervention_prob = 1.0
    module.in_label_phase = lambda: True
    seen = []
    module.model.label_head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    truth = torch.tensor([[1, 0, 2, 1]])
    batch = {"input_ids": torch.tensor([[101, 2000, 102]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
             "label": torch.tensor([4]), "concepts": truth}
    _, parts, _ = module.training_losses(batch)
    assert set(parts) == {"task"} and torch.equal(seen[-1].view(1, 4, 3), torch.nn.functional.one_hot(truth, 3).float())
