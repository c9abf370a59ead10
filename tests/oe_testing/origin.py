"""A real HTTP server on 127.0.0.1 for the ``http_request`` tests: records requests, misbehaves on cue.

Routes (any method):
  /ok                 200 ``hello``
  /echo               200, echoes the request's ``Authorization`` header in ``X-Echo`` and the body
  /redirect?to=U&code=N   a redirect (default 302) to ``U``
  /stall              reads the request, then never answers (until the server stops)
  /drop               reads the request, then closes the connection without a byte
  /huge?bytes=N       200 with N bytes of ``x`` (default 4 MiB), written in 64 KiB chunks
  /binary             200 with the bytes 0..255
  /status?code=N      an empty answer with status N

Every request is recorded (method, path with query, headers, body) before the answer, so a test
can check what reached the server, and that nothing did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Origin:
    """The running server: ``url(path)`` builds a URL to it; ``requests`` is what it received."""

    port: int
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            origin.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            route = url.path
            if route == "/ok":
                self._answer(200, b"hello", {"Content-Type": "text/plain"})
            elif route == "/echo":
                auth = self.headers.get("Authorization", "")
                self._answer(200, f"auth={auth};body=".encode() + body, {"X-Echo": auth})
            elif route == "/redirect":
                self._answer(int(query.get("code", "302")), b"", {"Location": query["to"]})
            elif route == "/stall":
                origin.release.wait(120)
                self.close_connection = True
            elif route == "/drop":
                self.close_connection = True
                self.connection.close()
            elif route == "/huge":
                size = int(query.get("bytes", str(4 * 1024 * 1024)))
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    while size > 0:
                        self.wfile.write(chunk[: min(size, len(chunk))])
                        size -= len(chunk)
                except OSError:
                    pass  # the client stopped reading: expected
                self.close_connection = True
            elif route == "/binary":
                self._answer(200, bytes(range(256)), {"Content-Type": "application/octet-stream"})
            elif route == "/status":
                self._answer(int(query["code"]), b"", {})
            else:
                self._answer(404, b"no such route", {})

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _serve

    return Handler


@contextmanager
def running_origin() -> Iterator[Origin]:
    """Serve on a free loopback port in a background thread; stop it (releasing stalls) on exit."""
    origin = Origin(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(origin))
    server.daemon_threads = True
    origin.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield origin
    finally:
        origin.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
