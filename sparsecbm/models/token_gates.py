"""Learned per-concept token gates: each concept pools only the few tokens its hard-concrete gates keep.

Why hard-concrete (L0 relaxation, Louizos et al. 2018) rather than a top-k straight-through mask: the
number of tokens a concept reads can then differ per example (a review that never mentions noise
needs no noise tokens), the expected number of open gates is differentiable in closed form, so a
budget penalty steers it, and at inference the gates are deterministic with exact zeros.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparsecbm.models.token_pooler import TokenPooler

# stretch interval and temperature of the hard-concrete distribution (Louizos et al., 2018)
GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0


class HardConcreteTokenGates(TokenPooler):
    """A ``token_pooler`` for :class:`~sparsecbm.models.cbm.ConceptBottleneckModel`.

    For concept ``k`` and token ``t`` a linear scorer on the token state gives ``log_alpha[k, b, t]``;
    a hard-concrete gate ``z in [0, 1]`` is sampled from it in training (deterministic in eval) and
    concept ``k`` reads the gate-weighted mean of the token states. Padding is never selected.

    Args:
        hidden: Size of the token states.
        n_concepts: Number of concepts ``K``.
        budget: Target fraction of (non-pad) tokens each concept keeps, in ``(0, 1]``.
        penalty: Weight of the budget penalty ``|expected kept fraction - budget|`` in the loss.
        init_open: Initial ``log_alpha`` bias (positive: gates start mostly open).

    The pooler accepts shared states ``[B, T, H]`` or per-concept states ``[K, B, T, H]`` and returns
    ``(features [K, B, H], extras)`` with ``extras = {"gates": [K, B, T], "log_alpha": [K, B, T],
    "p_open": [K, B, T]}``.
    """

    method = "gates"
    weights_key = "gates"  # exact 0 when closed
    scores_key = "log_alpha"

    def __init__(
        self, hidden: int, n_concepts: int, budget: float = 0.2, penalty: float = 1.0, init_open: float = 1.0
    ):
        super().__init__()
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"token budget must be in (0, 1]; got {budget}")
        self.budget, self.penalty_weight = float(budget), float(penalty)
        self.weight = nn.Parameter(torch.randn(n_concepts, hidden) / math.sqrt(hidden))
        self.bias = nn.Parameter(torch.full((n_concepts,), float(init_open)))

    def log_alpha(self, states: torch.Tensor) -> torch.Tensor:
        """Gate logits ``[K, B, T]`` from ``[B, T, H]`` or ``[K, B, T, H]`` states."""
        if states.dim() == 3:
            scores = torch.einsum("bth,kh->kbt", states, self.weight)
        else:
            scores = torch.einsum("kbth,kh->kbt", states, self.weight)
        return scores + self.bias.view(-1, 1, 1)

    def gates(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Sampled (training) or deterministic (eval) gates in ``[0, 1]``."""
        if self.training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
        else:
            s = torch.sigmoid(log_alpha)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    @staticmethod
    def p_open(log_alpha: torch.Tensor) -> torch.Tensor:
        """Probability that a gate is non-zero (the differentiable expected L0)."""
        return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor):
        log_alpha = self.log_alpha(states)
        mask = attention_mask.to(states.dtype).unsqueeze(0)  # [1, B, T]
        z = self.gates(log_alpha) * mask
        weights = z / z.sum(-1, keepdim=True).clamp_min(1e-6)
        if states.dim() == 3:
            features = torch.einsum("kbt,bth->kbh", weights, states)
        else:
            features = torch.einsum("kbt,kbth->kbh", weights, states)
        return features, {"gates": z, "log_alpha": log_alpha, "p_open": self.p_open(log_alpha) * mask}

    def expected_fraction(
        self, extras: dict[str, torch.Tensor], attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Expected fraction of real tokens kept, ``[K, B]``."""
        return extras["p_open"].sum(-1) / attention_mask.sum(-1).clamp_min(1).to(extras["p_open"].dtype)

    def penalty(self, extras: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """Budget penalty added to the training loss: ``penalty * mean |expected fraction - budget|``."""
        return (
            self.penalty_weight * (self.expected_fraction(extras, attention_mask) - self.budget).abs().mean()
        )

    @staticmethod
    def kept_fraction(extras: dict[str, torch.Tensor], attention_mask: torch.Tensor) -> torch.Tensor:
        """Fraction of real tokens with a non-zero gate, ``[K, B]`` (what the budget is about at inference)."""
        kept = (extras["gates"] > 0).to(torch.float32).sum(-1)
        return kept / attention_mask.sum(-1).clamp_min(1).to(torch.float32)
