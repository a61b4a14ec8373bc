"""ICaCE: does an explanation predict what a human counterfactual does to a model?

For a pair ``(x, x')`` in which a person changed concept ``C`` from ``a`` to ``b`` (CEBaB), the model's
*individual causal concept effect* is ``ICaCE = N(x') - N(x)`` (label probability vectors). An explainer
estimates it without seeing ``x'`` (``EICaCE``). The scores are CEBaB's, as its code computes them
(``CEBaBing/CEBaB: code/eval_pipeline/utils/metric_utils.py``, ``_calculate_icace`` and
``_calculate_estimate_loss``; averaged by ``_aggregate_metrics`` in ``pipeline.py``):

- ``ICaCE`` rounded to 4 decimals;
- ``l2`` (ICaCE-L2) ``= ||ICaCE - EICaCE||_2``;
- ``cosine`` (ICaCE-cosine) ``= 1 - cos(ICaCE, EICaCE)`` (scipy's cosine distance), and ``1`` when either
  vector is zero;
- ``normdiff`` (ICaCE-NormDiff) ``= | ||ICaCE||_2 - ||EICaCE||_2 |``;
- each the mean over pairs: per concept and direction, per concept, and over all pairs.

Lower is better for all three.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsecbm.outputs import save_figure

METRICS = ("l2", "cosine", "normdiff")
#: CEBaB rounds the true effect to this many decimals before scoring.
ICACE_DECIMALS = 4


def round_to(t: torch.Tensor, decimals: int | None) -> torch.Tensor:
    return t if decimals is None else torch.round(t * 10**decimals) / 10**decimals


def icace_errors(true: torch.Tensor, estimate: torch.Tensor, decimals: int | None = ICACE_DECIMALS
                 ) -> dict[str, torch.Tensor]:
    """Per pair ``{"l2", "cosine", "normdiff"}`` (``[N]`` each) of ``estimate`` against ``true`` (``[N, L]``).

    ``true`` is rounded to ``decimals`` first (CEBaB: 4; ``None`` keeps it as is).
    """
    true, estimate = round_to(true.double(), decimals), estimate.double()
    tn, en = true.norm(dim=-1), estimate.norm(dim=-1)
    cos = (true * estimate).sum(-1) / (tn * en).clamp(min=1e-300)
    cosine = torch.where((tn == 0) | (en == 0), torch.ones_like(tn), 1.0 - cos)
    return {"l2": (true - estimate).norm(dim=-1), "cosine": cosine, "normdiff": (tn - en).abs()}


def _mean(errors: Mapping[str, torch.Tensor], rows: Sequence[int] | None = None) -> dict[str, float]:
    idx = torch.as_tensor(list(rows)) if rows is not None else None
    out = {m: float((v if idx is None else v[idx]).mean()) for m, v in errors.items()}
    out["n"] = int(len(next(iter(errors.values()))) if idx is None else len(idx))
    return out


@dataclass
class ICaCEScore:
    """One explainer's errors: over all pairs, per concept and per concept and direction (``"a->b"``)."""

    explainer: str
    overall: dict[str, float]
    per_concept: dict[str, dict[str, float]]
    per_direction: dict[str, dict[str, dict[str, float]]]
    note: str = ""


def score(name: str, concepts: Sequence[str], directions: Sequence[str], true: torch.Tensor,
          estimate: torch.Tensor, note: str = "") -> ICaCEScore:
    """Average :func:`icace_errors` per concept and direction, per concept and overall (CEBaB's means)."""
    errors = icace_errors(true, estimate)
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (c, d) in enumerate(zip(concepts, directions)):
        groups[c][d].append(i)
    per_concept = {c: _mean(errors, [i for rows in ds.values() for i in rows]) for c, ds in sorted(groups.items())}
    per_direction = {c: {d: _mean(errors, rows) for d, rows in sorted(ds.items())} for c, ds in sorted(groups.items())}
    return ICaCEScore(name, _mean(errors), per_concept, per_direction, note)


@dataclass
class ICaCEReport:
    """Every explainer's :class:`ICaCEScore` on one split's pairs, the true effects' size, and what was run."""

    scores: list[ICaCEScore]
    split: str
    n_pairs: int
    counts: dict[str, dict[str, int]]
    effect: dict[str, Any] = field(default_factory=dict)  # mean ||ICaCE||_2 overall and per concept
    meta: dict[str, Any] = field(default_factory=dict)

    def get(self, explainer: str) -> ICaCEScore:
        return next(s for s in self.scores if s.explainer == explainer)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "icace_report", **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ICaCEReport:
        return cls(scores=[ICaCEScore(**s) for s in d["scores"]], split=d["split"], n_pairs=int(d["n_pairs"]),
                   counts=dict(d["counts"]), effect=dict(d.get("effect", {})), meta=dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        from sparsecbm.jsonio import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ICaCEReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary(self) -> dict[str, Any]:
        """The compact block ``results.json`` carries: per explainer the overall and per-concept means."""
        return {"split": self.split, "n_pairs": self.n_pairs, "effect_norm": self.effect,
                "explainers": {s.explainer: {**s.overall, "per_concept": s.per_concept} for s in self.scores}}

    def rows(self) -> list[list[str]]:
        """Table rows: explainer, then ``L2 / cos`` overall and per concept, then NormDiff overall."""
        concepts = sorted(self.counts)
        out = []
        for s in self.scores:
            cells = [f"{s.overall['l2']:.3f} / {s.overall['cosine']:.3f}"]
            for c in concepts:
                m = s.per_concept.get(c)
                cells.append("-" if m is None else f"{m['l2']:.3f} / {m['cosine']:.3f}")
            out.append([s.explainer, *cells, f"{s.overall['normdiff']:.3f}", str(s.overall["n"])])
        return out

    def header(self) -> list[str]:
        return ["explainer", "all (L2 / cos)", *[f"{c} (L2 / cos)" for c in sorted(self.counts)], "NormDiff", "pairs"]

    def table(self, title: str | None = None):
        """A rich table (lower is better)."""
        from rich.table import Table

        table = Table(title=title or f"ICaCE error on {self.split} pairs (lower is better)")
        for i, col in enumerate(self.header()):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in self.rows():
            table.add_row(*row)
        table.caption = (f"{self.n_pairs} pairs; mean ||ICaCE||_2 = {self.effect.get('overall', float('nan')):.3f}; "
                         "L2 = ||ICaCE - estimate||, cos = cosine distance (CEBaB's definitions)")
        return table

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header()) + " |", "|" + "---|" * len(self.header())]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Bars of ICaCE-L2 and cosine distance per concept, one bar per explainer."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        concepts = sorted(self.counts) + ["all"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        width = 0.8 / max(len(self.scores), 1)
        for ax, metric in zip(axes, ("l2", "cosine")):
            x = np.arange(len(concepts))
            for j, s in enumerate(self.scores):
                vals = [s.per_concept.get(c, {}).get(metric, np.nan) for c in concepts[:-1]] + [s.overall[metric]]
                ax.bar(x + j * width, vals, width, label=s.explainer)
            ax.set_xticks(x + width * (len(self.scores) - 1) / 2, concepts)
            ax.set_ylabel({"l2": "ICaCE-L2", "cosine": "ICaCE cosine distance"}[metric])
            ax.grid(axis="y", alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.suptitle(self.meta.get("title", f"ICaCE error, {self.split} ({self.n_pairs} pairs), lower is better"))
        fig.tight_layout()
        return save_figure(fig, path)


def effect_norms(concepts: Sequence[str], true: torch.Tensor) -> dict[str, Any]:
    """Mean ``||ICaCE||_2`` (rounded as scored) overall and per concept: how much the edits move the model."""
    norms = round_to(true.double(), ICACE_DECIMALS).norm(dim=-1)
    per = defaultdict(list)
    for i, c in enumerate(concepts):
        per[c].append(i)
    return {"overall": float(norms.mean()) if len(norms) else float("nan"),
            "per_concept": {c: float(norms[torch.as_tensor(rows)].mean()) for c, rows in sorted(per.items())}}
