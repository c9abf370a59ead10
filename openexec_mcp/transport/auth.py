"""Bearer-token auth for the HTTP surface (SPEC §8).

Tokens are configured only as the SHA-256 hex of the token (``[[auth.tokens]]``), each with a
``tenant_id`` and scopes (``execute``, ``approve``, ``read``). The token's tenant scopes nonces and
approvals, so tenant A can never claim, replay or poison tenant B's nonce. :class:`TokenTable` is
the SDK's ``TokenVerifier``: the SDK's ``BearerAuthBackend`` calls it once per request, app-wide,
and every route reads the outcome from ``request.user`` (``/mcp``, ``/sse`` and ``/messages/``
through the SDK, the plain routes through :class:`~openexec_mcp.transport.http.guards.Caller`).
``/health`` and ``/ready`` stay open.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from openexec_mcp.config import AuthToken

__all__ = ["TokenTable", "auth_settings"]


class TokenTable:
    """Verifies bearer tokens against their configured SHA-256 hashes.

    Args:
        tokens: The ``[[auth.tokens]]`` entries.
    """

    def __init__(self, tokens: Sequence[AuthToken]) -> None:
        self._tokens = list(tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def lookup(self, token: str) -> AuthToken | None:
        """Return the entry whose hash matches ``token`` (constant-time compare), or ``None``."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        found: AuthToken | None = None
        for entry in self._tokens:
            if hmac.compare_digest(entry.sha256, digest):
                found = entry
        return found

    async def verify_token(self, token: str) -> AccessToken | None:
        """Implement the SDK ``TokenVerifier`` protocol; ``client_id`` carries the tenant_id."""
        entry = self.lookup(token)
        if entry is None:
            return None
        return AccessToken(token="sha256:" + entry.sha256[:16], client_id=entry.tenant_id, scopes=list(entry.scopes))


def auth_settings(host: str, port: int) -> AuthSettings:
    """Return the SDK auth settings: bearer tokens required on ``/mcp`` and SSE, scope ``execute``.

    ``issuer_url`` is required by the SDK's model; openexec-mcp is not an OAuth authorization
    server, so it names this server itself and no authorization routes are served.
    """
    return AuthSettings(
        issuer_url=f"http://{host}:{port}",  # pyright: ignore[reportArgumentType]
        resource_server_url=None,
        required_scopes=["execute"],
    )
