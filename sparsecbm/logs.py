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


class ProgressLines:
    """Progress of a long loop as log lines (what a redirected run shows; a rich bar draws only on a terminal):
    ``embedding sentences: 1,280/5,113 (25%) · 41.3/s · ETA 0:01:33``, at most one every ``every_s`` seconds,
    and a last line when the loop ends.

    Example:
        >>> lines = ProgressLines("embedding sentences", total=len(todo))
        >>> for chunk in chunks:
        ...     work(chunk)
        ...     lines.advance(len(chunk))
    """

    def __init__(self, what: str, total: int, every_s: float = 10.0, logger: logging.Logger | None = None):
        import time

        self.what, self.total, self.every_s = what, int(total), float(every_s)
        self.log = logger or logging.getLogger("sparsecbm.progress")
        self.done, self._clock = 0, time.perf_counter
        self._start = self._last = self._clock()

    def advance(self, n: int = 1) -> None:
        self.done += int(n)
        now = self._clock()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self.log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        from datetime import timedelta

        elapsed = (now if now is not None else self._clock()) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        pct = 100 * self.done / self.total if self.total else 100.0
        text = f"{self.what}: {self.done:,}/{self.total:,} ({pct:.0f}%) · {rate:.1f}/s"
        if self.done >= self.total:
            return text + f" · done in {timedelta(seconds=round(elapsed))}"
        return text + (f" · ETA {timedelta(seconds=round(eta))}" if eta is not None else "")
