"""The project's user-facing error types and the one error path every entry point shares.

A *user error* is something the person running a command can fix: a bad data file, a config value,
a checkpoint, an intervention request. Each is raised as one of the types below with a message that
names the file / line / column / value at fault, what was expected, and the fix. :func:`entry_point`
turns them (and Hydra's own config errors: an unknown key, a malformed override, a missing
``???`` value) into **exit code 2 and a short message on stderr, without a traceback**. Anything
else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` or ``debug=true`` on the command line
shows the full traceback of user errors too.

Adopting it in a new entry point (e.g. ``sparsecbm/serve.py``) is one decorator above
``@hydra.main``; plain ``argparse`` mains work the same way:

Example:
    >>> import hydra
    >>> from sparsecbm.errors import ConfigError, entry_point
    >>> @entry_point
    ... @hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="serve")
    ... def main(cfg):
    ...     if cfg.port < 1:
    ...         raise ConfigError(f"port={cfg.port}: expected a TCP port number >= 1")
    ...     run(cfg)

Inside ``run``, raise :class:`DataError`, :class:`ConfigError`, :class:`CheckpointError` or
:class:`InterventionError`; never call ``sys.exit`` yourself.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
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


def debug_requested(argv: list[str] | None = None) -> bool:
    """``HYDRA_FULL_ERROR=1`` in the environment or ``debug=true`` among the arguments."""
    if os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0"):
        return True
    argv = sys.argv[1:] if argv is None else argv
    return any(a.lower() in ("debug=true", "debug=1", "debug=yes", "+debug=true") for a in argv)


def user_message(exc: BaseException) -> str | None:
    """The short message for a user error, or ``None`` when ``exc`` is not one (a bug: keep the traceback)."""
    if isinstance(exc, SparseCBMError):
        return str(exc)
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
    if isinstance(exc, (ConfigCompositionException, MissingConfigException, OverrideParseException)):
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


def entry_point(main: F) -> F:
    """Decorate a command's ``main`` (usually above ``@hydra.main``): user errors exit with status 2.

    Hydra is asked to re-raise (``HYDRA_FULL_ERROR=1`` while ``main`` runs), so config errors reach this
    wrapper as exceptions; :func:`user_message` decides whether an exception is the user's to fix. With
    :func:`debug_requested` every exception propagates unchanged.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        debug = debug_requested()
        saved = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            message = None if debug else user_message(exc)
            if message is None:
                raise
            report(message)
            raise SystemExit(USER_ERROR_EXIT) from None
        finally:
            if saved is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = saved

    return wrapper  # type: ignore[return-value]
