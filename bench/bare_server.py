"""Baselines for the benchmarks: the same ``echo`` with no gate, on the same SDK and server stack.

Three modes, each a separate process so that it is measured exactly like ``openexec-mcp serve``:

- ``python bench/bare_server.py stdio``: an ``MCPServer`` over stdio.
- ``python bench/bare_server.py http PORT``: the same ``MCPServer`` over streamable HTTP at
  ``/mcp`` (the SDK's defaults, as ``openexec-mcp serve --transport http`` uses them), on
  127.0.0.1 under uvicorn with the same options.
- ``python bench/bare_server.py execute PORT``: a bare Starlette app under uvicorn whose
  ``POST /execute`` parses the JSON body and answers the shape of the SPEC §6 result envelope
  (no nonce, no receipt: exactly what the gate adds is missing).

The tool mirrors the built-in ``actions/echo.py``: a synchronous handler (so it runs on a worker
thread, as the gated one does) that returns ``{"echo": payload}`` as structured content, checked
against an advertised output schema. It takes the same arguments the benchmark sends to the gated
server (``msg`` and ``nonce``); the nonce is accepted and ignored.
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HOST = "127.0.0.1"


class EchoOut(BaseModel):
    """``{"echo": <the payload>}``, as the gated ``echo`` answers in its ``result``."""

    echo: dict[str, Any]


def build_mcp_server() -> MCPServer[Any]:
    """Return an ``MCPServer`` with one ungated ``echo`` tool."""
    server: MCPServer[Any] = MCPServer("bare-echo", log_level="WARNING")

    @server.tool(name="echo", title="Echo", structured_output=True)
    def echo(msg: str, nonce: str) -> EchoOut:  # pyright: ignore[reportUnusedFunction]
        """Return the payload unchanged, as ``{"echo": payload}``."""
        del nonce  # accepted so that both servers receive the same arguments; no replay protection here
        return EchoOut(echo={"msg": msg})

    return server


async def execute(request: Request) -> Response:
    """``POST /execute`` without the gate: parse, run ``echo`` inline, answer the envelope's shape."""
    body: Any = json.loads(await request.body())
    if not isinstance(body, dict) or body.get("action") != "echo" or not isinstance(body.get("payload"), dict):  # pyright: ignore[reportUnknownMemberType]
        return JSONResponse({"status": "denied", "error": {"code": "invalid_request", "message": "bad body"}}, 422)
    envelope: dict[str, Any] = {
        "status": "executed",
        "exec_id": secrets.token_hex(16),
        "action": "echo",
        "result": {"echo": body["payload"]},
        "error": None,
        "approval_request": None,
        "receipt": None,
        "receipt_hash": None,
    }
    return JSONResponse(envelope)


def build_execute_app() -> Starlette:
    """Return the bare Starlette app serving ``POST /execute``."""
    return Starlette(routes=[Route("/execute", execute, methods=["POST"])])


def serve(app: Any, port: int) -> None:
    """Serve ``app`` on 127.0.0.1 with the uvicorn options of ``openexec-mcp serve``."""
    uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning")).run()


def main(argv: list[str]) -> int:
    """Run one baseline server until it is stopped (see the module docstring for the modes)."""
    if len(argv) == 1 and argv[0] == "stdio":
        build_mcp_server().run("stdio")
    elif len(argv) == 2 and argv[0] == "http":
        serve(build_mcp_server().streamable_http_app(host=HOST), int(argv[1]))
    elif len(argv) == 2 and argv[0] == "execute":
        serve(build_execute_app(), int(argv[1]))
    else:
        print("usage: bare_server.py stdio | http PORT | execute PORT", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
