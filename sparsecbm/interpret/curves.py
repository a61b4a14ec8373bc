"""Intervention curves over a data split: task accuracy and macro-F1 vs. the number of concepts
set to their true values, per policy.

The backbone runs once per example (:func:`sparsecbm.session.collect`); every policy and budget then only
re-runs the label head on edited concept activations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsecbm.concepts import ConceptSet
from sparsecbm.interpret.policies import POLICIES, budget_masks, get_policy
from sparsecbm.interpret.strategies import Bottleneck, ground_truth_targets
from sparsecbm.outputs import save_figure


@dataclass
class CurvePoint:
    """Task metrics with ``k`` concepts intervened on (mean and std over seeds for ``random``)."""

    k: int
    acc: float
    f1: float
    acc_std: float = 0.0
    f1_std: float = 0.0


@dataclass
class InterventionCurve:
    """Per policy, the task metrics for budgets ``k = 0..K`` (ground-truth strategy)."""

    curves: dict[str, list[CurvePoint]]
    concepts: list[str]
    n_examples: int
    strategy: str = "ground_truth"
    type: str = "concept"
    seeds: list[int] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def no_intervention(self) -> CurvePoint:
        """No intervention (``k = 0``; the same for every policy)."""
        return next(iter(self.curves.values()))[0]

    @property
    def all_ground_truth(self) -> CurvePoint:
        """Every concept set to its true value (``k = K``; the same for every policy)."""
        return next(iter(self.curves.values()))[-1]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = {"none": asdict(self.no_intervention), "all_ground_truth": asdict(self.all_ground_truth)}
        return {"kind": "intervention_curve", **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InterventionCurve:
        curves = {p: [CurvePoint(**pt) for pt in pts] for p, pts in d["curves"].items()}
        return cls(curves=curves, concepts=list(d["concepts"]), n_examples=int(d["n_examples"]),
                   strategy=d.get("strategy", "ground_truth"), type=d.get("type", "concept"),
                   seeds=list(d.get("seeds", [])), meta=dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        from sparsecbm.jsonio import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> InterventionCurve:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def table(self, title: str = "intervention curve (task acc / macro-F1, %)"):
        from rich.table import Table

        table = Table(title=title)
        table.add_column("policy")
        for pt in next(iter(self.curves.values())):
            table.add_column(f"k={pt.k}", justify="right")
        for policy, pts in self.curves.items():
            table.add_row(policy, *[f"{100 * p.acc:.1f} / {100 * p.f1:.1f}" for p in pts])
        return table

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: accuracy and macro-F1 vs. ``k``, one line per policy."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, metric in zip(axes, ("acc", "f1")):
            for policy, pts in self.curves.items():
                ks = [p.k for p in pts]
                mean = [getattr(p, metric) for p in pts]
                ax.plot(ks, mean, marker="o", label=policy)
                std = [getattr(p, f"{metric}_std") for p in pts]
                if any(std):
                    ax.fill_between(ks, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
            ax.set_xlabel("concepts set to ground truth (k)")
            ax.set_ylabel({"acc": "task accuracy", "f1": "task macro-F1"}[metric])
            ax.set_xticks(range(len(self.concepts) + 1))
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(self.meta.get("title", "concept interventions"))
        fig.tight_layout()
        return save_figure(fig, path)


def task_metrics(label_probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(accuracy, macro-F1): :func:`~sparsecbm.metrics.classification_scores`, training's definitions."""
    from sparsecbm.metrics import classification_scores

    scores = classification_scores(label_probs.argmax(-1), labels, label_probs.shape[-1])
    return scores["acc"], scores["f1"]


def intervention_curve(
    bottleneck: Bottleneck,
    truth: torch.Tensor,
    labels: torch.Tensor,
    concepts: Sequence[str] | ConceptSet,
    policies: Sequence[str] = POLICIES,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> InterventionCurve:
    """Task metrics for every policy and budget ``k = 0..K`` with ground-truth interventions.

    Args:
        bottleneck: Concept logits of the split and the label head.
        truth: ``[N, K]`` true concept values.  labels: ``[N]`` true labels.
        concepts: Concept names (for the report), or the :class:`~sparsecbm.concepts.ConceptSet` (then the
            ``uncertainty`` and ``oracle`` policies use the graded concepts' order).
        policies: Policy names (see :data:`~sparsecbm.interpret.policies.POLICIES`).
        seeds: Seeds of the ``random`` policy; its points are the mean (and std) over them.
    """
    specs = list(concepts) if isinstance(concepts, ConceptSet) else None
    names = concepts.names if isinstance(concepts, ConceptSet) else list(concepts)
    targets = ground_truth_targets(truth, bottleneck.cardinalities)
    curves: dict[str, list[CurvePoint]] = {}
    for name in policies:
        runs = []
        for seed in (seeds if name == "random" else [0]):
            order = get_policy(name, seed, specs).order(bottleneck, truth)
            runs.append([task_metrics(bottleneck.label_probs(targets, budget_masks(order, k)), labels)
                         for k in range(bottleneck.n_concepts + 1)])
        t = torch.tensor(runs)  # [seeds, K+1, 2]
        mean, std = t.mean(0), t.std(0, unbiased=False)
        curves[name] = [CurvePoint(k, float(mean[k, 0]), float(mean[k, 1]), float(std[k, 0]), float(std[k, 1]))
                        for k in range(t.shape[1])]
    return InterventionCurve(curves=curves, concepts=names, n_examples=int(labels.shape[0]),
                             seeds=list(seeds) if "random" in policies else [])
