"""The second-order maths of the oBERT scorer (Kurtic et al. 2022).

The score of weight i is w_i^2 / (2 [F^-1]_ii), F the empirical Fisher of one concept's own loss from ``m``
gradient batches, block-diagonal with ``block`` consecutive weights per block and damped by ``damp`` times
the mean Fisher diagonal. The inverse's diagonal is exact per block via the Woodbury identity (m << block),
so memory is m gradients per masked weight of the concept being scored, one concept at a time.
"""

from __future__ import annotations

import torch


def fisher_inverse_diagonal(grads: torch.Tensor, block: int, damp: float) -> torch.Tensor:
    """Diagonal of the inverse of the block-diagonal empirical Fisher.

    Args:
        grads: ``[m, n]`` per-batch gradients of one concept's loss w.r.t. ``n`` weights.
        block: Weights per diagonal block (the last block may be shorter).
        damp: λ in ``F_b = λ I + (1/m) G_bᵀ G_b``.

    Returns:
        ``[n]`` with ``[F_b^-1]_ii`` for every weight.
    """
    m, n = grads.shape
    pad = (-n) % block
    g = torch.nn.functional.pad(grads, (0, pad)).view(m, -1, block).permute(1, 0, 2)  # [nb, m, block]
    g = g / (m ** 0.5)
    # Woodbury: (λI + GᵀG)^-1 = (I - Gᵀ (λI_m + G Gᵀ)^-1 G) / λ
    small = damp * torch.eye(m, dtype=g.dtype) + g @ g.transpose(1, 2)  # [nb, m, m]
    solved = torch.linalg.solve(small, g)  # [nb, m, block]
    diag = (1.0 - (g * solved).sum(1)) / damp  # [nb, block]
    return diag.reshape(-1)[:n]


def obert_scores(weight: torch.Tensor, grads: torch.Tensor, block: int, damp: float) -> torch.Tensor:
    """``w² / (2 [F^-1]_ii)`` shaped like ``weight``; ``grads`` is ``[m, *weight.shape]``.

    ``damp`` is relative: λ = damp · mean(diag F), so the score does not depend on the loss's scale.
    """
    g = grads.reshape(grads.shape[0], -1).double()
    lam = damp * float(g.pow(2).mean()) or damp
    inv_diag = fisher_inverse_diagonal(g, block, lam)
    return (weight.reshape(-1).double() ** 2 / (2 * inv_diag)).view_as(weight).to(weight.dtype)


def diagonal_fisher_scores(weight: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """``w² · F_ii / 2`` with the diagonal empirical Fisher (for structured units)."""
    return weight.pow(2) * grads.pow(2).mean(0) / 2
