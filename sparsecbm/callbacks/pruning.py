"""The gradual pruning schedule as a Lightning callback."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import lightning as L
import torch

from sparsecbm.sparsity.pruning import Pruner

log = logging.getLogger(__name__)


def _full_params(trainer, needed: bool):
    """Under FSDP, gather the sharded weights for scoring (magnitude reads them outside a forward pass)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not needed or not isinstance(trainer.strategy, FSDPStrategy):
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)


class PruningCallback(L.Callback):
    """Applies the gradual schedule during training (every ``schedule.every`` steps inside the window).

    Score batches (scorers that need them) are ``scorer.batches`` batches drawn from the shuffled training
    split with a generator seeded by the run's seed and the step, so every update sees other examples and
    the same seed gives the same masks. Under data parallelism (DDP/FSDP) every rank reaches the same steps;
    scores are averaged over ranks and rank 0's masks are broadcast, so all ranks hold identical masks.
    Training that ends before the masks reach the final sparsity is an error.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.pruner: Pruner | None = None
        self.window = (0, 0)
        self.updates: list[tuple[int, float]] = []  # (global step, sparsity) of every mask update of this fit

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        # the module's own loss methods, which read its class weights when called: they are set in
        # on_fit_start, after this hook, so weights captured here would be the unweighted placeholders
        self.pruner = Pruner(pl_module.model.backbone, pl_module.concept_only_loss, pl_module.concept_losses,
                             seed=self.seed)
        scorer = self.pruner.scorer
        from lightning.pytorch.strategies import FSDPStrategy

        if not scorer.supports_fsdp and isinstance(trainer.strategy, FSDPStrategy):
            raise ValueError(f"sparsity scorer {scorer.name} is not supported with trainer=fsdp; use magnitude or "
                             "movement (or trainer=ddp)")
        if scorer.control:
            log.warning("sparsity scorer random: the CONTROL (arbitrary per-concept masks); its specificity is what "
                        "heads adapting to any masks give, the baseline a scorer's specificity must beat")
        elif not scorer.concept_specific:
            log.warning("sparsity scorer %s is concept-independent: every concept gets the SAME subnetwork "
                        "(a shared-mask baseline at K times the cost); use sparsity=structured (taylor) for "
                        "concept-specific subnetworks", scorer.name)
        total = int(trainer.estimated_stepping_batches)
        per_epoch = max(total // max(int(trainer.max_epochs or 1), 1), 1)
        self.window = self.pruner.schedule.window(total, per_epoch)

    def _batches(self, trainer, pl_module, step: int):
        dm = trainer.datamodule
        data = dm.splits["train"]
        m, size = self.pruner.scorer.batches, int(dm.batch_size)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 7_919 + trainer.global_rank)
        order = torch.randperm(len(data), generator=g)[: m * size].tolist()
        collate = dm.collator()
        return [pl_module.transfer_batch_to_device(collate([data[i] for i in order[j:j + size]]), pl_module.device, 0)
                for j in range(0, len(order), size)]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        target = self.pruner.schedule.target(step, self.window)
        if target is None or abs(target - float(pl_module.model.backbone.mask_level)) < 1e-9:
            return
        was_training = pl_module.training
        pl_module.eval()  # scores from a deterministic pass (no dropout)
        with _full_params(trainer, self.pruner.scorer.needs_full_params):
            self.pruner.prune(target, lambda: self._batches(trainer, pl_module, step))
        pl_module.train(was_training)
        self.updates.append((step, float(target)))
        # straight to the loggers, once per update: pl_module.log from this hook kept the value in the step
        # results, and metrics.csv repeated it on every later step until the next update
        for logger in trainer.loggers:
            logger.log_metrics({"train/sparsity": float(target)}, step=step)

    def on_train_end(self, trainer, pl_module) -> None:
        sb = pl_module.model.backbone
        if not sb.at_final_sparsity():
            raise RuntimeError(
                f"sparsity: training ended with the masks at sparsity {float(sb.mask_level):.4f}, never the final "
                f"{sb.final_sparsity} (pruning window: steps {self.window[0]}..{self.window[1]}, training ran "
                f"{trainer.global_step} steps); no checkpoint is at the final sparsity: lower sparsity.schedule.end "
                "or train longer")
