"""The one handler runner: step 5 of the gate, shared by the gate, ``ledger resolve`` and replay.

:class:`HandlerRunner` runs an action's handler under the gate's limits and turns whatever
happens into an :class:`Execution`, the outcome to record:

- a JSON result → ``executed`` (``result_hash`` over its RFC 8785 bytes);
- :class:`~openexec_mcp.errors.ExecutionError` (timeout, an invalid result, an exception, an
  upstream ``isError``) → ``failed``, with the upstream result kept when there is one;
- :class:`~openexec_mcp.errors.NotSentError` → nothing was sent: ``not_sent`` (the gate releases
  the claim);
- :class:`~openexec_mcp.errors.OutcomeUnknownError` → sent without an answer: ``indeterminate``.

Workers are bounded per action (``limits.handler_concurrency``): sync handlers run on threads of
their own limiter, never on the one store I/O uses, and a thread abandoned after a timeout keeps
its slot until it really ends, so abandoned threads cannot grow without bound.
:meth:`HandlerRunner.admit` is asked at admission (step 0): an action whose workers are all busy
is refused before anything is recorded. Calls that share a nonce never reach a handler but the
first, so they are never counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anyio
import anyio.to_thread
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


class Reservation:
    """One worker slot of an action, taken at admission and given back exactly once."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self._lock = threading.Lock()
        self._done = False

    def release(self) -> None:
        """Give the slot back (idempotent; safe from any thread)."""
        with self._lock:
            if self._done:
                return
            self._done = True
        self._release()


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
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    def busy(self, action: str) -> int:
        """Return how many workers of ``action`` are running (abandoned threads included)."""
        with self._lock:
            return self._busy.get(action, 0)

    def admit(self, action: Action) -> None:
        """Refuse a call of ``action`` when every worker is busy (step 0).

        Raises:
            ActionSaturatedError: ``handler_concurrency`` handlers of the action are running
                (abandoned threads included); nothing is recorded.
        """
        if self.busy(action.name) >= self._capacity:
            raise ActionSaturatedError(f"action {action.name!r} has {self._capacity} calls running; retry later")

    def _slot(self, action: Action) -> Reservation:
        with self._lock:
            self._busy[action.name] = self._busy.get(action.name, 0) + 1

        def release() -> None:
            with self._lock:
                self._busy[action.name] -= 1

        return Reservation(release)

    async def run(self, action: Action, argument: Any) -> Execution:
        """Run ``action``'s handler on its parsed argument (step 5); never raises for the handler's sake.

        The handler holds one worker slot of its action until it really ends: for a sync handler
        abandoned after its timeout, until its thread returns.

        Args:
            action: The action.
            argument: What :meth:`~openexec_mcp.registry.Action.parse_payload` returned.
        """
        release = self._slot(action).release
        try:
            with anyio.fail_after(self._timeout_seconds):
                if action.is_async:
                    try:
                        output = await action.handler(argument)
                    finally:
                        release()
                else:
                    body = _then(action.handler, argument, release)
                    try:
                        output = await anyio.to_thread.run_sync(
                            body, abandon_on_cancel=True, limiter=self._limiter(action)
                        )
                    except BaseException:
                        if not body.started:  # timed out waiting for a thread: it never runs
                            release()
                        raise
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

    def _limiter(self, action: Action) -> anyio.CapacityLimiter:
        limiter = self._limiters.get(action.name)
        if limiter is None:
            limiter = self._limiters[action.name] = anyio.CapacityLimiter(self._capacity)
        return limiter

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


class _then:
    """A thread body that runs the handler and then gives its slot back, whatever happens."""

    def __init__(self, handler: Callable[[Any], Any], argument: Any, release: Callable[[], None]) -> None:
        self._handler = handler
        self._argument = argument
        self._release = release
        self.started = False

    def __call__(self) -> Any:
        self.started = True
        try:
            return self._handler(self._argument)
        finally:
            self._release()
