"""Hybrid bottleneck: a small unnamed (residual) channel beside the concepts. Less interpretable.

A strict concept bottleneck cannot beat the accuracy of the best label head on the *true*
concepts (the concept set's ceiling). The residual channel lets the label head read ``r`` extra
numbers computed from the pooled features; a penalty keeps it from carrying what the concepts
already carry: the mean squared cross-correlation, over the batch, between the residual and the
concept probabilities (which are detached, so only the residual moves). Decorrelation is linear:
a residual can still carry concept information non-linearly, which is why every run reports its
share of the decision (:func:`residual_share`) and the accuracy without it.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualChannel(nn.Module):
    """``[B, H]`` pooled features (or ``[K, B, H]`` per concept, averaged) -> ``[B, r]``."""

    def __init__(self, hidden: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.dim = int(dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, self.dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 3:  # per-concept subnetworks: the mean of their pooled states
            features = features.mean(0)
        return self.proj(self.dropout(features))


def cross_correlation_penalty(
    residual: torch.Tensor, concepts: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mean squared cross-correlation between ``[B, r]`` residual and ``[B, D]`` concept activations.

    Correlation (not covariance), so shrinking the residual's scale cannot game it; the concept side
    is detached. Zero for a batch of one example.
    """
    if residual.shape[0] < 2:
        return residual.sum() * 0.0

    def standardise(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(0, keepdim=True)
        return x / (x.pow(2).mean(0, keepdim=True).sqrt() + eps)

    r, c = standardise(residual.float()), standardise(concepts.detach().float())
    return (r.T @ c / residual.shape[0]).pow(2).mean()


@torch.no_grad()
def residual_share(label_fn, concept_inputs: torch.Tensor, residual: torch.Tensor) -> dict[str, float]:
    """How much of the decision comes from the residual channel.

    ``d_r = f(a, r) - f(a, mean r)`` and ``d_c = f(a, r) - f(mean a, r)`` over all label logits;
    the share is ``mean|d_r| / (mean|d_r| + mean|d_c|)``. For a linear head these are exactly the
    centred contributions of the residual and concept columns.

    Args:
        label_fn: ``(concept_inputs, residual) -> label logits``.
        concept_inputs: ``[N, D]`` the concept part of the label head's input.
        residual: ``[N, r]``.

    Returns:
        ``share`` and the two mean absolute effects.
    """
    full = label_fn(concept_inputs, residual)
    d_r = (full - label_fn(concept_inputs, residual.mean(0, keepdim=True).expand_as(residual))).abs().mean()
    d_c = (
        (full - label_fn(concept_inputs.mean(0, keepdim=True).expand_as(concept_inputs), residual))
        .abs()
        .mean()
    )
    total = float(d_r + d_c)
    return {
        "share": float(d_r) / total if total > 0 else 0.0,
        "residual_effect": float(d_r),
        "concept_effect": float(d_c),
    }
