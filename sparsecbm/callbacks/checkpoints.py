"""The run's two checkpoints, each holding only what it is for, and valid after the run folder moves.

- ``best.ckpt`` (``optimizer_state: false``): the model weights, the sparsecbm metadata and the callbacks'
  state, without the optimizer's moment estimates (twice the trainable weights with AdamW) or the LR
  schedule: it is read to evaluate, explain and serve, never to continue training. A third of the size.
- ``last.ckpt``: everything, after every epoch: what ``ckpt_path=last`` resumes from. A finished run
  removes it (``keep_last_checkpoint=true`` keeps it: to train on for more epochs).

Both follow a moved run folder: Lightning only reloads a checkpoint callback's state (best score, best
path) when the folder is the one it was saved in; here the stored paths are rewritten to the new folder
when the files are there, so a run copied or moved elsewhere resumes with its best checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from weakref import proxy

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

#: what ``best.ckpt`` leaves out (restoring an optimizer needs them; evaluating never does)
OPTIMIZER_KEYS = ("optimizer_states", "lr_schedulers")


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``optimizer_state`` (false: leave out :data:`OPTIMIZER_KEYS`) and moved-folder
    resume. Every other argument is ``ModelCheckpoint``'s."""

    def __init__(self, *args: Any, optimizer_state: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.optimizer_state = bool(optimizer_state)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if self.optimizer_state:
            return super()._save_checkpoint(trainer, filepath)
        # a full dump (every callback's on_save_checkpoint runs: the sparsecbm metadata), then the optimizer
        # state dropped; Lightning's save_weights_only would also skip the callbacks' hooks
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        for key in OPTIMIZER_KEYS:
            checkpoint.pop(key, None)
        trainer.strategy.save_checkpoint(checkpoint, filepath)
        trainer.strategy.barrier("Trainer.save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and os.path.abspath(saved) != os.path.abspath(self.dirpath):
            state_dict = moved(state_dict, saved, self.dirpath)
        super().load_state_dict(state_dict)


def moved(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``state`` with every path under ``old`` rewritten to ``new`` (when the file exists there), and
    ``dirpath=new``; a path whose file is not in ``new`` is left as it was."""

    def move(path: Any) -> Any:
        if not isinstance(path, str) or not path:
            return path
        try:
            rel = Path(path).relative_to(old)
        except ValueError:
            return path
        target = Path(new) / rel
        return str(target) if target.exists() else path

    out = dict(state)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in out:
            out[key] = move(out[key])
    if isinstance(out.get("best_k_models"), dict):
        out["best_k_models"] = {move(k): v for k, v in out["best_k_models"].items()}
    out["dirpath"] = new
    return out


class CommitRun(Callback):
    """Marks the run folder as started once training really starts (after a resumed checkpoint loaded):
    a failure before that leaves the folder as it was (:func:`sparsecbm.runs.commit`)."""

    def on_train_start(self, trainer, pl_module) -> None:
        from sparsecbm.runs import commit

        commit()


def remove_last(last: str | Path, best: str | None) -> int:
    """Remove ``last.ckpt`` of a finished run (it only serves to resume); returns the bytes freed. Kept when
    there is no other checkpoint to read the model from (no ``best``)."""
    last = Path(last)
    if not best or not last.is_file() or last.resolve() == Path(best).resolve() or not Path(best).is_file():
        return 0
    freed = last.stat().st_size
    last.unlink()
    return freed
