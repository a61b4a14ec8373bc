"""Intervention *policies*: which concepts to intervene on first.

A policy scores every concept of every example (higher = intervene earlier); the first ``k``
concepts of the resulting per-example order are edited for a budget ``k``. Ties keep concept
order (stable sort).
"""

from __future__ import annotations

import torch

from sparsecbm.interpret.strategies import Bottleneck

POLICIES = ("random", "uncertainty", "influence", "oracle")


class Policy:
    """Base class: ``scores(bottleneck, truth) -> [N, K]``; ``order`` sorts them."""

    name = "policy"
    needs_truth = False

    def scores(self, bottleneck: Bottleneck, truth: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def order(self, bottleneck: Bottleneck, truth: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, K]`` concept indices, the first to intervene on first."""
        if self.needs_truth and truth is None:
            raise ValueError(f"policy '{self.name}' needs the true concepts of the data")
        return torch.argsort(self.scores(bottleneck, truth), dim=-1, descending=True, stable=True)


class RandomPolicy(Policy):
    """A uniformly random order, reproducible from ``seed``."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self, bottleneck, truth=None):
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(bottleneck.concept_logits[0].shape[0], bottleneck.n_concepts, generator=gen)


class UncertaintyPolicy(Policy):
    """Highest predictive entropy of the concept head first (normalised by ``log C_k``)."""

    name = "uncertainty"

    def scores(self, bottleneck, truth=None):
        cols = []
        for p in bottleneck.concept_probs():
            entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
            cols.append(entropy / torch.log(torch.tensor(float(p.shape[-1]))))
        return torch.stack(cols, dim=-1)


class InfluencePolicy(Policy):
    """Largest expected change of the label distribution first.

    For concept ``k``: ``E_{v ~ p_k}[ TV(P(y | c_k := v), P(y)) ]`` where ``TV`` is the total
    variation distance and ``p_k`` the model's own concept distribution (truth is not used).
    """

    name = "influence"

    def scores(self, bottleneck, truth=None):
        base = bottleneck.label_probs()
        n = base.shape[0]
        cols = []
        for k, (p, card) in enumerate(zip(bottleneck.concept_probs(), bottleneck.cardinalities)):
            expected = torch.zeros(n)
            for v in range(card):
                targets = [None] * bottleneck.n_concepts
                targets[k] = torch.nn.functional.one_hot(torch.full((n,), v), card).float()
                moved = 0.5 * (bottleneck.label_probs(targets) - base).abs().sum(-1)
                expected += p[:, v] * moved
            cols.append(expected)
        return torch.stack(cols, dim=-1)


class OraclePolicy(Policy):
    """Wrongly predicted concepts first (an upper bound); within each group, lowest true-value probability first."""

    name = "oracle"
    needs_truth = True

    def scores(self, bottleneck, truth=None):
        cols = []
        for k, p in enumerate(bottleneck.concept_probs()):
            wrong = (p.argmax(-1) != truth[:, k]).float()
            p_true = p.gather(-1, truth[:, k : k + 1]).squeeze(-1)
            cols.append(wrong + (1.0 - p_true))  # wrong in [1, 2], right in [0, 1)
        return torch.stack(cols, dim=-1)


def get_policy(name: str, seed: int = 0) -> Policy:
    """A policy by name (``random`` takes ``seed``)."""
    classes = {"random": RandomPolicy, "uncertainty": UncertaintyPolicy, "influence": InfluencePolicy,
               "oracle": OraclePolicy}
    if name not in classes:
        raise ValueError(f"unknown intervention policy '{name}'; valid policies: {list(POLICIES)}")
    return RandomPolicy(seed) if name == "random" else classes[name]()


def budget_masks(order: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, K]`` bool: the first ``k`` concepts of each example's ``order`` are selected."""
    mask = torch.zeros_like(order, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, order[:, :k], True)
    return mask
