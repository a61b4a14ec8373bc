"""Gradual pruning: the sparsity schedule, mask selection from scores, and the Lightning callback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch

from sparsecbm.sparsity.backbone import SubnetworkBackbone
from sparsecbm.sparsity.scorers import SCORERS, diagonal_fisher_scores, obert_scores

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE = {"init_sparsity": 0.0, "final_sparsity": 0.7, "start": 0.0, "end": 0.6, "unit": "fraction",
                    "kind": "cubic", "every": 20, "scope": "layer"}


def scheduled_sparsity(progress: float, init: float, final: float, kind: str = "cubic") -> float:
    """Sparsity at ``progress`` ∈ [0, 1] of the pruning window (cubic: Zhu & Gupta 2017)."""
    t = min(max(progress, 0.0), 1.0)
    if kind == "linear":
        return init + (final - init) * t
    if kind == "cubic":
        return final + (init - final) * (1.0 - t) ** 3
    raise ValueError(f"sparsity.schedule.kind='{kind}' is not valid; expected linear or cubic")


def schedule_steps(schedule: dict[str, Any], total_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """The pruning window in optimizer steps; ``unit`` is ``step``, ``epoch`` or ``fraction`` (of training)."""
    unit = schedule.get("unit", "fraction")
    scale = {"step": 1, "epoch": steps_per_epoch, "fraction": total_steps}.get(unit)
    if scale is None:
        raise ValueError(f"sparsity.schedule.unit='{unit}' is not valid; expected step, epoch or fraction")
    start, end = round(float(schedule["start"]) * scale), round(float(schedule["end"]) * scale)
    if end < start:
        raise ValueError(f"sparsity.schedule: end ({schedule['end']}) is before start ({schedule['start']})")
    return start, end


def _keep_topk(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool mask keeping the ``n_keep`` largest entries of each row of ``scores [K, n]`` (ties: lowest index)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if n_keep > 0:
        mask.scatter_(1, scores.topk(n_keep, dim=1, sorted=False).indices, True)
    return mask


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

    for layer in sb.masked_layers().values():
        if hasattr(layer, "mask_weights"):
            m = layer.mask_weights.to(torch.uint8)
            dist.broadcast(m, 0)
            layer.mask_weights.copy_(m.bool())
    for group in sb.unit_groups().values():
        m = group.mask_units.to(torch.uint8)
        dist.broadcast(m, 0)
        group.set_units(m.bool())


class Pruner:
    """Scores a :class:`SubnetworkBackbone`'s weights per concept and writes masks at a target sparsity.

    Args:
        sb: The backbone.
        concept_loss: ``(concept, batch) -> loss`` of that concept alone, run through its own subnetwork
            (needed by ``obert``).
    """

    def __init__(self, sb: SubnetworkBackbone, concept_loss: Callable[[int, dict], torch.Tensor] | None = None):
        self.sb, self.concept_loss = sb, concept_loss
        self.scorer = dict(sb.settings["scorer"])
        self.schedule = {**DEFAULT_SCHEDULE, **sb.settings["schedule"]}
        name = self.scorer.get("name", "magnitude")
        if name not in SCORERS:
            raise ValueError(f"sparsity.scorer.name='{name}' is not valid; expected one of {SCORERS}")
        if name == "movement" and sb.granularity != "unstructured":
            raise ValueError("sparsity.scorer=movement needs granularity=unstructured (use magnitude or obert)")
        self.name = name
        if name == "movement":
            self._attach_movement()

    # ---------------------------------------------------------------- movement
    def _attach_movement(self) -> None:
        for layer in self.sb.masked_layers().values():
            if not hasattr(layer, "mask_movement"):
                layer.register_buffer("mask_movement", torch.zeros(layer.mask_weights.shape, dtype=torch.float32))

            def hook(grad, concept, layer=layer):
                w = layer.weight.detach()
                with torch.no_grad():  # every pass (single or batched) reports its concept's gradient
                    layer.mask_movement[concept].sub_(w * grad)

            layer.grad_hook = hook

    # ------------------------------------------------------------------ scores
    def _collect_grads(self, concept: int, batches: Iterable[dict]) -> dict[str, torch.Tensor]:
        """Per-batch gradients ``[m, out, in]`` of concept ``concept``'s loss w.r.t. each masked layer's weight."""
        layers = self.sb.masked_layers()
        store: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        for name, layer in layers.items():
            layer.grad_hook = lambda g, k, name=name: store[name].append(g.detach().clone())
        try:
            for batch in batches:
                self.sb.zero_grad(set_to_none=True)
                self.concept_loss(concept, batch).backward()
        finally:
            for layer in layers.values():
                layer.grad_hook = None
            if self.name == "movement":
                self._attach_movement()
            self.sb.zero_grad(set_to_none=True)
        if not all(store.values()):
            raise RuntimeError("sparsity.scorer=obert collected no gradients: is the training data empty?")
        return {n: torch.stack(g) for n, g in store.items()}

    def weight_scores(self, batches_for: Callable[[], Iterable[dict]] | None = None) -> dict[str, torch.Tensor]:
        """Scores ``[K_masks, out, in]`` per masked layer."""
        layers = self.sb.masked_layers()
        n = self.sb.state.n_masks
        if self.name == "magnitude":
            return {name: layer.weight.detach().abs().unsqueeze(0).expand(n, -1, -1) for name, layer in layers.items()}
        if self.name == "movement":
            return {name: layer.mask_movement.clone() for name, layer in layers.items()}
        if self.concept_loss is None or batches_for is None:
            raise ValueError("sparsity.scorer=obert needs training batches and a concept loss")
        block, damp = int(self.scorer.get("block", 32)), float(self.scorer.get("damp", 0.01))
        per_concept = []
        concepts = [0] if self.sb.shared else range(n)
        for k in concepts:
            grads = self._collect_grads(k, batches_for())
            if self.sb.granularity == "unstructured":
                per_concept.append({name: obert_scores(layers[name].weight.detach(), g, block, damp)
                                    for name, g in grads.items()})
            else:
                per_concept.append({name: diagonal_fisher_scores(layers[name].weight.detach(), g)
                                    for name, g in grads.items()})
        return {name: torch.stack([pc[name] for pc in per_concept]) for name in layers}

    def unit_scores(self, weight_scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Structured: a unit's score sums its producers' rows and its consumer's columns ``[K, n_units]``."""
        out = {}
        layers = self.sb.masked_layers()
        for gname, group in self.sb.unit_groups().items():
            prefix = gname.rsplit(".", 1)[0] + "."
            total = 0.0
            for lname, layer in layers.items():
                if not lname.startswith(prefix) or layer.group is not group:
                    continue
                s = weight_scores[lname]
                if self.name == "magnitude":
                    s = s.pow(2)
                per_row = s.sum(2) if layer.role == "producer" else s.sum(1)  # [K, out] or [K, in]
                total = total + per_row.view(s.shape[0], group.n_units, group.unit_size).sum(2)
            out[gname] = total
        return out

    # ------------------------------------------------------------------ masks
    @torch.no_grad()
    def prune(self, sparsity: float, batches_for: Callable[[], Iterable[dict]] | None = None) -> None:
        """Set every concept's mask to keep the top ``1 - sparsity`` of its scores (layer-wise or global)."""
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        with torch.enable_grad():
            scores = self.weight_scores(batches_for)
        distributed = _world_size() > 1
        if distributed and self.name != "magnitude":  # data-parallel weights are equal; batches are not
            scores = sync_scores(scores)
        scope = self.schedule.get("scope", "layer")
        if self.sb.granularity != "unstructured":
            scores = self.unit_scores(scores)
            targets = {n: g for n, g in self.sb.unit_groups().items()}
        else:
            targets = self.sb.masked_layers()
        if scope == "global":
            flat = torch.cat([s.reshape(s.shape[0], -1).float() for s in scores.values()], 1)
            keep = _keep_topk(flat, round((1 - sparsity) * flat.shape[1]))
            offset = 0
            for name, s in scores.items():
                n = s[0].numel()
                self._write(targets[name], keep[:, offset:offset + n].view_as(s))
                offset += n
        elif scope == "layer":
            for name, s in scores.items():
                flat = s.reshape(s.shape[0], -1).float()
                self._write(targets[name], _keep_topk(flat, round((1 - sparsity) * flat.shape[1])).view_as(s))
        else:
            raise ValueError(f"sparsity.schedule.scope='{scope}' is not valid; expected layer or global")
        if distributed:
            broadcast_masks(self.sb)
        self.sb.mask_level.fill_(sparsity)

    @staticmethod
    def _write(target, keep: torch.Tensor) -> None:
        if hasattr(target, "mask_weights"):
            target.mask_weights.copy_(keep)
        else:
            target.set_units(keep)


def _full_params(trainer, needed: bool):
    """Under FSDP, gather the sharded weights for scoring (magnitude reads them outside a forward pass)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not needed or not isinstance(trainer.strategy, FSDPStrategy):
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)


class PruningCallback(L.Callback):
    """Applies the gradual schedule during training (every ``schedule.every`` steps inside the window).

    Under data parallelism (DDP/FSDP) every rank reaches the same steps; scores are averaged over
    ranks and rank 0's masks are broadcast, so all ranks hold identical masks.
    """

    def __init__(self) -> None:
        self.pruner: Pruner | None = None
        self.window = (0, 0)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        sb = pl_module.model.backbone
        self.pruner = Pruner(sb, pl_module.concept_only_loss)
        from lightning.pytorch.strategies import FSDPStrategy

        if self.pruner.name == "obert" and isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError("sparsity.scorer=obert is not supported with trainer=fsdp; use magnitude or movement "
                             "(or trainer=ddp)")
        total = int(trainer.estimated_stepping_batches)
        per_epoch = max(total // max(int(trainer.max_epochs or 1), 1), 1)
        self.window = schedule_steps(self.pruner.schedule, total, per_epoch)

    def _batches(self, trainer, pl_module):
        m = int(self.pruner.scorer.get("batches", 4))
        loader = trainer.datamodule.loader("train", shuffle=False)
        out = []
        for i, batch in enumerate(loader):
            if i >= m:
                break
            out.append(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
        return out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        start, end = self.window
        sched = self.pruner.schedule
        every = max(int(sched.get("every", 20)), 1)
        if step < start or step > end or ((step - start) % every and step != end):
            return
        progress = 1.0 if end == start else (step - start) / (end - start)
        target = scheduled_sparsity(progress, float(sched["init_sparsity"]), float(sched["final_sparsity"]),
                                    sched.get("kind", "cubic"))
        if abs(target - float(pl_module.model.backbone.mask_level)) < 1e-9:
            return
        was_training = pl_module.training
        pl_module.eval()  # scores from a deterministic pass (no dropout)
        with _full_params(trainer, self.pruner.name == "magnitude"):
            self.pruner.prune(target, lambda: self._batches(trainer, pl_module))
        pl_module.train(was_training)
        pl_module.log("train/sparsity", target)
