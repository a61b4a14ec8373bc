"""The explorer's pass over the data split, in the background: predictions, metrics and intervention curves
of every example, computed by a worker thread in small chunks so that predictions stay responsive.

Two pieces:

- :class:`ModelLock`: the one lock on the model. Requests (``with lock:``) go before the background pass
  (``with lock.background():``): the pass takes the lock for one chunk at a time and, between chunks, waits
  until no request is waiting. A request therefore waits at most for the chunk in flight.
- :class:`SplitPass`: the job (``idle`` -> ``running`` -> ``done`` | ``error``) with its progress
  (``done`` of ``total`` examples) and the longest time it held the lock (``lock_ms_max``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch

from sparsecbm.models.cbm import Collected, ConceptOutputs


class ModelLock:
    """A re-entrant lock where waiting requests go before the background pass.

    Python's locks are not fair: a thread that releases a lock and takes it again at once usually wins
    over a thread already waiting for it. The pass would then hold the model for the whole split.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._state = threading.Condition(threading.Lock())
        self._waiting = 0

    def __enter__(self) -> ModelLock:
        with self._state:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._state:
                self._waiting -= 1
                self._state.notify_all()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    @contextmanager
    def background(self):
        """The lock for one chunk of background work, taken once no request waits for it."""
        with self._state:
            self._state.wait_for(lambda: self._waiting == 0)
        with self._lock:
            yield


def cat_collected(parts: list[Collected]) -> Collected:
    """One :class:`~sparsecbm.models.cbm.Collected` from the chunks' (in order)."""
    outputs = [p.outputs for p in parts if p.outputs is not None]
    truth = [p.truth for p in parts if p.truth is not None]
    return Collected(ConceptOutputs.cat(outputs) if outputs else None, torch.cat(truth) if truth else None,
                     torch.cat([p.labels for p in parts]), torch.cat([p.label_logits for p in parts]))


class SplitPass:
    """One background pass over a split; thread-safe to read while it runs.

    Args:
        total: Examples in the split.
        chunks: A function returning the split's batches (one chunk each, in order).
        run_chunk: Runs the model on one batch (a :class:`Collected`); called holding the lock.
        finish: Turns the whole split's :class:`Collected` into the result (called without the lock).
        lock: The model's :class:`ModelLock`.
    """

    def __init__(self, total: int, chunks: Callable[[], Iterable[dict]], run_chunk: Callable[[dict], Collected],
                 finish: Callable[[Collected], dict[str, Any]], lock: ModelLock):
        self.total, self._chunks, self._run_chunk, self._finish, self._lock = total, chunks, run_chunk, finish, lock
        self._guard = threading.Lock()
        self.status, self.done, self.error = "idle", 0, None
        self.result: dict[str, Any] | None = None
        self.lock_ms_max, self.seconds = 0.0, None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the pass unless it runs or is done (a failed pass starts again)."""
        with self._guard:
            if self.status in ("running", "done"):
                return
            self.status, self.done, self.error, self.lock_ms_max = "running", 0, None, 0.0
            # a daemon: a server stopped with Ctrl+C never waits for the pass
            self._thread = threading.Thread(target=self._run, name="sparsecbm-split-pass", daemon=True)
            self._thread.start()

    def poll(self) -> dict[str, Any]:
        """Start the pass if it has not run, and say how far it is (:meth:`progress`). A failed pass is
        reported once (``status: error``, ``detail``) and starts again on the next poll."""
        with self._guard:
            if self.status == "error":
                failed, self.status = self.progress(), "idle"
                return failed
        self.start()
        return self.progress()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pass has ended (for scripts and tests); ``True`` when it is done."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status == "done"

    def progress(self) -> dict[str, Any]:
        """``{"status", "done", "total", "lock_ms_max"}`` (and ``"detail"`` after an error)."""
        out = {"status": self.status, "done": self.done, "total": self.total, "lock_ms_max": round(self.lock_ms_max, 1)}
        if self.error is not None:
            out["detail"] = self.error
        return out

    def _run(self) -> None:
        start, parts = time.perf_counter(), []
        try:
            for batch in self._chunks():  # batching (collation) happens outside the lock
                with self._lock.background():
                    held = time.perf_counter()
                    parts.append(self._run_chunk(batch))
                    self.lock_ms_max = max(self.lock_ms_max, 1000 * (time.perf_counter() - held))
                self.done += int(parts[-1].labels.shape[0])
            if not parts:
                raise ValueError("the split is empty")
            result = self._finish(cat_collected(parts))
        except Exception as e:  # reported to the page; the next request starts the pass again
            self.error, self.status = f"{type(e).__name__}: {e}", "error"
            return
        self.seconds = time.perf_counter() - start
        self.result = {**result, "seconds": self.seconds}
        self.status = "done"
