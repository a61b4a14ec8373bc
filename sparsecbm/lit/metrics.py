"""torchmetrics collections for the task label and every concept, one set per stage."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassStatScores
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_stat_scores,
)

from sparsecbm.concepts import ConceptSet


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


def classification_scores(preds, labels, n_classes: int) -> dict[str, float]:
    """The project's one definition of the scores of class predictions ``[N]`` against ``[N]`` labels.

    ``acc``: micro accuracy; ``f1``: torchmetrics' macro-F1 (the mean F1 over the classes that occur in the
    labels or the predictions: a class absent from both does not count as 0); ``f1_papers``: see
    :func:`papers_macro_f1`. Training's logged metrics, ``results.json``, the ceiling and leakage blocks,
    intervention curves, label refits and the tables all use these.

    Example:
        >>> classification_scores(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 3)["acc"]
        0.6666666865348816
    """
    import numpy as np

    preds = torch.as_tensor(np.asarray(preds)).long().flatten()
    labels = torch.as_tensor(np.asarray(labels)).long().flatten()
    stats = multiclass_stat_scores(preds, labels, n_classes, average=None)
    return {
        "acc": float(multiclass_accuracy(preds, labels, n_classes, average="micro")),
        "f1": float(multiclass_f1_score(preds, labels, n_classes, average="macro")),
        "f1_papers": float(papers_macro_f1(stats)),
    }


class CBMMetrics(nn.Module):
    """Task accuracy / macro-F1, and concept accuracy / macro-F1 overall and per concept.

    Overall concept accuracy pools every (example, concept) prediction; overall concept
    macro-F1 is the mean of the per-concept macro-F1 scores. ``f1_papers`` (task and concepts) is the
    SparseCBM / C3M papers' definition (:func:`papers_macro_f1`); for concepts it pools every
    (example, concept) prediction as their code does when all concepts have the same values, else it
    is the mean over concepts. Graded (ordered) concepts add ``mae``: the
    mean absolute level error over the examples whose true and predicted values are both levels.
    """

    def __init__(self, concepts: ConceptSet, with_concepts: bool = True):
        super().__init__()
        n = concepts.label.num_classes
        self.names = concepts.names if with_concepts else []
        self.label_acc = MulticlassAccuracy(n, average="micro")
        self.label_f1 = MulticlassF1Score(n, average="macro")
        self.label_stats = MulticlassStatScores(n, average=None)
        self.concept_acc = nn.ModuleDict(
            {c.name: MulticlassAccuracy(c.cardinality, average="micro") for c in concepts} if with_concepts else {}
        )
        self.concept_f1 = nn.ModuleDict(
            {c.name: MulticlassF1Score(c.cardinality, average="macro") for c in concepts} if with_concepts else {}
        )
        self.concept_stats = nn.ModuleDict(
            {c.name: MulticlassStatScores(c.cardinality, average=None) for c in concepts} if with_concepts else {}
        )
        graded = [c for c in concepts if c.ordered] if with_concepts else []
        self.concept_mae = nn.ModuleDict({c.name: MeanMetric() for c in graded})
        for c in graded:  # value index -> level rank (-1 outside the order)
            ranks = [c.rank(i) for i in range(c.cardinality)]
            self.register_buffer(f"rank_{c.name}", torch.tensor([-1 if r is None else r for r in ranks]),
                                 persistent=False)

    def update(self, label_logits: torch.Tensor, labels: torch.Tensor, concept_logits=None, concepts=None) -> None:
        preds = label_logits.argmax(-1)
        self.label_acc.update(preds, labels)
        self.label_f1.update(preds, labels)
        self.label_stats.update(preds, labels)
        if self.names and concept_logits:
            for k, name in enumerate(self.names):
                p = concept_logits[k].argmax(-1)
                self.concept_acc[name].update(p, concepts[:, k])
                self.concept_f1[name].update(p, concepts[:, k])
                self.concept_stats[name].update(p, concepts[:, k])
                if name in self.concept_mae:
                    ranks = getattr(self, f"rank_{name}")
                    rp, rt = ranks[p], ranks[concepts[:, k]]
                    both = (rp >= 0) & (rt >= 0)
                    if bool(both.any()):
                        self.concept_mae[name].update((rp - rt)[both].abs().float())

    def compute(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/label/acc": self.label_acc.compute(), f"{prefix}/label/f1": self.label_f1.compute(),
               f"{prefix}/label/f1_papers": papers_macro_f1(self.label_stats.compute())}
        if self.names:
            stats = [self.concept_stats[name].compute() for name in self.names]
            pooled = len({s.shape for s in stats}) == 1
            out[f"{prefix}/concept/f1_papers"] = (papers_macro_f1(torch.stack(stats).sum(0)) if pooled
                                                  else torch.stack([papers_macro_f1(s) for s in stats]).mean())
            accs, f1s = [], []
            for name in self.names:
                acc, f1 = self.concept_acc[name].compute(), self.concept_f1[name].compute()
                out[f"{prefix}/concept/{name}/acc"], out[f"{prefix}/concept/{name}/f1"] = acc, f1
                if name in self.concept_mae and self.concept_mae[name].update_count:
                    out[f"{prefix}/concept/{name}/mae"] = self.concept_mae[name].compute()
                accs.append(acc)
                f1s.append(f1)
            # every example carries every concept, so pooled accuracy is the mean of per-concept accuracies
            out[f"{prefix}/concept/acc"] = torch.stack(accs).mean()
            out[f"{prefix}/concept/f1"] = torch.stack(f1s).mean()
        return {k: float(v) for k, v in out.items()}

    def reset(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset") and not isinstance(m, nn.ModuleDict):
                m.reset()
