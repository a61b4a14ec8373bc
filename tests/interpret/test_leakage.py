"""Ceiling and leakage report on constructed data and hand-built models whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testkit.hand import hand_module, loader, train_ceiling

from sparsecbm.ceiling import ConceptCeiling
from sparsecbm.interpret.leakage import split_report
from sparsecbm.results import reference_baselines


def test_ceiling_on_xor_concepts():
    # label = c0 XOR c1: a function of the true concepts that no additive (one-hot logistic) head represents
    combos = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5)
    labels = combos[:, 0] ^ combos[:, 1]
    ceiling = ConceptCeiling.fit(combos, labels, [2, 2], 2)
    scores = ceiling.evaluate(combos, labels)
    assert scores["lookup"] == {"acc": 1.0, "f1": 1.0}
    assert scores["logreg"]["acc"] <= 0.75
    ref = reference_baselines(combos, labels, combos, labels, [2, 2], 2)
    assert ref["true_concept_lookup"]["test_acc"] == 1.0 and ref["true_concept_logreg"]["test_acc"] <= 0.75


def test_ceiling_with_label_noise_is_the_majority_fraction():
    # value 0 -> labels 0,0,0,1; value 1 -> 1,1,1,0: no head on this concept beats 3/4
    concepts = np.array([[0]] * 4 + [[1]] * 4)
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    scores = ConceptCeiling.fit(concepts, labels, [2], 2).evaluate(concepts, labels)
    assert scores["lookup"]["acc"] == pytest.approx(0.75) and scores["logreg"]["acc"] == pytest.approx(0.75)


def test_unseen_combination_falls_back_to_logreg_and_single_label_train():
    concepts = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    labels = np.array([0, 0, 1, 1])
    ceiling = ConceptCeiling.fit(concepts, labels, [2, 2], 2)
    unseen = np.array([[0, 1], [1, 0]])
    assert ceiling.predict(unseen, "lookup").tolist() == ceiling.predict(unseen, "logreg").tolist()
    constant = ConceptCeiling.fit(concepts, np.zeros(4, dtype=int), [2, 2], 3)
    assert constant.predict(unseen, "lookup").tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown ceiling head"):
        ceiling.predict(unseen, "forest")


def leaky_module():
    """food logits [1.0, 0.9, -5]: predicted Negative, but almost as likely Positive.

    Label "1" reads 10 x p(food=Negative), label "5" reads 10 x p(food=Positive) + 1 (bias): the soft
    probabilities predict "5", the hard value (Negative) predicts "1", the true value Positive predicts "5".
    """
    module = hand_module("probs")
    with torch.no_grad():
        module.model.concept_heads.heads[0].bias.copy_(torch.tensor([1.0, 0.9, -5.0]))
        w = torch.zeros(5, 12)
        w[0, 0], w[4, 1] = 10.0, 10.0
        module.model.label_head.weight.copy_(w)
        module.model.label_head.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))
    return module


def test_report_measures_leakage_on_a_hand_built_model():
    torch.manual_seed(0)
    report = split_report(leaky_module().model, loader(), train_ceiling())
    b = report["bottleneck"]
    assert b["soft"]["acc"] == 1.0 and b["hard"]["acc"] == 0.0 and b["all_ground_truth"]["acc"] == 1.0
    assert b["ceiling"]["acc"] == 1.0 and b["ceiling_lookup"]["acc"] == 1.0
    assert b["ceiling_on_predicted"]["acc"] == 0.0  # the predicted value (Negative) says "1"
    assert b["leakage"]["acc"] == 1.0 and b["above_ceiling"]["acc"] == 0.0
    assert (
        report["intervention"]["none"] == b["soft"]
        and report["intervention"]["all_ground_truth"]["acc"] == 1.0
    )
    assert "residual" not in b and b["n_examples"] == 4


def test_report_for_a_model_without_concepts():
    report = split_report(hand_module(mode="standard").model, loader(), train_ceiling())
    assert set(report) == {"bottleneck"}
    b = report["bottleneck"]
    assert set(b) == {"n_examples", "ceiling", "ceiling_lookup", "soft", "above_ceiling"}
    assert b["above_ceiling"]["acc"] == pytest.approx(b["soft"]["acc"] - 1.0)
