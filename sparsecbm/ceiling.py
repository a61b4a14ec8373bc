"""The concept set's ceiling: the best a label head reading only the TRUE concept values does on a split.

A strict concept bottleneck predicts the label from the concepts alone, so it cannot beat a label head
fitted on the true concepts of the training split: :class:`ConceptCeiling` (a logistic regression on the
one-hot values, and the majority label of each combination of values). A record-level helper (it runs no
model): the run's ``reference`` block and the leakage report (:mod:`sparsecbm.interpret.leakage`) read it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch


def metrics(
    preds: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, n_labels: int
) -> dict[str, float]:
    """``{"acc", "f1"}`` (micro accuracy, macro-F1) of :func:`~sparsecbm.metrics.classification_scores`."""
    from sparsecbm.metrics import classification_scores

    scores = classification_scores(preds, labels, n_labels)
    return {"acc": scores["acc"], "f1": scores["f1"]}


class ConceptCeiling:
    """Label heads fitted on the true concepts of the training split.

    Args:
        cardinalities: Values per concept.
        n_labels: Number of labels.

    Example:
        >>> ceiling = ConceptCeiling.fit(train_concepts, train_labels, [3, 3, 3, 3], 5)
        >>> ceiling.evaluate(test_concepts, test_labels)["logreg"]["acc"]
    """

    def __init__(self, cardinalities: list[int], n_labels: int):
        self.cardinalities, self.n_labels = list(cardinalities), int(n_labels)
        self.logreg = None
        self.constant: int | None = None  # the one training label, when there is only one
        self.table: dict[tuple[int, ...], int] = {}

    def one_hot(self, concepts) -> np.ndarray:
        c = np.asarray(concepts)
        return np.concatenate([np.eye(k)[c[:, i]] for i, k in enumerate(self.cardinalities)], axis=1)

    @classmethod
    def fit(cls, concepts, labels, cardinalities: list[int], n_labels: int) -> ConceptCeiling:
        """Fit both heads on ``[N, K]`` true concept values and ``[N]`` labels."""
        from sklearn.linear_model import LogisticRegression

        self = cls(cardinalities, n_labels)
        concepts, labels = np.asarray(concepts), np.asarray(labels)
        if len(np.unique(labels)) < 2:
            self.constant = int(labels[0])
        else:
            self.logreg = LogisticRegression(max_iter=2000).fit(self.one_hot(concepts), labels)
        groups: dict[tuple[int, ...], Counter] = {}
        for row, y in zip(map(tuple, concepts.tolist()), labels.tolist()):
            groups.setdefault(row, Counter())[int(y)] += 1
        # majority label per combination; ties go to the smallest label
        self.table = {row: min(c, key=lambda y, c=c: (-c[y], y)) for row, c in groups.items()}
        return self

    @classmethod
    def from_datamodule(cls, datamodule) -> ConceptCeiling:
        """Fitted on the datamodule's raw training split."""
        train, cs = datamodule.raw["train"], datamodule.concept_set
        return cls.fit(train.concepts, train.labels, cs.cardinalities, cs.label.num_classes)

    def predict(self, concepts, kind: str = "logreg") -> np.ndarray:
        """Labels for ``[N, K]`` concept values; ``kind`` is ``logreg`` or ``lookup``."""
        concepts = np.asarray(concepts)
        if self.constant is not None:
            base = np.full(len(concepts), self.constant)
        else:
            base = self.logreg.predict(self.one_hot(concepts))
        if kind == "logreg":
            return base
        if kind == "lookup":
            return np.array([self.table.get(row, b) for row, b in zip(map(tuple, concepts.tolist()), base)])
        raise ValueError(f"unknown ceiling head '{kind}'; expected logreg or lookup")

    def evaluate(self, concepts, labels) -> dict[str, dict[str, float]]:
        """``{"logreg": {acc, f1}, "lookup": {acc, f1}}`` on the given concept values."""
        return {
            kind: metrics(self.predict(concepts, kind), labels, self.n_labels)
            for kind in ("logreg", "lookup")
        }
