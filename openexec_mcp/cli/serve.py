"""``openexec-mcp serve``: run the guarded server over stdio, or HTTP (``/mcp``, SSE, SPEC §8 routes)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from openexec_mcp.config import Settings, load_settings
from openexec_mcp.errors import ConfigError

logger = logging.getLogger("openexec_mcp")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``serve`` command."""
    parser = commands.add_parser("serve", parents=[common], help="run the server (stdio by default)")
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--toolset", help="expose only the actions of this [toolsets] entry")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Start the server; returns when it stops."""
    # Imported here so that the other commands (verify, approve) start without the MCP stack.
    import anyio

    from openexec_mcp.runtime import build_runtime
    from openexec_mcp.transport.mcp import build_mcp_server

    settings = load_settings(args.config)
    if args.transport != "stdio":
        check_bind_address(settings, args.host)
    runtime = build_runtime(settings, toolset=args.toolset)
    try:
        grace = settings.mcp.shutdown_grace_seconds
        if args.transport == "stdio":
            from openexec_mcp.transport.ingress import IngressCheck

            # stdio callers are the local user: the configured tenant, no tokens.
            ingress = IngressCheck(runtime.policy.limits["max_payload_bytes"])
            mcp_server = build_mcp_server(
                runtime.gate,
                tenant_for=lambda _ctx: settings.tenant_id,
                request_state_ttl_seconds=settings.mcp.request_state_ttl_seconds,
                ingress=ingress,
                upstreams=runtime.upstreams,
            )
            anyio.run(_serve_stdio, mcp_server, ingress, runtime.gate, grace, _exit_now(runtime), runtime.upstreams)
        else:
            import uvicorn

            from openexec_mcp.transport.http.app import build_http_app
            from openexec_mcp.transport.http.deadline import read_deadline_protocol

            gate = runtime.gate

            class DrainingServer(uvicorn.Server):
                """On SIGTERM/SIGINT: /ready answers 503, new calls are refused, running ones finish.

                The listener stays open while the running calls finish, so a load balancer sees
                /ready answer 503 (and a client that retries gets ``shutting_down`` at once rather
                than a refused connection); uvicorn's own shutdown follows. A second signal stops
                the wait.
                """

                drain_deadline: float | None = None

                def handle_exit(self, sig: int, frame: Any) -> None:
                    if self.drain_deadline is None:
                        gate.admission.draining = True
                        self.drain_deadline = time.monotonic() + grace
                        logger.info("draining: waiting up to %s s for %d running call(s)", grace, gate.in_flight)
                    else:
                        super().handle_exit(sig, frame)

                async def on_tick(self, counter: int) -> bool:
                    if self.drain_deadline is None or self.should_exit:
                        return await super().on_tick(counter)
                    left = self.drain_deadline - time.monotonic()
                    if gate.in_flight and left > 0:
                        return False
                    if gate.in_flight:
                        logger.warning(
                            "%d call(s) still running after %s s; their outcome is recorded at restart",
                            gate.in_flight,
                            grace,
                        )
                    # uvicorn's shutdown then waits for open connections (answers being written,
                    # idle MCP streams) only for what is left of the grace period.
                    self.config.timeout_graceful_shutdown = max(1, int(left))
                    return True

            app = build_http_app(runtime, host=args.host, port=args.port)
            logger.info("serving HTTP on http://%s:%d (MCP at /mcp, SSE at /sse)", args.host, args.port)
            config = uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level="warning",
                timeout_graceful_shutdown=grace,
                # h11 with a read deadline: a client trickling its request is closed (issue 9).
                http=read_deadline_protocol(settings.http.request_read_timeout_seconds),
                timeout_keep_alive=max(1, round(settings.http.keep_alive_seconds)),
                h11_max_incomplete_event_size=64 * 1024,  # request line + headers, in bytes
            )
            DrainingServer(config).run()
    finally:
        runtime.close()
    return 0


_ANSWER_FLUSH_SECONDS = 0.5
"""After a stdio drain: time for the SDK's writer to put the last answers on stdout, in seconds."""


async def _serve_stdio(
    mcp_server: Any,
    ingress: Any,
    gate: Any,
    grace_seconds: float,
    exit_now: Callable[[], None],
    upstreams: Any = None,
) -> None:
    """Serve MCP over stdio until EOF, or until SIGTERM/SIGINT after draining running calls.

    After the drain the process ends through ``exit_now`` (close the store, ``os._exit``): the
    SDK reads stdin on a worker thread that only the client's next line or EOF wakes, so while a
    client keeps stdin open, cancelling the server would wait forever.
    """
    import contextlib
    import signal

    import anyio

    # Upstreams start before the first request is read, and stop after the drain (SPEC §11).
    running = upstreams.running() if upstreams is not None else contextlib.nullcontext()
    async with running, anyio.create_task_group() as tasks:

        async def serve() -> None:
            from openexec_mcp.transport.stdio import run_stdio

            await run_stdio(mcp_server, ingress)
            tasks.cancel_scope.cancel()

        tasks.start_soon(serve)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                await gate.drain(grace_seconds)
                # The SDK writes an answer after the gate returns it: let the last ones go out.
                await anyio.sleep(_ANSWER_FLUSH_SECONDS)
                if upstreams is not None:
                    with anyio.move_on_after(grace_seconds, shield=True):
                        await upstreams.stop()  # stdio upstream processes end with us
                exit_now()


def _exit_now(runtime: Any) -> Callable[[], None]:
    def exit_now() -> None:
        runtime.close()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(0)

    return exit_now


def check_bind_address(settings: Settings, host: str) -> None:
    """Refuse a non-loopback bind address when no bearer tokens are configured (SPEC §8).

    Raises:
        ConfigError: ``host`` is not loopback and ``[[auth.tokens]]`` is empty.
    """
    from openexec_mcp.transport.http.guards import is_loopback

    if settings.auth.tokens:
        return
    if not is_loopback(host):
        raise ConfigError(f"refusing to bind {host} without [[auth.tokens]]; bind 127.0.0.1 or configure tokens")
