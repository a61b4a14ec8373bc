"""Mask selection from scores: keep each concept's top entries at a target sparsity (layer-wise or global)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch

from sparsecbm.models.cbm import concept_cross_entropies
from sparsecbm.sparsity.schedule import Schedule, schedule_steps, scheduled_sparsity
from sparsecbm.sparsity.scorers import ScoreContext, Scorer, make_scorer

if TYPE_CHECKING:
    from sparsecbm.sparsity.backbone import SubnetworkBackbone

__all__ = ["Pruner", "concept_losses_of", "schedule_steps", "scheduled_sparsity"]


def _keep_topk(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask keeping the ``n_keep`` largest entries of each row of ``scores [K, n]`` (ties: lowest index)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if n_keep > 0:
        mask.scatter_(1, scores.topk(n_keep, dim=1, sorted=False).indices, True)
    return mask


def _keep_by_weight(scores: torch.Tensor, cost: torch.Tensor, budget: float) -> torch.Tensor:
    """Per row of ``scores [K, n]``: entries by score per weight, best first, each kept if it still fits in
    ``budget`` weights (one that does not is skipped and smaller ones fill the rest), so the kept weights
    fall short of the budget by less than the smallest entry left out."""
    keep = torch.zeros_like(scores, dtype=torch.bool)
    order = (scores / cost).argsort(dim=1, descending=True, stable=True)
    c = cost.tolist()
    for k in range(scores.shape[0]):
        left = budget
        for i in order[k].tolist():
            if c[i] <= left:
                keep[k, i] = True
                left -= c[i]
    return keep


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sync_scores(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean of every score tensor over the data-parallel ranks (each rank scored its own batches)."""
    import torch.distributed as dist

    world = _world_size()
    out = {}
    for name, s in scores.items():
        s = s.float().contiguous().clone()
        dist.all_reduce(s)
        out[name] = s / world
    return out


@torch.no_grad()
def broadcast_masks(sb: SubnetworkBackbone) -> None:
    """Make rank 0's masks every rank's masks (pruning decisions identical by construction)."""
    import torch.distributed as dist

    for target in sb.mask_targets().values():
        m = target.masks.to(torch.uint8)
        dist.broadcast(m, 0)
        target.set_masks(m.bool())


Weights = list[torch.Tensor | None] | None


def concept_losses_of(model, weights: Weights | Callable[[], Weights] = None) -> Callable[[dict], list[torch.Tensor]]:
    """``batch -> [loss_k]``: every concept's (optionally class-weighted) cross-entropy from one forward pass
    of a ``ConceptBottleneckModel`` (concept k's logits come from its own subnetwork only), as training
    defines it (:func:`~sparsecbm.models.cbm.concept_cross_entropies`).

    Args:
        model: The ``ConceptBottleneckModel``.
        weights: Per concept class weights, or a function returning them, read at every call: a training
            module sets its class-balanced weights at fit start, after the pruner exists.
    """

    def losses(batch: dict) -> list[torch.Tensor]:
        logits = model.concept_logits(batch["input_ids"], batch["attention_mask"])
        return concept_cross_entropies(logits, batch["concepts"], weights() if callable(weights) else weights)

    return losses


class Pruner:
    """Scores a :class:`SubnetworkBackbone`'s mask entries per concept and writes masks at a target sparsity.

    Args:
        sb: The backbone; its ``settings`` name the scorer and the schedule.
        concept_loss: ``(concept, batch) -> loss`` of that concept alone through its own subnetwork (obert).
        concept_losses: ``batch -> [loss_k]`` from one pass (taylor, fisher).
        scorer: Overrides the backbone's scorer.
        seed: The run's seed (the random control's scores come from it).
    """

    def __init__(self, sb: SubnetworkBackbone, concept_loss: Callable[[int, dict], torch.Tensor] | None = None,
                 concept_losses: Callable[[dict], list[torch.Tensor]] | None = None, scorer: Scorer | None = None,
                 seed: int = 0):
        self.sb, self.concept_loss, self.concept_losses = sb, concept_loss, concept_losses
        self.scorer = scorer if scorer is not None else make_scorer(sb.settings["scorer"])
        self.scorer.check(sb)
        self.schedule = Schedule.from_settings(sb.settings["schedule"])
        self.scorer.attach(sb, seed)

    @property
    def name(self) -> str:
        return self.scorer.name

    def context(self, batches_for: Callable[[], Iterable[dict]] | None) -> ScoreContext:
        return ScoreContext(self.concept_loss, self.concept_losses, batches_for)

    @torch.no_grad()
    def prune(self, sparsity: float, batches_for: Callable[[], Iterable[dict]] | None = None) -> None:
        """Set every concept's mask to keep the top ``1 - sparsity`` of its scores (layer-wise or global).

        ``scope=global`` ranks all masked entries by score per weight and keeps them until ``1 - sparsity``
        of the masked *weights* are kept, so a head (many weights) and a neuron (few) compete fairly.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        with torch.enable_grad():
            scores = self.scorer.scores(self.sb, self.context(batches_for))
        distributed = _world_size() > 1
        if distributed and self.scorer.needs_rank_sync:  # data-parallel weights are equal; batches are not
            scores = sync_scores(scores)
        targets = self.sb.mask_targets()
        if self.schedule.scope == "global":
            flat = torch.cat([s.reshape(s.shape[0], -1).float() for s in scores.values()], 1)
            cost = torch.cat([targets[n].entry_weights().reshape(-1) for n in scores])
            if bool((cost == cost[0]).all()):
                keep = _keep_topk(flat, round((1 - sparsity) * flat.shape[1]))
            else:
                keep = _keep_by_weight(flat, cost, (1 - sparsity) * float(cost.sum()))
            offset = 0
            for name, s in scores.items():
                n = s[0].numel()
                targets[name].set_masks(keep[:, offset:offset + n].view_as(s))
                offset += n
        else:
            for name, s in scores.items():
                flat = s.reshape(s.shape[0], -1).float()
                targets[name].set_masks(_keep_topk(flat, round((1 - sparsity) * flat.shape[1])).view_as(s))
        if distributed:
            broadcast_masks(self.sb)
        self.sb.mask_level.fill_(sparsity)
