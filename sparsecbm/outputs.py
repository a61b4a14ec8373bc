"""Writing outputs: one place that checks a folder can take them and turns a failed write into a user error.

Every file a command writes goes through :func:`atomic_write` (JSON via :mod:`sparsecbm.jsonio`,
checkpoints via :class:`~sparsecbm.callbacks.AtomicCheckpointIO`, tables, annotations) or, for files a
library writes itself (matplotlib, safetensors, Lightning's CSV), is covered by :func:`output_error`,
which :func:`sparsecbm.errors.user_message` applies to any ``OSError`` that reaches an entry point. A
read-only folder, a full disk, a path under a file: **exit code 2** and one message naming the path, the
reason and the fix, never a traceback, and never a half-written file (temporary file + rename).

Commands check their output folder before any heavy work (:func:`check_writable`); training also checks
that the disk can hold its checkpoints (:func:`check_free_space`) before the first epoch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sparsecbm.errors import OutputError

#: errno values that mean "this location cannot take the output" (the user can fix them), with the fix.
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "a file of that name is in the way",
    errno.EISDIR: "it is a folder, not a file",
    errno.EFBIG: "the file is too large for the file system",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent); None if unknown."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def output_error(exc: BaseException, path: str | Path | None = None, option: str | None = None,
                 verb: str = "write", context: bool = False) -> OutputError | None:
    """The :class:`OutputError` for an ``OSError`` raised while writing (``None`` if it is not one a user can fix).

    Args:
        exc: The error (an ``OSError``, or one whose ``__cause__`` chain holds one, e.g. Hydra's "Unable to
            configure handler 'file'"; torch's ``RuntimeError: ... file write failed`` counts as a failed write).
        path: The file or folder being written (default: the error's own ``filename``).
        option: The option that chose the location (named in the fix), e.g. ``hydra.run.dir``.
        verb: How the message names the access (``write``; ``use`` where it may have been a read).
        context: Also follow ``__context__`` (an error raised while cleaning up after the failed write, e.g.
            torch's zip writer after ``ENOSPC``); only where ``exc`` certainly came from writing ``path``.
    """
    seen, os_error = set(), None
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _REASONS:
            os_error = cur
            break
        cur = cur.__cause__ or (cur.__context__ if context else None)
    if os_error is not None:
        reason = _REASONS[os_error.errno]
        path = path or os_error.filename
    elif isinstance(exc, RuntimeError) and "write failed" in str(exc).lower() and path is not None:
        free = free_bytes(path)
        reason = "the write failed" + (" (no space left on the device)" if free is not None and free < 1e6 else "")
    else:
        return None
    free = free_bytes(path) if path is not None else None
    where = f" ({_mb(free)} free there)" if free is not None and os_error is not None and os_error.errno in (
        errno.ENOSPC, errno.EDQUOT) else ""
    fix = (f"choose another folder with {option}=DIR" if option else
           "write somewhere else (hydra.run.dir=DIR for a run folder, out=... where a command takes it)")
    return OutputError(f"cannot {verb} {path}: {reason}{where}; {fix}, or make room/permission there. "
                       "Nothing was written in its place.")


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
