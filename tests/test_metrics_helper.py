"""sparsecbm.metrics: the one accuracy / macro-F1 helper equals scikit-learn, with absent classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from sparsecbm.metrics import accuracy, classification_scores, macro_f1


def test_equals_sklearn_on_a_random_case_with_absent_classes():
    rng = np.random.default_rng(0)
    n = 6
    labels = rng.choice([0, 1, 2, 4], size=200)  # classes 3 and 5 never true
    preds = np.where(rng.random(200) < 0.6, labels, rng.choice([0, 1, 2, 3, 4], size=200))  # 3 predicted, 5 never
    assert 3 in preds and 5 not in preds and 5 not in labels
    s = classification_scores(torch.as_tensor(preds), torch.as_tensor(labels), n)
    assert s["acc"] == pytest.approx(accuracy_score(labels, preds), abs=1e-6)
    # a class in neither labels nor predictions (5) is left out of the mean, as sklearn does without labels=;
    # a class predicted but never true (3) counts with F1 0
    assert s["f1"] == pytest.approx(f1_score(labels, preds, average="macro"), abs=1e-6)
    assert s["f1"] == pytest.approx(f1_score(labels, preds, average="macro", labels=[0, 1, 2, 3, 4]), abs=1e-6)
    assert s["f1"] > f1_score(labels, preds, average="macro", labels=list(range(n)), zero_division=0) + 0.01
    # lists, numpy arrays and tensors read the same; the pieces equal the whole
    assert macro_f1(list(preds), labels, n) == s["f1"] and accuracy(preds, torch.as_tensor(labels), n) == s["acc"]


def test_training_metrics_and_the_helper_agree():
    """What CBMMetrics logs is the helper's number."""
    from torchmetrics.classification import MulticlassF1Score

    g = torch.Generator().manual_seed(3)
    y, p = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 3, (50,), generator=g)
    metric = MulticlassF1Score(5, average="macro")
    metric.update(p, y)
    assert float(metric.compute()) == macro_f1(p, y, 5)
