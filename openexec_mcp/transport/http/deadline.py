"""A read deadline for HTTP requests: a client trickling its headers or body is closed.

uvicorn's ``timeout_keep_alive`` only covers the idle time between requests, and any byte
received resets it: a client sending one header byte every few seconds holds a connection (and a
slot of ``limit_concurrency``) forever. :class:`ReadDeadlineProtocol` is uvicorn's h11 protocol
with one timer per request: armed when the connection opens and after every response, disarmed
when the request (headers and body) has fully arrived. When it fires, the connection is closed.
Long-lived answers (``GET /sse``, an MCP event stream) are not affected: the deadline covers
reading the request only.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

__all__ = ["ReadDeadlineProtocol", "read_deadline_protocol"]


class ReadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a per-request read deadline (``read_timeout_seconds``)."""

    read_timeout_seconds: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline with the connection."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Process received bytes; the deadline ends once the current request is complete."""
        super().handle_events()
        cycle = cast("RequestResponseCycle | None", self.cycle)  # None before the first request
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._disarm()

    def on_response_complete(self) -> None:
        """Give the next request on this connection a fresh deadline."""
        if not self.transport.is_closing():
            self._arm()  # before: the SDK-side call below may already read a pipelined request
        super().on_response_complete()

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout_seconds, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.logger.warning("closing a connection whose request did not arrive in %s s", self.read_timeout_seconds)
            cycle = cast("RequestResponseCycle | None", self.cycle)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()


def read_deadline_protocol(read_timeout_seconds: float) -> type[ReadDeadlineProtocol]:
    """Return the protocol class for uvicorn's ``http=`` setting with this read deadline, in seconds."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout_seconds": read_timeout_seconds})
