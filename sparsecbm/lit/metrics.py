"""torchmetrics collections for the task label and every concept, one set per stage.

The scores they compute are defined once in :mod:`sparsecbm.metrics` (re-exported here).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassStatScores

from sparsecbm.concepts import ConceptSet
from sparsecbm.metrics import classification_scores, papers_macro_f1

__all__ = ["CBMMetrics", "classification_scores", "papers_macro_f1"]  # the scores live in sparsecbm.metrics


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
