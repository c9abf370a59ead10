"""One long-lived writer thread per store: queued write operations, group commit (SPEC §4, §7).

Every write of a SQL store runs on its :class:`Writer` thread, the only user of the write
connection. The thread takes the first queued operation, then everything else already queued
(up to :data:`MAX_BATCH` operations, waiting at most ``window_seconds`` for more, 0 by default:
operations that arrive while the previous batch is committing form the next one), and runs them
in order inside ONE transaction, each in its own savepoint, so that one failing operation rolls
back only its own writes. The batch then commits once (one fsync); only then does each caller
learn its own result, so nothing acknowledged can be lost in a crash. A failed commit rolls the
whole batch back and every caller of it gets the error: the ledger's ``seq``, ``prev`` and tree
nodes were assigned in queue order inside the transaction, so they stay gap-free either way.

Callers on other threads block on a :class:`concurrent.futures.Future`; callers on the event
loop await it (:func:`wait`) with no worker-thread hop: the writer completes the future and
asyncio wakes the awaiting task through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, Protocol, TypeVar

import anyio

__all__ = ["MAX_BATCH", "Batch", "Writer", "wait"]

logger = logging.getLogger("openexec_mcp.store.writer")

_T = TypeVar("_T")
_C = TypeVar("_C")

MAX_BATCH = 64
"""Operations committed together at most (bounds the latency one batch adds to its first caller)."""


class Batch(Protocol[_C]):
    """How a backend opens, commits and abandons one group transaction on its write connection."""

    def begin(self) -> _C:
        """Start the transaction; return the connection the batch runs on."""
        ...

    def commit(self, conn: _C) -> None:
        """Commit (durably, per the backend's settings); raise if it did not."""
        ...

    def abandon(self, conn: _C) -> None:
        """Roll back whatever is open and give the connection back; never raise."""
        ...

    def retry(self, conn: _C) -> bool:
        """Tell whether the batch died before its commit was sent (e.g. a dropped connection): run it again once."""
        ...


class _Op:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


_STOP = object()


class Writer(Generic[_C]):
    """The thread that owns a store's write connection and commits queued operations in groups.

    Args:
        batch: The backend's transaction hooks.
        name: The thread's name (logs, py-spy).
        on_failure: Maps an exception raised by ``batch.begin``/``commit`` to the one every caller
            of the batch gets (e.g. the generic ``StoreUnavailableError``).
        window_seconds: How long the thread waits for more operations once it has one and others
            are arriving (0: take only what is already queued). Bounded by :data:`MAX_BATCH`.
    """

    def __init__(
        self,
        batch: Batch[_C],
        *,
        name: str,
        on_failure: Callable[[BaseException], BaseException],
        window_seconds: float = 0.0,
    ) -> None:
        self._batch = batch
        self._on_failure = on_failure
        self._window = window_seconds
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: _C | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        """Committed batches (for tests and the bench: operations / batches is the grouping)."""
        self.operations = 0

    @property
    def connection(self) -> _C | None:
        """The open batch's connection, when called on the writer thread inside a batch; else ``None``."""
        if threading.current_thread() is self._thread:
            return self._conn
        return None

    def on_thread(self) -> bool:
        """Tell whether the caller is the writer thread."""
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], _T]) -> Future[_T]:
        """Queue ``fn`` (run on the writer thread inside a group transaction); return its future.

        The future completes after the batch holding ``fn`` committed, with ``fn``'s result or
        exception; if the commit fails, with the mapped commit error.

        Raises:
            BaseException: The writer is closed (``on_failure`` of a :class:`RuntimeError`).
        """
        if self._closed:
            raise self._on_failure(RuntimeError("the store writer is closed"))
        op = _Op(fn)
        self._queue.put(op)
        return op.future

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` through the writer and wait for its committed result (any thread but the writer's)."""
        if self.on_thread():
            raise RuntimeError("the store writer cannot wait for itself")
        return self.submit(fn).result()

    def close(self) -> None:
        """Finish every queued operation, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if not self.on_thread():
            self._thread.join()

    # -- the thread -----------------------------------------------------------------------------

    def _take(self, first: _Op) -> tuple[list[_Op], bool]:
        ops, stop = [first], False
        deadline = None
        while len(ops) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if self._window <= 0:
                    break
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self._window
                if now >= deadline:
                    break
                try:
                    item = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
            if item is _STOP:
                stop = True
                break
            ops.append(item)
        return ops, stop

    def _loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            ops, stop = self._take(item)
            self._run(ops)

    def _run(self, ops: list[_Op]) -> None:
        live = [op for op in ops if op.future.set_running_or_notify_cancel()]
        if not live:
            return
        for attempt in (1, 2):
            try:
                conn = self._batch.begin()
            except BaseException as exc:
                error = self._on_failure(exc)
                for op in live:
                    op.future.set_exception(error)
                return
            self._conn = conn
            outcomes: list[tuple[bool, Any]] = []
            try:
                for op in live:
                    try:
                        outcomes.append((True, op.fn()))
                    except BaseException as exc:
                        outcomes.append((False, exc))
            finally:
                self._conn = None
            if attempt == 1 and self._batch.retry(conn):
                self._batch.abandon(conn)  # nothing was committed: the server rolled it back
                continue
            try:
                self._batch.commit(conn)
            except BaseException as exc:
                self._batch.abandon(conn)
                error = self._on_failure(exc)
                logger.warning("a group commit of %d operations failed; none is acknowledged", len(live))
                for op in live:
                    op.future.set_exception(error)
                return
            self.batches += 1
            self.operations += len(live)
            for op, (ok, value) in zip(live, outcomes, strict=True):
                if ok:
                    op.future.set_result(value)
                else:
                    op.future.set_exception(value)
            return


async def wait(future: Future[_T]) -> _T:
    """Await a writer future on the event loop without a worker thread (shielded: a write is never orphaned).

    The writer completes the future on its thread; asyncio's ``wrap_future`` wakes this task via
    ``call_soon_threadsafe``. Cancellation of the caller is held back until the result is in, so
    a committed claim is always seen by the gate that asked for it.
    """
    with anyio.CancelScope(shield=True):
        return await asyncio.wrap_future(future)
    raise AssertionError("unreachable: a shielded scope does not swallow the return")  # pragma: no cover
