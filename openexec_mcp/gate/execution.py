"""The one handler runner: step 5 of the gate, shared by the gate, ``ledger resolve`` and replay.

:class:`HandlerRunner` runs an action's handler under the gate's limits and turns whatever
happens into an :class:`Execution`, the outcome to record:

- a JSON result → ``executed`` (``result_hash`` over its RFC 8785 bytes);
- :class:`~openexec_mcp.errors.ExecutionError` (timeout, an invalid result, an exception, an
  upstream ``isError``) → ``failed``, with the upstream result kept when there is one;
- :class:`~openexec_mcp.errors.NotSentError` → nothing was sent: ``not_sent`` (the gate releases
  the claim);
- :class:`~openexec_mcp.errors.OutcomeUnknownError` → sent without an answer: ``indeterminate``.

Workers are bounded per action (``limits.handler_concurrency``): sync handlers run on a pool of
daemon threads of their own (:class:`_Workers`), never on the threads store I/O uses, and a thread
abandoned after a timeout keeps its place in the pool until it really ends, so abandoned threads
cannot grow without bound: an action has at most ``handler_concurrency`` handler threads, ever.
:meth:`HandlerRunner.admit` is asked at admission (step 0): an action whose workers are all busy
is refused before anything is recorded. Calls that share a nonce never reach a handler but the
first, so they are never counted.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal

import anyio
from pydantic import BaseModel

from openexec_mcp.core.canonical import check_json_value, sha256_hex
from openexec_mcp.core.clock import format_timestamp
from openexec_mcp.errors import (
    ActionSaturatedError,
    ExecutionError,
    HandlerError,
    HandlerTimeoutError,
    InvalidResultError,
    MalformedInputError,
    NotSentError,
    OpenExecError,
    OutcomeUnknownError,
)
from openexec_mcp.registry import Action
from openexec_mcp.store.base import Outcome

__all__ = ["Execution", "ExecutionKind", "HandlerRunner"]

logger = logging.getLogger(__name__)

ExecutionKind = Literal["executed", "failed", "not_sent", "indeterminate"]


@dataclass(frozen=True, slots=True)
class Execution:
    """What one run of a handler produced.

    Attributes:
        kind: ``executed``, ``failed``, ``not_sent`` (nothing left; release the claim) or
            ``indeterminate`` (sent, no answer).
        outcome: The outcome to record (``status`` is ``executed``, ``failed`` or
            ``indeterminate``; unused for ``not_sent``).
        result: The JSON result (``executed``; or the upstream result of an ``upstream_error``).
        error: Why it did not execute, or ``None``.
    """

    kind: ExecutionKind
    outcome: Outcome
    result: Any
    error: OpenExecError | None


class _Workers:
    """A bounded pool of daemon threads for one action's sync handlers.

    At most ``capacity`` threads exist; a job waits in the queue until one is free. A thread that
    runs a handler abandoned after its timeout stays taken until the handler returns, which is
    the point: abandoned work cannot make the pool grow. Daemon threads never hold up the exit of
    the process (a stuck handler cannot block a shutdown).
    """

    def __init__(self, name: str, capacity: int) -> None:
        self._name = name
        self._capacity = capacity
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self.busy = 0
        """Handlers running now (abandoned ones included)."""

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue ``fn``; its future can be cancelled until a thread takes it."""
        future: Future[Any] = Future()
        self._jobs.put((future, fn))
        with self._lock:
            if self._idle == 0 and self._threads < self._capacity:
                self._threads += 1
                threading.Thread(target=self._work, name=f"openexec-handler-{self._name}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, fn = self._jobs.get()
            with self._lock:
                self._idle -= 1
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued: its call timed out before it ran
            with self._lock:
                self.busy += 1
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the awaiting call, which decides
                future.set_exception(exc)
            finally:
                with self._lock:
                    self.busy -= 1


class HandlerRunner:
    """Runs handlers with the timeout, result limits and per-action worker bound of the policy.

    Args:
        limits: The policy's limits: ``handler_timeout_seconds``, ``max_depth``,
            ``max_result_bytes`` and ``handler_concurrency`` (workers per action, including
            threads abandoned after a timeout that have not ended yet).
        clock: The current aware UTC time (for ``finished_at``).
    """

    def __init__(self, limits: dict[str, int], clock: Callable[[], datetime]) -> None:
        self._timeout_seconds = limits["handler_timeout_seconds"]
        self._max_depth = 2 * limits["max_depth"]  # a result may nest deeper than its input (echo wraps it)
        self._max_result_bytes = limits["max_result_bytes"]
        self._capacity = limits.get("handler_concurrency", 16)
        self._clock = clock
        self._workers: dict[str, _Workers] = {}
        self._async_busy: dict[str, int] = {}

    def busy(self, action: str) -> int:
        """Return how many handlers of ``action`` are running (abandoned threads included)."""
        workers = self._workers.get(action)
        return self._async_busy.get(action, 0) + (workers.busy if workers is not None else 0)

    def admit(self, action: Action) -> None:
        """Refuse a call of ``action`` when every worker is busy (step 0).

        Raises:
            ActionSaturatedError: ``handler_concurrency`` handlers of the action are running
                (abandoned threads included); nothing is recorded.
        """
        if self.busy(action.name) >= self._capacity:
            raise ActionSaturatedError(f"action {action.name!r} has {self._capacity} calls running; retry later")

    async def run(self, action: Action, argument: Any) -> Execution:
        """Run ``action``'s handler on its parsed argument (step 5); never raises for the handler's sake.

        The handler holds one worker slot of its action until it really ends: for a sync handler
        abandoned after its timeout, until its thread returns.

        Args:
            action: The action.
            argument: What :meth:`~openexec_mcp.registry.Action.parse_payload` returned.
        """
        try:
            with anyio.fail_after(self._timeout_seconds):
                if action.is_async:
                    output = await self._run_async(action, argument)
                else:
                    future = self._pool(action).submit(partial(action.handler, argument))
                    # Cancelling the wrapper cancels a job still queued; a running one is abandoned.
                    output = await asyncio.wrap_future(future)
            result = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
            result_bytes = check_json_value(result, max_depth=self._max_depth, max_bytes=self._max_result_bytes)
        except NotSentError as exc:
            return Execution("not_sent", self._outcome("failed", error=exc), None, exc)
        except OutcomeUnknownError as exc:
            logger.warning("action %r: sent without an answer; recorded indeterminate", action.name)
            return Execution("indeterminate", self._outcome("indeterminate", error=exc), None, exc)
        except ExecutionError as exc:
            return self._failed(exc, exc.result)
        except MalformedInputError as exc:
            return self._failed(InvalidResultError(f"the handler returned an invalid result: {exc.message}"))
        except TimeoutError:
            logger.warning("action %r timed out", action.name)
            return self._failed(
                HandlerTimeoutError(f"the handler ran longer than {self._timeout_seconds} s and was abandoned")
            )
        except Exception as exc:
            logger.exception("action %r raised", action.name)
            return self._failed(HandlerError(f"the handler raised {type(exc).__name__}"))
        outcome = Outcome("executed", result_bytes.decode(), sha256_hex(result_bytes), None, None, self._finished_at())
        return Execution("executed", outcome, result, None)

    async def _run_async(self, action: Action, argument: Any) -> Any:
        self._async_busy[action.name] = self._async_busy.get(action.name, 0) + 1
        try:
            return await action.handler(argument)
        finally:
            self._async_busy[action.name] -= 1

    def _pool(self, action: Action) -> _Workers:
        workers = self._workers.get(action.name)
        if workers is None:
            workers = self._workers[action.name] = _Workers(action.name, self._capacity)
        return workers

    def _failed(self, error: ExecutionError, result: Any = None) -> Execution:
        if result is None:
            return Execution("failed", self._outcome("failed", error=error), None, error)
        try:
            result_bytes = check_json_value(result, max_depth=self._max_depth, max_bytes=self._max_result_bytes)
        except MalformedInputError:
            return Execution("failed", self._outcome("failed", error=error), None, error)
        outcome = Outcome(
            "failed", result_bytes.decode(), sha256_hex(result_bytes), error.code, error.message, self._finished_at()
        )
        return Execution("failed", outcome, result, error)

    def _outcome(self, status: str, *, error: OpenExecError) -> Outcome:
        return Outcome(status, None, None, error.code, error.message, self._finished_at())

    def _finished_at(self) -> str:
        return format_timestamp(self._clock())
