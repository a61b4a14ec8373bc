"""Lightning callbacks that stop a run the ways users and machines do (``+callbacks.x._target_=testkit.callbacks.Crash``)."""

from __future__ import annotations

import os
import signal

import lightning as L


class _At(L.Callback):
    def __init__(self, epoch: int = 1, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.fire()

    def fire(self):
        raise NotImplementedError


class Crash(_At):
    """Simulates a killed run: raises inside epoch ``epoch`` at batch ``batch``."""

    def fire(self):
        raise SystemExit("simulated crash")


class KillAt(_At):
    """Kills its own process with SIGKILL (no clean-up, no exception handlers) at ``batch`` of ``epoch``."""

    def fire(self):
        os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(_At):
    """Sends signal ``sig`` (SIGTERM by default) to its own process at ``batch`` of ``epoch`` (as a user's kill or
    Ctrl+C would)."""

    def __init__(self, epoch: int = 1, batch: int = 1, sig: int = 15):
        super().__init__(epoch, batch)
        self.sig = sig

    def fire(self):
        os.kill(os.getpid(), self.sig)
