"""Sparse concept->label layer: an L1 penalty, or an exact top-k-concepts-per-label mask.

``topk`` keeps, for every label row of the linear label head, the ``k`` concepts whose weight block
(all value columns of that concept) has the largest L2 norm. The forward pass always uses the masked
weight, so the sparsity holds exactly at inference; the backward pass is straight-through (pruned
weights still receive gradients), so a concept can re-enter a label's top-k during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LABEL_SPARSITY = ("none", "l1", "topk")


def concept_blocks(cardinalities: list[int]) -> list[slice]:
    """Column slice of each concept in the concatenated ``[sum(card)]`` activations."""
    out, start = [], 0
    for c in cardinalities:
        out.append(slice(start, start + c))
        start += c
    return out


class TopKConceptLinear(nn.Linear):
    """``nn.Linear`` over concept activations whose every output row reads at most ``k`` concepts.

    Args:
        cardinalities: Number of values per concept (columns per concept block).
        n_out: Number of labels.
        k: Concepts kept per label.
    """

    def __init__(self, cardinalities: list[int], n_out: int, k: int):
        super().__init__(sum(cardinalities), n_out)
        if not 1 <= k <= len(cardinalities):
            raise ValueError(f"cbm.label_topk must be in [1, {len(cardinalities)}]; got {k}")
        self.cardinalities, self.k = list(cardinalities), int(k)

    def concept_norms(self) -> torch.Tensor:
        """``[n_out, K]`` L2 norm of each label's weight block per concept."""
        return torch.stack([self.weight[:, s].norm(dim=1) for s in concept_blocks(self.cardinalities)], dim=1)

    def mask(self) -> torch.Tensor:
        """``[n_out, sum(card)]`` 0/1 mask keeping the top-k concepts of every row."""
        top = self.concept_norms().detach().topk(self.k, dim=1).indices
        keep = torch.zeros(self.weight.shape[0], len(self.cardinalities), device=self.weight.device)
        keep.scatter_(1, top, 1.0)
        return torch.repeat_interleave(keep, torch.tensor(self.cardinalities, device=keep.device), dim=1)

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        masked = w * self.mask().to(w.dtype)
        return w + (masked - w).detach()  # forward: masked; backward: straight-through

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def label_weight(head: nn.Module) -> torch.Tensor | None:
    """The weight the linear label head applies (masked for top-k), or ``None`` for an MLP head."""
    if isinstance(head, TopKConceptLinear):
        return head.weight * head.mask()
    return head.weight if isinstance(head, nn.Linear) else None


def make_sparse_label_head(head: nn.Module, kind: str, cardinalities: list[int], k: int = 2) -> nn.Module:
    """Swap in the top-``k`` head when ``kind`` (``cbm.label_sparsity``) is ``topk``; otherwise return ``head``."""
    kind = kind or "none"
    if kind not in LABEL_SPARSITY:
        raise ValueError(f"cbm.label_sparsity='{kind}' is not valid; expected one of {LABEL_SPARSITY}")
    if kind == "none":
        return head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"cbm.label_sparsity={kind} needs cbm.label_head=linear")
    if kind == "l1":
        return head
    new = TopKConceptLinear(cardinalities, head.out_features, int(k))
    with torch.no_grad():
        new.weight.copy_(head.weight)
        new.bias.copy_(head.bias)
    return new


def label_l1_penalty(head: nn.Module, kind: str, weight: float) -> torch.Tensor | None:
    """``weight * sum|W|`` when ``kind`` (``cbm.label_sparsity``) is ``l1``, else ``None``."""
    if kind != "l1":
        return None
    return float(weight) * head.weight.abs().sum()
