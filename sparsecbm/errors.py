"""The project's user-facing error types and the one error path every entry point shares.

A *user error* is something the person running a command can fix: a bad data file, a config value,
a checkpoint, an intervention request. Each is raised as one of the types below with a message that
names the file / line / column / value at fault, what was expected, and the fix. :func:`entry_point`
turns them (and Hydra's own config errors: an unknown key, a malformed override, a missing
``???`` value) into **exit code 2 and a short message on stderr, without a traceback**. Anything
else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` or ``debug=true`` on the command line
shows the full traceback of user errors too.

Adopting it in a new entry point (e.g. ``sparsecbm/serve.py``) is one decorator in place of
``@hydra.main`` (add ``debug: false`` to its config so that ``debug=true`` composes); a plain
``argparse`` main takes :func:`entry_point` instead:

Example:
    >>> from sparsecbm.config import hydra_entry_point
    >>> from sparsecbm.errors import ConfigError
    >>> @hydra_entry_point("serve")          # conf/serve.yaml
    ... def main(cfg):
    ...     if cfg.port < 1:
    ...         raise ConfigError(f"port={cfg.port}: expected a TCP port number >= 1")
    ...     run(cfg)

Tests call ``main()`` in-process with ``sys.argv`` patched and expect ``SystemExit(2)``. Inside ``run``, raise :class:`DataError`, :class:`ConfigError`, :class:`CheckpointError` or
:class:`InterventionError`; never call ``sys.exit`` yourself.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

#: Exit status of a user error (argparse's convention); 1 stays for crashes.
USER_ERROR_EXIT = 2

F = TypeVar("F", bound=Callable[..., Any])


class SparseCBMError(ValueError):
    """Base of every user-facing error: the message says what is wrong and how to fix it."""


class DataError(SparseCBMError):
    """Bad input data: the message names the file, line/column and value, and what was expected."""


class ConfigError(SparseCBMError):
    """A config value or command-line option that cannot work (unknown name, forbidden combination)."""


class CheckpointError(SparseCBMError):
    """The checkpoint file is missing, truncated, of another format version or of the wrong kind of model."""


class InterventionError(SparseCBMError):
    """An intervention request names something the model does not have, or is malformed."""


class OutputError(SparseCBMError):
    """An output cannot be written: a read-only folder, no space left, a path under a file (see
    :mod:`sparsecbm.outputs`)."""


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


#: Set while :func:`entry_point` has set ``HYDRA_FULL_ERROR`` itself (so it is not the user's request).
_FULL_ERROR_SET_BY_US = False


def debug_requested(argv: list[str] | None = None) -> bool:
    """``HYDRA_FULL_ERROR=1`` in the user's environment or ``debug=true`` among the arguments."""
    if not _FULL_ERROR_SET_BY_US and os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0"):
        return True
    argv = sys.argv[1:] if argv is None else argv
    return any(a.lower() in ("debug=true", "debug=1", "debug=yes", "+debug=true") for a in argv)


def user_message(exc: BaseException) -> str | None:
    """The short message for a user error, or ``None`` when ``exc`` is not one (a bug: keep the traceback)."""
    if isinstance(exc, SparseCBMError):
        return str(exc)
    # a file system refusal the user can fix (read-only, full disk, a file in the way, no permission), also
    # when a library wrapped it (Hydra: "Unable to configure handler 'file'" from a PermissionError)
    err = output_error(exc, verb="use")
    if err is not None:
        return str(err)
    if isinstance(exc.__cause__, SparseCBMError) and type(exc).__name__ == "InstantiationException":
        return str(exc.__cause__)  # raised while Hydra built a `_target_` (e.g. a cbm option out of range)
    try:
        from hydra.errors import (
            ConfigCompositionException,
            MissingConfigException,
            OverrideParseException,
        )
        from omegaconf.errors import (
            ConfigAttributeError,
            ConfigKeyError,
            InterpolationResolutionError,
            MissingMandatoryValue,
            ValidationError,
        )
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", None) or str(exc)
        return f"missing a required option: pass {key}=... on the command line ({exc.msg if hasattr(exc, 'msg') else exc})"
    if isinstance(exc, OverrideParseException):
        return (f"could not parse the command-line override '{exc.override}': {exc.message.splitlines()[0]}\n"
                "Overrides are key=value; quote values holding spaces, commas or brackets: key='a, b' "
                "(see https://hydra.cc/docs/advanced/override_grammar/basic)")
    if isinstance(exc, (ConfigCompositionException, MissingConfigException)):
        text = str(exc).strip()
        cause = exc.__cause__
        if cause is not None and str(cause).strip() and str(cause).strip() not in text:
            text += "\n" + str(cause).strip()
        return text + "\n(python -m <entry point> --help lists the config groups; --cfg job prints the options)"
    if isinstance(exc, (ConfigKeyError, ConfigAttributeError, InterpolationResolutionError, ValidationError)):
        return f"config error: {exc}"
    return None


def report(message: str, stream=None) -> None:
    """Print a user error the way every entry point does: ``error: ...`` and how to see the traceback."""
    stream = stream or sys.stderr
    stream.write(f"error: {message.rstrip()}\n(for the full traceback add debug=true or set HYDRA_FULL_ERROR=1)\n")
    stream.flush()


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover - no Hydra job
        return False


def user_errors(func: F) -> F:
    """Run ``func``; a user error prints :func:`report`'s message and raises ``SystemExit(2)``.

    ``SystemExit`` passes through Hydra's job runner untouched, so decorating a Hydra *task* function with
    this keeps Hydra from printing its own "Error executing job" line and traceback. Inside a multirun
    (``-m``) the message is printed and the error re-raised, so Hydra records that one job as failed and
    the sweep goes on (``trials.csv`` marks it ``failed``).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            message = None if debug_requested() else user_message(exc)
            if message is None:
                raise
            report(message)
            if _in_multirun():
                raise
            raise SystemExit(USER_ERROR_EXIT) from None

    return wrapper  # type: ignore[return-value]


def entry_point(main: F) -> F:
    """Decorate a command's ``main``: user errors, including Hydra's own config errors, exit with status 2.

    Above ``@hydra.main`` it catches what Hydra raises while composing the config (an unknown key, a
    malformed override, a missing ``???`` value): Hydra is asked to re-raise (``HYDRA_FULL_ERROR=1`` while
    ``main`` runs) rather than print. Errors raised by the task function itself are best caught inside
    it (:func:`user_errors`); :func:`hydra_entry_point` does both. Works the same on an ``argparse`` main.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        global _FULL_ERROR_SET_BY_US
        saved, previous = os.environ.get("HYDRA_FULL_ERROR"), _FULL_ERROR_SET_BY_US
        _FULL_ERROR_SET_BY_US = saved in (None, "", "0")  # the user's own HYDRA_FULL_ERROR=1 still means debug
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return user_errors(main)(*args, **kwargs)
        finally:
            _FULL_ERROR_SET_BY_US = previous
            if saved is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved

    return wrapper  # type: ignore[return-value]
