"""Writing outputs: one place that checks a folder can take them and turns a failed write into a user error.

Every file a command writes goes through :func:`atomic_write` (JSON via :mod:`sparsecbm.jsonio`,
checkpoints via :class:`~sparsecbm.callbacks.AtomicCheckpointIO`, tables, annotations) or, for files a
library writes itself (matplotlib, safetensors, Lightning's CSV), is covered by
:func:`sparsecbm.errors.output_error`, which :func:`sparsecbm.errors.user_message` applies to any ``OSError``
that reaches an entry point. A
read-only folder, a full disk, a path under a file: **exit code 2** and one message naming the path, the
reason and the fix, never a traceback, and never a half-written file (temporary file + rename).

Commands check their output folder before any heavy work (:func:`check_writable`); training also checks
that the disk can hold its checkpoints (:func:`check_free_space`) before the first epoch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sparsecbm.errors import OutputError, free_bytes, output_error


def check_writable(folder: str | Path, option: str = "hydra.run.dir") -> Path:
    """Create ``folder`` if needed and prove it takes a small file; else an :class:`OutputError` naming ``option``.

    Catches a read-only folder or file system, a path under a file, no permission and a full disk (the
    4 kB probe fails there) before any model loads.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option}={folder} is a file, not a folder; pass a folder path")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{option}={folder}: {parent} is a file, not a folder; pass a folder path")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        err = output_error(e, folder, option)
        if err is None:
            raise
        raise err from None
    return folder


def check_free_space(folder: str | Path, needed: int, what: str, option: str = "hydra.run.dir") -> None:
    """An :class:`OutputError` when the file system of ``folder`` has less than ``needed`` bytes free."""
    from sparsecbm.errors import _mb

    free = free_bytes(folder)
    if free is not None and free < needed:
        raise OutputError(f"{folder} has {_mb(free)} free, but {what} needs about {_mb(needed)}; free space or "
                          f"choose another folder with {option}=DIR")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open ``<path>.tmp`` for writing; on success fsync it and rename it over ``path``.

    A failed write (read-only, no space, a file in the way) removes the temporary file and raises the
    :class:`OutputError` of :func:`output_error`; ``path`` keeps its old content (or stays absent).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **({} if "b" in mode else {"encoding": encoding, "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        err = output_error(e, path, context=True)
        if err is None:
            raise
        raise err from None


def write_text(path: str | Path, text: str) -> Path:
    """``text`` into ``path`` atomically (:func:`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """A matplotlib figure as a PNG at ``path``, atomically (:func:`atomic_write`), then closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
