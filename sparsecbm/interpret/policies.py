"""Intervention *policies*: which concepts to intervene on first.

A policy scores every concept of every example (higher = intervene earlier); the first ``k``
concepts of the resulting per-example order are edited for a budget ``k``. Ties keep concept
order (stable sort).

Graded (ordered) concepts: given the concept specs (``get_policy(name, concepts=...)``), ``uncertainty``
measures them with their order (:func:`ordinal_uncertainty`: a spread between far-apart levels is more
uncertain than one between neighbours) and ``oracle`` puts the larger level errors first. Without specs,
or for unordered concepts, every value is a separate class (any number of values).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sparsecbm.concepts import ConceptSpec
from sparsecbm.interpret.strategies import Bottleneck

POLICIES = ("random", "uncertainty", "influence", "oracle")


class Policy:
    """Base class: ``scores(bottleneck, truth) -> [N, K]``; ``order`` sorts them."""

    name = "policy"
    needs_truth = False
    #: The concepts' specs, in bottleneck order (``None``: every concept unordered).
    specs: Sequence[ConceptSpec] | None = None

    def spec(self, k: int) -> ConceptSpec | None:
        return self.specs[k] if self.specs is not None else None

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


def entropy_uncertainty(p: torch.Tensor) -> torch.Tensor:
    """``[N]`` predictive entropy of ``[N, C]`` probabilities, normalised by ``log C`` (in [0, 1])."""
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    return entropy / torch.log(torch.tensor(float(p.shape[-1])))


def ordinal_uncertainty(p: torch.Tensor, spec: ConceptSpec) -> torch.Tensor:
    """``[N]`` uncertainty of a graded concept in [0, 1], using its order.

    With ``q`` the probability of any level (not an unordered value such as ``unknown``) and ``d`` the
    spread of the level distribution given a level, its expected absolute distance from its median level
    divided by the largest possible, ``(L - 1) / 2``: ``max(h, q * d)``, where ``h`` is the normalised
    entropy of "which level-or-unordered group" (level mass, then each unordered value). Half the mass on
    level 1 and half on level 5 gives 1; neighbouring levels 2 and 3 give ``1 / (L - 1)``; a sure level 0.
    """
    levels = [spec.values.index(v) for v in spec.levels]
    others = [i for i in range(spec.cardinality) if i not in levels]
    p_lv = p[:, levels]
    q = p_lv.sum(-1)
    cond = p_lv / q.clamp_min(1e-12).unsqueeze(-1)
    cdf = cond.cumsum(-1)
    ranks = torch.arange(len(levels), dtype=p.dtype)
    median = (cdf < 0.5).sum(-1).clamp_max(len(levels) - 1).to(p.dtype)  # first level with cdf >= 1/2
    spread = (cond * (ranks.unsqueeze(0) - median.unsqueeze(-1)).abs()).sum(-1) / ((len(levels) - 1) / 2)
    groups = torch.cat([q.unsqueeze(-1), p[:, others]], -1)
    h = entropy_uncertainty(groups) if others else torch.zeros_like(q)
    return torch.maximum(h, q * spread.clamp(0.0, 1.0))


class UncertaintyPolicy(Policy):
    """Most uncertain concept first: normalised predictive entropy (:func:`entropy_uncertainty`), or for a
    graded concept :func:`ordinal_uncertainty`."""

    name = "uncertainty"

    def __init__(self, specs: Sequence[ConceptSpec] | None = None):
        self.specs = specs

    def scores(self, bottleneck, truth=None):
        cols = []
        for k, p in enumerate(bottleneck.concept_probs()):
            spec = self.spec(k)
            cols.append(ordinal_uncertainty(p, spec) if spec is not None and spec.ordered else entropy_uncertainty(p))
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
    """Wrongly predicted concepts first (an upper bound); within each group, lowest true-value probability first.

    For a graded concept a wrong prediction scores ``1 + distance``, the level distance between prediction
    and truth over ``L - 1`` (1 when either is outside the order): larger level errors first.
    """

    name = "oracle"
    needs_truth = True

    def __init__(self, specs: Sequence[ConceptSpec] | None = None):
        self.specs = specs

    def scores(self, bottleneck, truth=None):
        cols = []
        for k, p in enumerate(bottleneck.concept_probs()):
            pred, true = p.argmax(-1), truth[:, k]
            wrong = (pred != true).float()
            p_true = p.gather(-1, true.unsqueeze(-1)).squeeze(-1)
            spec = self.spec(k)
            if spec is not None and spec.ordered:
                rank = torch.tensor([-1 if spec.rank(i) is None else spec.rank(i) for i in range(spec.cardinality)])
                rp, rt = rank[pred], rank[true]
                far = torch.where((rp >= 0) & (rt >= 0), (rp - rt).abs().float() / max(len(spec.levels) - 1, 1),
                                  torch.ones_like(wrong))
                cols.append(torch.where(wrong > 0, 1.0 + far, 1.0 - p_true))  # wrong in (1, 2], right in [0, 1)
            else:
                cols.append(wrong + (1.0 - p_true))  # wrong in [1, 2], right in [0, 1)
        return torch.stack(cols, dim=-1)


def get_policy(name: str, seed: int = 0, concepts: Sequence[ConceptSpec] | None = None) -> Policy:
    """A policy by name (``random`` takes ``seed``; ``uncertainty`` and ``oracle`` read the graded concepts'
    order from ``concepts``, the specs in bottleneck order, e.g. a :class:`~sparsecbm.concepts.ConceptSet`)."""
    classes = {"random": RandomPolicy, "uncertainty": UncertaintyPolicy, "influence": InfluencePolicy,
               "oracle": OraclePolicy}
    if name not in classes:
        raise ValueError(f"unknown intervention policy '{name}'; valid policies: {list(POLICIES)}")
    specs = list(concepts) if concepts is not None else None
    if name == "random":
        return RandomPolicy(seed)
    return classes[name](specs) if name in ("uncertainty", "oracle") else classes[name]()


def budget_masks(order: torch.Tensor, k: int) -> torch.Tensor:
    """``[N, K]`` bool: the first ``k`` concepts of each example's ``order`` are selected."""
    mask = torch.zeros_like(order, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, order[:, :k], True)
    return mask
