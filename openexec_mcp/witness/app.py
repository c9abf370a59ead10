r"""The witness's HTTP interface: C2SP ``tlog-witness`` (SPEC §14).

- ``POST /add-checkpoint``: body ``old <size>``, consistency proof lines, an empty line, the
  checkpoint. Answers, in the order the spec checks them:

  ===== ==================================================================================
  400   malformed body, more than 63 proof lines, a malformed checkpoint, ``old`` > size
  404   the origin is not a configured log
  403   no signature by the log's trusted key, or one by it that does not verify
  409   ``old`` is not the size of the latest cosigned checkpoint; body ``<size>\n``,
        ``Content-Type: text/x.tlog.size``
  422   the consistency proof does not verify, a proof from 0 that is not empty, same size
        with another root, a size-0 checkpoint without the empty root
  200   one cosignature line (``text/plain; charset=utf-8``), after the new state is saved
  ===== ==================================================================================

- ``GET /<lowercase hex SHA-256 of the origin>/checkpoint``: the latest cosigned checkpoint with
  the log's signature and this witness's cosignature (404 when none).
- ``GET /``: name, vkey and configured origins (JSON; not in the C2SP spec, for operators).

Requests carrying a valid log signature that contradict the stored checkpoint are logged at
WARNING (``fork evidence``) and kept in the state's ``evidence`` table.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from openexec_mcp.core.tlog.checkpoint import MAX_NOTE_BYTES, parse_note, verify_note
from openexec_mcp.core.tlog.cosignature import (
    WitnessKey,
    parse_add_checkpoint,
    parse_checkpoint_body,
    sign_cosignature,
    witness_vkey,
)
from openexec_mcp.errors import MalformedInputError, VerificationError
from openexec_mcp.witness.state import WitnessState

__all__ = ["SIZE_TYPE", "Witness", "build_witness_app"]

logger = logging.getLogger("openexec_mcp.witness")

SIZE_TYPE: Final = "text/x.tlog.size"
_TEXT: Final = "text/plain; charset=utf-8"
_MAX_BODY: Final = MAX_NOTE_BYTES + 64 * 64


@dataclass(frozen=True)
class Witness:
    """One witness: its key, the logs it follows, its state.

    Attributes:
        name: The witness key name (cosignature lines).
        private_key: The witness Ed25519 key.
        logs: Trusted log keys by origin (the key's ``name`` is the log's note key name).
        state: The SQLite state.
    """

    name: str
    private_key: Ed25519PrivateKey
    logs: Mapping[str, WitnessKey]
    state: WitnessState

    def add_checkpoint(self, body: bytes) -> tuple[int, str, str]:
        """Handle one ``add-checkpoint`` body; return ``(status, content type, body text)``."""
        # Parse the request and find the log.
        try:
            request = parse_add_checkpoint(body)
            note = parse_note(request.note)
        except MalformedInputError as exc:
            return 400, _TEXT, f"malformed request: {exc.message}\n"
        origin = note.text.split("\n", 1)[0]
        log = self.logs.get(origin)
        if log is None:
            return 404, _TEXT, "unknown log origin\n"
        # The log's signature; signatures by other keys (witnesses) are ignored.
        try:
            verify_note(request.note, log.name, log.public_key)
        except VerificationError as exc:
            return 403, _TEXT, f"checkpoint not signed by the log's key: {exc.reason}\n"
        try:
            checkpoint = parse_checkpoint_body(note.text)
        except MalformedInputError as exc:
            return 400, _TEXT, f"malformed checkpoint: {exc.message}\n"
        if request.old > checkpoint.size:
            logger.warning("log %s asked to roll back: old %d above size %d", origin, request.old, checkpoint.size)
            return 400, _TEXT, "old size is above the checkpoint size\n"

        def cosign() -> str:
            return sign_cosignature(note.text, self.name, self.private_key, int(time.time()))

        verdict = self.state.add_checkpoint(request.old, request.proof, checkpoint, request.note, body, cosign)
        if verdict.evidence:
            logger.warning(
                "fork evidence: log %s signed size %d root %s, inconsistent with the cosigned size %d (%s); "
                "refused and recorded",
                origin,
                checkpoint.size,
                checkpoint.root.hex(),
                verdict.stored_size,
                verdict.reason,
            )
        if verdict.status == "conflict":
            return 409, SIZE_TYPE, f"{verdict.stored_size}\n"
        if verdict.status == "inconsistent":
            return 422, _TEXT, f"inconsistent: {verdict.reason}\n"
        logger.info("cosigned %s size %d", origin, checkpoint.size)
        return 200, _TEXT, verdict.cosignature or ""

    def monitoring_checkpoint(self, origin_hash: str) -> str | None:
        """Return the latest cosigned checkpoint of the log whose origin hashes to ``origin_hash``."""
        for origin in self.logs:
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                latest = self.state.latest(origin)
                return None if latest is None else latest.note + latest.cosignature
        return None


def build_witness_app(witness: Witness) -> Starlette:
    """Return the Starlette app of the routes above."""

    async def add_checkpoint(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_BODY:
                return PlainTextResponse("request too large\n", status_code=413)
        status, media_type, text = await anyio.to_thread.run_sync(witness.add_checkpoint, body)
        return Response(text, status_code=status, media_type=media_type)

    async def monitoring(request: Request) -> Response:
        note = await anyio.to_thread.run_sync(witness.monitoring_checkpoint, request.path_params["origin_hash"])
        if note is None:
            return PlainTextResponse("no checkpoint cosigned for this log\n", status_code=404)
        return PlainTextResponse(note, media_type=_TEXT)

    async def index(request: Request) -> Response:
        public_key = witness.private_key.public_key()
        return JSONResponse(
            {
                "service": "openexec-mcp witness",
                "name": witness.name,
                "vkey": witness_vkey(witness.name, public_key),
                "logs": sorted(witness.logs),
            }
        )

    return Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{origin_hash}/checkpoint", monitoring, methods=["GET"]),
        ]
    )
