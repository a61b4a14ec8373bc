"""The project's one definition of classification scores: accuracy and macro-F1 of class predictions.

A low-level module (torch + torchmetrics only), so that training (:mod:`sparsecbm.lit.metrics`), the
bottleneck and ceiling reports, the sparsity reports, the explorer and label refits all score the same way.

``acc`` is micro accuracy; ``f1`` is torchmetrics' multiclass macro-F1 over the classes ``0..n-1``,
where a class absent from both the labels and the predictions is left out of the mean (as scikit-learn's
``f1_score(average="macro")`` does without ``labels=``); a class that is predicted but never true counts
with F1 0. ``f1_papers`` is the SparseCBM / C3M papers' one-vs-rest figure (:func:`papers_macro_f1`).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_stat_scores,
)


def _as_classes(x: Any) -> torch.Tensor:
    """``[N]`` class indices as a long tensor (from a tensor, a numpy array or a list)."""
    if not isinstance(x, torch.Tensor):
        import numpy as np

        x = torch.as_tensor(np.asarray(x))
    return x.long().flatten()


def accuracy(preds: Any, labels: Any, n_classes: int) -> float:
    """Micro accuracy of ``[N]`` class predictions against ``[N]`` labels."""
    return float(multiclass_accuracy(_as_classes(preds), _as_classes(labels), n_classes, average="micro"))


def macro_f1(preds: Any, labels: Any, n_classes: int) -> float:
    """Macro-F1 over the classes ``0..n_classes-1`` that occur in the labels or the predictions.

    Example:
        >>> round(macro_f1([0, 1, 1], [0, 1, 0], 3), 4)  # class 2 occurs nowhere: the mean over 0 and 1
        0.6667
    """
    return float(multiclass_f1_score(_as_classes(preds), _as_classes(labels), n_classes, average="macro"))


def papers_macro_f1(stats: torch.Tensor) -> torch.Tensor:
    """The "macro F1" the SparseCBM and C3M code report, from per-class ``[C, 5]`` (tp, fp, tn, fn, support).

    For every class ``c`` it scores the one-vs-rest problem *c vs. the rest* with a binary macro-F1, i.e. the
    mean of the F1 of ``c`` and the F1 of "not c" (a side with no example and no prediction is left out, as
    scikit-learn does), then averages over the classes. The "not c" side is usually large and easy, so this
    figure is higher than the standard macro-F1 (:func:`classification_scores`' ``f1``); report it only
    beside the papers' tables, labelled as their definition.
    """
    tp, fp, tn, fn = (stats[:, i].double() for i in range(4))
    pos_den, neg_den = 2 * tp + fp + fn, 2 * tn + fn + fp
    pos = torch.where(pos_den > 0, 2 * tp / pos_den.clamp(min=1), torch.zeros_like(tp))
    neg = torch.where(neg_den > 0, 2 * tn / neg_den.clamp(min=1), torch.zeros_like(tn))
    sides = (pos_den > 0).double() + (neg_den > 0).double()
    per_class = (pos + neg) / sides.clamp(min=1)
    return per_class.mean().float()


def classification_scores(preds: Any, labels: Any, n_classes: int) -> dict[str, float]:
    """``{"acc", "f1", "f1_papers"}`` of class predictions ``[N]`` against ``[N]`` labels (see the module doc).

    Training's logged metrics, ``results.json``, the ceiling and leakage blocks, intervention curves,
    label refits, the explorer and the tables all use these.

    Example:
        >>> classification_scores(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)["acc"]
        0.6666666865348816
    """
    preds, labels = _as_classes(preds), _as_classes(labels)
    stats = multiclass_stat_scores(preds, labels, n_classes, average=None)
    return {
        "acc": accuracy(preds, labels, n_classes),
        "f1": macro_f1(preds, labels, n_classes),
        "f1_papers": float(papers_macro_f1(stats)),
    }
