"""Small callbacks that no library ships in this form."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``<name>.tmp``, fsyncs, then renames over the target: a crash never leaves half a checkpoint.
    A full disk or a read-only folder is an :class:`~sparsecbm.errors.OutputError` (exit code 2) and the
    previous checkpoint stays (:func:`sparsecbm.outputs.atomic_write`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        from sparsecbm.outputs import atomic_write

        with atomic_write(Path(path), "wb") as f:
            torch.save(checkpoint, f)


class EpochSeed(L.Callback):
    """Re-seeds torch at every epoch start from (seed, epoch).

    Dropout and any other randomness inside an epoch then depend only on the seed and the
    epoch number, so a run resumed from an epoch-end checkpoint reproduces the uninterrupted run.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.seed * 1_000_003 + trainer.current_epoch)


class Throughput(L.Callback):
    """Training examples per second, counting only time spent inside training batches."""

    def __init__(self) -> None:
        self.examples, self.seconds, self._t0 = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.examples += int(batch["label"].shape[0])
            self._t0 = None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.examples, self.seconds = state_dict["examples"], state_dict["seconds"]


class CheckpointMetadata(L.Callback):
    """Writes the :class:`CheckpointMeta` of the module being trained into every checkpoint the trainer saves
    (``train`` adds it; add it to a ``Trainer`` you build yourself so that
    :func:`~sparsecbm.checkpoint.load_model` reads its files).
    The module needs ``model``, ``cbm``, ``run_config`` and ``head_lr`` (:class:`~sparsecbm.lit.CBMLitModule`)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        from sparsecbm.checkpoint import CHECKPOINT_KEY, CheckpointMeta

        meta = CheckpointMeta.of(pl_module.model, pl_module.cbm, pl_module.run_config, pl_module.head_lr)
        checkpoint[CHECKPOINT_KEY] = meta.to_dict()
