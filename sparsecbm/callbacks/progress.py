"""Progress as log lines: what a run in the background (output redirected to a file) shows while it trains.

Rich's progress bar draws only on a terminal; with the output redirected it wrote nothing until the end.
:class:`ProgressLog` logs one line every ``every_n_steps`` optimizer steps and one per epoch, through the
``sparsecbm.progress`` logger (so Hydra's console handler and the run's ``train.log`` get them)::

    epoch 2/5 · step 140/460 (30%) · loss 1.287 · 41.2 ex/s · epoch ETA 0:00:41 · run ETA 0:03:52
    epoch 2/5 done in 0:01:43 · train/loss 1.301 · val/label/f1 0.5874 · val/select 0.5874 (best) · run ETA 0:03:10

On a terminal with a progress bar (:func:`interactive`) the bar stays and the lines go to the log file
only. ETAs extrapolate the time per step of this session (validation included once an epoch has ended).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

import lightning as L

log = logging.getLogger("sparsecbm.progress")


def interactive() -> bool:
    """Whether the output is a terminal (where a progress bar draws)."""
    return sys.stdout.isatty()


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=max(int(round(seconds)), 0)))


class ProgressLog(L.Callback):
    """One log line per ``every_n_steps`` steps (loss, examples/s, ETAs) and per epoch (its metrics).

    Args:
        every_n_steps: Optimizer steps between two lines.
        to_console: Also print on the console; ``None``: unless the output is a terminal with a progress bar.
    """

    def __init__(self, every_n_steps: int = 20, to_console: bool | None = None):
        if int(every_n_steps) < 1:
            raise ValueError(f"every_n_steps must be >= 1; got {every_n_steps}")
        self.every_n_steps, self.to_console = int(every_n_steps), to_console
        self._reset()

    def _reset(self) -> None:
        self.losses: list[float] = []
        self.examples, self.batch_seconds, self._t_batch = 0, 0.0, None
        self._t0 = self._t_epoch = time.perf_counter()
        self._first_step = 0

    # ------------------------------------------------------------------------------------------- output
    def _emit(self, trainer, message: str) -> None:
        if not trainer.is_global_zero:
            return
        console = self.to_console
        if console is None:
            console = not (interactive() and getattr(trainer, "progress_bar_callback", None) is not None)
        if console:
            log.info(message)
            return
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:  # the run's log file only: the bar owns the terminal
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    # -------------------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()
        self._first_step = trainer.global_step  # a resumed run: time only this session's steps

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t_epoch = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t_batch is not None:
            self.batch_seconds += time.perf_counter() - self._t_batch
            self._t_batch = None
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.losses.append(float(loss.detach()) if hasattr(loss, "detach") else float(loss))
        label = batch.get("label") if isinstance(batch, dict) else None
        self.examples += int(label.shape[0]) if label is not None else 0
        step = trainer.global_step
        if step and step % self.every_n_steps == 0 and (batch_idx + 1) % trainer.accumulate_grad_batches == 0:
            self._emit(trainer, self._step_line(trainer, batch_idx))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        metrics = trainer.callback_metrics
        shown = []
        for key in ("train/loss", "val/loss", "val/label/acc", "val/label/f1", "val/concept/f1", "val/select"):
            if key in metrics:
                shown.append(f"{key} {float(metrics[key]):.4f}")
        best = self._best_marker(trainer)
        if best and shown and shown[-1].startswith("val/select"):
            shown[-1] += best
        line = (f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done in "
                f"{_clock(time.perf_counter() - self._t_epoch)}" + "".join(f" · {s}" for s in shown))
        eta = self._run_eta(trainer)
        self._emit(trainer, line + (f" · run ETA {_clock(eta)}" if eta is not None else ""))

    # ------------------------------------------------------------------------------------------ numbers
    def _step_line(self, trainer, batch_idx: int) -> str:
        total, step = int(trainer.estimated_stepping_batches), int(trainer.global_step)
        per_epoch = max(int(trainer.num_training_batches) // max(trainer.accumulate_grad_batches, 1), 1)
        loss = sum(self.losses[-self.every_n_steps:]) / max(len(self.losses[-self.every_n_steps:]), 1)
        rate = self.examples * trainer.world_size / self.batch_seconds if self.batch_seconds else 0.0
        per_step = self._seconds_per_step(trainer)
        left_in_epoch = max(per_epoch - (batch_idx + 1) // max(trainer.accumulate_grad_batches, 1), 0)
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"step {step}/{total} ({100 * step / max(total, 1):.0f}%)", f"loss {loss:.4f}", f"{rate:.1f} ex/s"]
        if per_step is not None:
            parts += [f"epoch ETA {_clock(left_in_epoch * per_step)}", f"run ETA {_clock((total - step) * per_step)}"]
        return " · ".join(parts)

    def _seconds_per_step(self, trainer) -> float | None:
        done = trainer.global_step - self._first_step
        return (time.perf_counter() - self._t0) / done if done > 0 else None

    def _run_eta(self, trainer) -> float | None:
        per_step = self._seconds_per_step(trainer)
        if per_step is None:
            return None
        return max(int(trainer.estimated_stepping_batches) - trainer.global_step, 0) * per_step

    @staticmethod
    def _best_marker(trainer) -> str:
        cb = trainer.checkpoint_callback
        score = getattr(cb, "best_model_score", None)
        current = trainer.callback_metrics.get("val/select")
        if score is None or current is None:
            return ""
        return " (best)" if abs(float(score) - float(current)) < 1e-12 else f" (best {float(score):.4f})"
