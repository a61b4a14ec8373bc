"""The run folder of one command: checked before work starts, left as it was when the command fails early,
and the exact resume command when a training run is killed.

:func:`run_folder` wraps every command's task (:func:`sparsecbm.config.hydra_entry_point`):

- the folder must take files (:func:`sparsecbm.outputs.check_writable`): a read-only folder, a full disk
  or a path under a file is exit code 2 before any model loads;
- ``.hydra/`` (the composed config, Hydra's config and the overrides) is written by this module, not by
  Hydra (``hydra.output_subdir: null``): into a new folder at once; into a folder that already holds a
  run (a resume) only once the command has really started (:func:`commit`: training began), and then
  into ``.hydra/<task>-<n>/`` so that the run's own ``.hydra/config.yaml`` is never overwritten;
- a command that fails before it commits leaves nothing: a new folder is removed (single runs; a sweep
  keeps its failed job's folder for its trials table), an existing one gets back exactly its files and
  their sizes (the log lines a failed resume appended are cut off again);
- SIGTERM / SIGINT (Ctrl+C) end a training run with status 128 + the signal number (143 / 130) and, when it
  has a ``checkpoints/last.ckpt``, print the command that resumes it::

      interrupted by SIGTERM after 2 finished epochs; resume with:
        bash run.sh experiment=smoke hydra.run.dir=/abs/outputs/train/runs/2026-12-04_10-00-00 ckpt_path=last
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sparsecbm.outputs import check_writable, write_text

log = logging.getLogger(__name__)


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived (a ``BaseException``: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@dataclass
class RunFolder:
    """One command's output folder and what was in it when the command started."""

    path: Path
    task: str
    fresh: bool
    multirun: bool = False
    before: dict[str, int] = field(default_factory=dict)
    committed: bool = False
    hydra_files: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> None:
        self.before = {str(p.relative_to(self.path)): p.stat().st_size for p in self.path.rglob("*") if p.is_file()}
        self.before.update({str(p.relative_to(self.path)) + "/": -1 for p in self.path.rglob("*") if p.is_dir()})

    def write_hydra(self) -> None:
        """``.hydra/{config,hydra,overrides}.yaml``; in a folder that already has them, ``.hydra/<task>-<n>/``."""
        if not self.hydra_files:
            return
        target = self.path / ".hydra"
        if (target / "config.yaml").exists():
            n = 1
            while (target / f"{self.task}-{n}").exists():
                n += 1
            target = target / f"{self.task}-{n}"
        for name, text in self.hydra_files.items():
            write_text(target / name, text)

    def commit(self) -> None:
        """The command has really started: from now on its folder is kept whatever happens."""
        if not self.committed:
            self.committed = True
            if not self.fresh:
                self.write_hydra()

    def roll_back(self) -> None:
        """Undo a command that failed before :meth:`commit`: remove a new folder, restore an existing one."""
        _close_file_logs(self.path)
        if self.fresh and not self.multirun:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.fresh:
            return
        for p in sorted(self.path.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            rel = str(p.relative_to(self.path))
            with contextlib.suppress(OSError):
                if p.is_dir() and rel + "/" not in self.before:
                    shutil.rmtree(p)
                elif p.is_file() and rel not in self.before:
                    p.unlink()
                elif p.is_file() and p.stat().st_size > self.before[rel] >= 0:
                    with open(p, "r+b") as f:  # an appended log: cut back to what it was
                        f.truncate(self.before[rel])


def _close_file_logs(folder: Path) -> None:
    """Close (and detach) log file handlers writing into ``folder`` before it is removed or restored."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        filename = getattr(handler, "baseFilename", None)
        if filename and Path(filename).resolve().is_relative_to(folder.resolve()):
            handler.close()
            root.removeHandler(handler)


_CURRENT: list[RunFolder] = []


def current() -> RunFolder | None:
    """The run folder of the command running in this process (``None`` outside :func:`run_folder`)."""
    return _CURRENT[-1] if _CURRENT else None


def commit() -> None:
    """Mark the current command as started (see :meth:`RunFolder.commit`); a no-op outside a command."""
    if _CURRENT:
        _CURRENT[-1].commit()


def _hydra_files(cfg) -> tuple[Path | None, dict[str, str], bool]:
    """(output folder, the .hydra files' text, multirun?) of the running Hydra job; (None, {}, False) outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return None, {}, False
        hc = HydraConfig.get()
    except Exception:  # pragma: no cover - no Hydra job
        return None, {}, False
    files = {"config.yaml": OmegaConf.to_yaml(cfg),
             "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
             "overrides.yaml": OmegaConf.to_yaml(hc.overrides.task)}
    return Path(hc.runtime.output_dir), files, hc.mode == RunMode.MULTIRUN


def resume_command(folder: Path) -> str:
    """The command that resumes the training run in ``folder``: this command's overrides (without
    ``hydra.run.dir`` / ``ckpt_path``) plus ``hydra.run.dir=<folder> ckpt_path=last``."""
    overrides: list[str] = []
    with contextlib.suppress(Exception):
        from hydra.core.hydra_config import HydraConfig

        overrides = [str(o) for o in HydraConfig.get().overrides.task
                     if not str(o).lstrip("+~").startswith(("hydra.run.dir=", "ckpt_path="))]
    launcher = os.environ.get("SPARSECBM_LAUNCHER") or "python -m sparsecbm.train"
    parts = [*overrides, f"hydra.run.dir={folder.resolve()}", "ckpt_path=last"]
    return launcher + " " + " ".join(shlex.quote(p) for p in parts)


def _report_interrupt(folder: RunFolder | None, exc: Interrupted) -> None:
    name = signal.Signals(exc.signum).name
    last = folder.path / "checkpoints" / "last.ckpt" if folder else None
    if folder is not None and folder.task == "train" and last is not None and last.is_file():
        epochs = ""
        with contextlib.suppress(Exception):
            import torch

            epochs = f" after {int(torch.load(last, map_location='cpu', weights_only=False, mmap=True)['epoch']) + 1} " \
                     "finished epoch(s)"
        message = (f"interrupted by {name}{epochs}; the run folder keeps its last epoch-end checkpoint. "
                   f"Resume with:\n  {resume_command(folder.path)}")
    elif folder is not None and folder.task == "train" and folder.committed:
        message = (f"interrupted by {name} before the first epoch ended: there is no checkpoint to resume from; "
                   f"run the command again ({folder.path} can be deleted)")
    else:
        message = f"interrupted by {name}; nothing was kept"
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


@contextlib.contextmanager
def run_folder(cfg, task: str) -> Iterator[RunFolder | None]:
    """Run a command's task inside its run folder (see the module docstring). ``task`` is the config name."""
    path, files, multirun = _hydra_files(cfg)
    folder = None
    if any(os.environ.get(v, "0") not in ("", "0") for v in ("RANK", "LOCAL_RANK")):
        path = None  # another data-parallel rank, started by rank 0 inside its run: rank 0 owns the folder
    if path is not None:
        check_writable(path)
        fresh = not any(path.iterdir())
        folder = RunFolder(path, task, fresh, multirun, hydra_files=files)
        folder.snapshot()
        if fresh:
            folder.write_hydra()
    handlers = {}
    # training turns SIGTERM / Ctrl+C into a clean stop with a resume command; the other commands keep their
    # own handling (the explorer's server stops on Ctrl+C)
    if task == "train" and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, _raise_interrupted)
    if folder is not None:
        _CURRENT.append(folder)
    try:
        yield folder
        if folder is not None:
            folder.commit()
    except Interrupted as e:
        if folder is not None and not folder.committed:
            folder.roll_back()
        _report_interrupt(folder, e)
        raise SystemExit(128 + e.signum) from None
    except Exception:
        if folder is not None and not folder.committed:
            folder.roll_back()
        raise
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        if folder is not None:
            _CURRENT.remove(folder)
