"""Is each subnetwork its concept's own? The cross-mask matrix: concept i's head reading mask j's backbone."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sparsecbm.metrics import macro_f1
from sparsecbm.outputs import save_figure


@dataclass
class CrossMask:
    """``matrix[i][j]``: concept i's macro-F1 when its head reads the backbone run under concept j's mask.

    ``specificity[i]`` is the own mask's macro-F1 minus the mean over the other masks: positive when
    the subnetwork carries what its concept needs and the others' do not. ``own_best[i]``: the diagonal is
    the best entry of row i.
    """

    concepts: list[str]
    matrix: list[list[float]]
    specificity: dict[str, float]
    own_best: dict[str, bool]
    split: str = "test"
    metric: str = "macro-F1"

    @classmethod
    def from_matrix(cls, concepts: list[str], matrix: torch.Tensor, split: str = "test") -> CrossMask:
        m = matrix.double()
        k = len(concepts)
        spec, best = {}, {}
        for i, c in enumerate(concepts):
            others = [float(m[i, j]) for j in range(k) if j != i]
            spec[c] = float(m[i, i]) - (sum(others) / len(others) if others else 0.0)
            best[c] = all(float(m[i, i]) >= o for o in others)
        return cls(list(concepts), m.tolist(), spec, best, split)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    def plot(self, path: str | Path) -> Path:
        """Heatmap PNG (rows: concept whose head reads; columns: whose mask runs), specificity in the labels."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        grid = np.array(self.matrix)
        k = len(self.concepts)
        fig, ax = plt.subplots(figsize=(1.6 + 0.8 * k, 1.0 + 0.6 * k))
        im = ax.imshow(grid, vmin=0, vmax=max(1e-9, float(grid.max())), cmap="magma", aspect="auto")
        ax.set_xticks(range(k), [f"mask {c}" for c in self.concepts], rotation=30, ha="right")
        ax.set_yticks(range(k), [f"{c} (spec {100 * self.specificity[c]:+.1f})" for c in self.concepts])
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="k" if grid[i, j] > 0.6 * grid.max() else "w", fontweight="bold" if i == j else None)
        ax.set_title(f"concept {self.metric} (%, {self.split}) under each concept's mask")
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
        return save_figure(fig, path)


@torch.no_grad()
def cross_mask(model, batches: Iterable[dict], split: str = "test") -> CrossMask:
    """The K×K cross-mask matrix of a ``ConceptBottleneckModel`` with per-concept subnetworks.

    For every mask j the backbone runs once (a single pass under mask j); every concept's pooler and
    head then read those states, so the cost is K backbone passes over ``batches``.
    """
    sb, concepts = model.backbone, model.concepts
    if getattr(sb, "shared", False):
        raise ValueError("the cross-mask matrix compares per-concept masks; sparsity.shared=true has one mask")
    was_training = model.training
    model.eval()
    k = len(concepts)
    preds: list[list[list[torch.Tensor]]] = [[[] for _ in range(k)] for _ in range(k)]
    truth: list[torch.Tensor] = []
    device = next(model.parameters()).device
    for batch in batches:
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        truth.append(batch["concepts"].cpu())
        for j in range(k):
            features = model.pool_states(sb.concept_states(j, ids, mask), mask)
            for i in range(k):
                f = features[i] if features.dim() == 3 else features
                preds[i][j].append(model.concept_heads.single(i, f).argmax(-1).cpu())
    model.train(was_training)
    if not truth:
        raise ValueError("cross_mask: no batches to evaluate")
    y = torch.cat(truth)
    matrix = torch.zeros(k, k, dtype=torch.float64)
    for i, c in enumerate(concepts):
        for j in range(k):
            matrix[i, j] = macro_f1(torch.cat(preds[i][j]), y[:, i], c.cardinality)
    return CrossMask.from_matrix(concepts.names, matrix, split)
