"""One line per message: Lightning's log records go through Hydra's handlers only, without advertising.

Lightning attaches its own console handler to the ``lightning`` logger (format ``INFO: ...``) and lets the
records propagate to the root logger too, where Hydra's console and ``<task>.log`` handlers print them
again: every Lightning line appeared twice. :func:`route_library_logs` removes Lightning's console
handlers once the root logger has handlers of its own (a Hydra job), so each record is printed once, in
Hydra's format, and lands in the run's log file. It also drops Lightning's "Tip: try installing ..."
lines and the ``isinstance(treespec, LeafSpec)`` deprecation warning that torch raises from inside
Lightning on every command (neither says anything about the user's run).
"""

from __future__ import annotations

import logging
import warnings

#: Loggers whose own console handlers duplicate the root logger's.
LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
#: Loggers Lightning's ``rank_zero_info`` writes through (filters only apply where a record is created).
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class DropAdvertising(logging.Filter):
    """Drops Lightning's product tips ("💡 Tip: For seamless cloud ..., try installing litlogger/litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not ("Tip:" in message and ("litlogger" in message or "litmodels" in message or "lightning.ai" in message))


_DROP = DropAdvertising()


def quiet_warnings() -> None:
    """Hide warnings that fire on every command and name nothing the user can change."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def route_library_logs() -> None:
    """Make every Lightning record print once (see the module docstring). Idempotent; call it after Lightning
    is imported (importing it adds the handlers) and once the root logger is configured."""
    quiet_warnings()
    for name in RANK_ZERO_LOGGERS + LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP not in logger.filters:
            logger.addFilter(_DROP)
    if not logging.getLogger().handlers:
        return  # no Hydra job (a library user): keep Lightning's own console output
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if _is_console(handler):
                logger.removeHandler(handler)
        logger.propagate = True
        if not getattr(logger, "_sparsecbm_routed", False):
            # importing Lightning later (inside a command) adds its console handler again: refuse it
            add = logger.addHandler
            logger.addHandler = lambda handler, add=add: None if _is_console(handler) else add(handler)  # type: ignore[method-assign]
            logger._sparsecbm_routed = True  # type: ignore[attr-defined]


def _is_console(handler: logging.Handler) -> bool:
    """Lightning's console handlers (plain ``StreamHandler``), not files or test captures."""
    return type(handler) is logging.StreamHandler
