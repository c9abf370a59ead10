"""The governance service: sign-in, pending requests, decisions, revocations, the seed queue (SPEC §13).

Nothing here renders HTML (``app.py`` does). Every decision is re-checked here before signing:
the request is fetched again from its execution server, its action_hash recomputed from the
action request (SPEC §3), and a mismatch refuses to sign. The configuration is ``config.py``,
the conversation with watched servers ``watched.py``, the history ``journal.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from openexec_mcp.core.approval import MAX_REASON_CHARS, sign_approval
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.grant import compile_when, sign_grant
from openexec_mcp.errors import ApprovalMalformedError
from openexec_mcp.governance.config import Approver, GovernanceConfig, WatchedServer
from openexec_mcp.governance.journal import DecisionJournal
from openexec_mcp.governance.records import Decision, DecisionError, PendingRequest, pending_from
from openexec_mcp.governance.watched import fetch_request, list_pending, revoke_grant, submit, tool_info

__all__ = ["MAX_GRANT_HOURS", "GovernanceService"]

logger = logging.getLogger("openexec_mcp.governance")

MAX_GRANT_HOURS = 8.0
"""The console offers grants of at most 8 hours (the server's default ``max_grant_ttl_seconds``)."""


class GovernanceService:
    """The service: reads watched servers, signs decisions, keeps history, feeds the seed API.

    Thread-safe for the few shared structures (one lock); network calls are synchronous httpx
    run on worker threads by the app.
    """

    MAX_PUSHED = 10_000
    MAX_HISTORY = DecisionJournal.MAX_HISTORY

    def __init__(self, config: GovernanceConfig) -> None:
        """Serve ``config``; with a ``state_dir``, read back the decision journal of earlier runs.

        Raises:
            OSError: The journal exists but cannot be read.
        """
        self.config = config
        self._lock = threading.Lock()
        self._pushed: dict[str, PendingRequest] = {}
        self._journal = DecisionJournal(config.state_dir / "decisions.jsonl" if config.state_dir is not None else None)

    @property
    def history(self) -> list[Decision]:
        """The decisions, newest first (at most :attr:`MAX_HISTORY`); a copy."""
        with self._lock:
            return list(self._journal.history)

    # -- sign-in -------------------------------------------------------------------------------

    def approver_for_token(self, token: str) -> Approver | None:
        """Return the approver whose ``sha256`` is the SHA-256 of ``token`` (constant-time compare), or ``None``."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        found = None
        for approver in self.config.approvers:
            if hmac.compare_digest(digest, approver.sha256):
                found = approver
        return found

    # -- reading requests ----------------------------------------------------------------------

    def server(self, source: str) -> WatchedServer | None:
        """Return the watched server of ``source`` (``s<index>``), or ``None``."""
        if source.startswith("s") and source[1:].isdigit() and int(source[1:]) < len(self.config.servers):
            return self.config.servers[int(source[1:])]
        return None

    def pending(self, approver: Approver) -> tuple[list[PendingRequest], list[str]]:
        """Return the pending requests this approver may decide, oldest first, and errors reaching servers."""
        found: list[PendingRequest] = []
        errors: list[str] = []
        for server in self.config.servers:
            try:
                found += list_pending(server)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                errors.append(f"{server.url}: {type(exc).__name__}")
        with self._lock:
            found += list(self._pushed.values())
            decided = set(self._journal.decided)
        now = format_timestamp(utc_now())
        visible = [
            item
            for item in found
            if approver.may_decide(item.tenant_id)
            and (item.source, item.request_id) not in decided
            and item.expires_at >= now[: len(item.expires_at)]
        ]
        return sorted(visible, key=lambda item: (item.created_at, item.request_id)), errors

    def request(self, source: str, request_id: str) -> PendingRequest | None:
        """Return one pending request with its WHOLE action request, or ``None`` when gone or unknown.

        Raises:
            httpx.HTTPError, ValueError, KeyError: Its watched server cannot be read.
        """
        if source == "push":
            with self._lock:
                return self._pushed.get(request_id)
        server = self.server(source)
        if server is None:
            return None
        return fetch_request(server, source, request_id)

    def tool_info(self, source: str, action: str) -> dict[str, Any] | None:
        """Return ``{"annotations", "policy", "title", "description"}`` of ``action`` from the server's tools/list.

        Best effort: ``None`` when the server cannot be asked (pushed requests, no MCP endpoint).
        """
        server = self.server(source)
        if server is None:
            return None
        return tool_info(server, action)

    # -- deciding ------------------------------------------------------------------------------

    def decide(self, approver: Approver, source: str, request_id: str, form: Mapping[str, str]) -> Decision:
        """Sign and deliver one decision on a pending request (SPEC §13).

        ``form``: ``decision`` = ``approve`` | ``grant`` | ``reject``; for ``grant``: ``uses``
        (1-1000), ``hours`` (0 < h <= 8), optional ``when`` (CEL), optional ``actions``
        (patterns, comma separated; default the request's action); for ``reject``: ``reason``
        (1-500 characters).

        Raises:
            DecisionError: The request is gone, another tenant's, its hash does not match, the
                form is invalid, or the server refused the artifact.
        """
        item = self.request(source, request_id)
        if item is None:
            raise DecisionError("this request is no longer pending (executed, expired or decided elsewhere)")
        if not approver.may_decide(item.tenant_id):
            raise DecisionError("you do not decide for this tenant")
        if not item.hash_matches:
            raise DecisionError(
                "refusing to sign: the action_hash the server announced is not the hash of the action request shown"
            )
        kind = form.get("decision", "")
        now = utc_now()
        action = str(item.action_request.get("action"))
        if kind in ("approve", "reject"):
            fields: dict[str, Any] = {
                "approval_id": "ap-" + secrets.token_hex(12),
                "action_hash": item.action_hash,
                "issued_by": self.config.issuer,
                "issued_at": format_timestamp(now),
                "expires_at": format_timestamp(now + timedelta(seconds=self.config.approval_ttl_seconds)),
                "tenant_id": item.tenant_id,
                "kid": self.config.kid,
            }
            detail = "once"
            if kind == "reject":
                reason = form.get("reason", "").strip()
                if not 0 < len(reason) <= MAX_REASON_CHARS:
                    raise DecisionError(f"a rejection needs a reason of 1 to {MAX_REASON_CHARS} characters")
                fields["decision"], fields["reason"] = "reject", reason
                detail = reason
            artifact = sign_approval(fields, self.config.key)
            artifact_id, route = fields["approval_id"], "/approvals"
        elif kind == "grant":
            artifact, detail = self._grant(item, action, form, now)
            artifact_id, route = artifact["grant_id"], "/grants"
        else:
            raise DecisionError("unknown decision")
        delivered, seed_entry = self._deliver(source, route, kind, artifact)
        decision = Decision(
            at=format_timestamp(now),
            approver=approver.name,
            kind=kind,
            source=source,
            request_id=request_id,
            tenant_id=item.tenant_id,
            action=action,
            action_hash=item.action_hash,
            artifact_id=artifact_id,
            detail=detail,
            delivered=delivered,
        )
        with self._lock:
            self._journal.record(decision, seed_entry)
            if source == "push":
                self._pushed.pop(request_id, None)
        logger.info("%s %s %s for %s by %s", kind, artifact_id, item.action_hash[:16], item.tenant_id, approver.name)
        return decision

    def revoke(self, approver: Approver, source: str, grant_id: str) -> Decision:
        """Revoke a grant this console signed, on its execution server (``POST /grants/{id}/revoke``).

        Raises:
            DecisionError: Unknown grant, another tenant's, a pushed request's (the seed API has
                no revocation), or the server refused.
        """
        with self._lock:
            granted = next(
                (
                    d
                    for d in self._journal.history
                    if d.kind == "grant" and d.artifact_id == grant_id and d.source == source
                ),
                None,
            )
        if granted is None or not approver.may_decide(granted.tenant_id):
            raise DecisionError("no such grant signed here")
        server = self.server(source)
        if server is None:
            raise DecisionError("grants delivered through the seed API cannot be revoked from here")
        delivered = revoke_grant(server, grant_id)
        decision = Decision(
            at=format_timestamp(utc_now()),
            approver=approver.name,
            kind="revoke",
            source=source,
            request_id=granted.request_id,
            tenant_id=granted.tenant_id,
            action=granted.action,
            action_hash=granted.action_hash,
            artifact_id=grant_id,
            detail="grant revoked",
            delivered=delivered,
        )
        with self._lock:
            self._journal.record(decision, None)
        return decision

    def _grant(
        self, item: PendingRequest, action: str, form: Mapping[str, str], now: datetime
    ) -> tuple[dict[str, Any], str]:
        try:
            uses = int(form.get("uses", ""))
            hours = float(form.get("hours", ""))
        except ValueError:
            raise DecisionError("a grant needs a number of uses and of hours") from None
        if not 1 <= uses <= 1000 or not 0 < hours <= MAX_GRANT_HOURS:
            raise DecisionError(f"a grant has 1 to 1000 uses and lasts at most {MAX_GRANT_HOURS:g} hours")
        patterns = [p.strip() for p in form.get("actions", "").split(",") if p.strip()] or [action]
        when = form.get("when", "").strip() or None
        if when is not None:
            try:
                compile_when(when)
            except ApprovalMalformedError as exc:
                raise DecisionError(exc.message) from None
        fields: dict[str, Any] = {
            "grant_id": "gr-" + secrets.token_hex(12),
            "tenant_id": item.tenant_id,
            "issued_by": self.config.issuer,
            "issued_at": format_timestamp(now),
            "expires_at": format_timestamp(now + timedelta(hours=hours)),
            "kid": self.config.kid,
            "actions": patterns,
            "max_uses": uses,
        }
        if when is not None:
            fields["when"] = when
        detail = f"{uses} use(s) of {', '.join(patterns)} for {hours:g} h" + (f" when {when}" if when else "")
        return sign_grant(fields, self.config.key), detail

    def _deliver(
        self, source: str, route: str, kind: str, artifact: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """Submit the artifact to its server, or queue it for the seed poll; return (what happened, seed entry)."""
        if source == "push":
            with self._lock:
                entry = self._journal.queue("grant" if kind == "grant" else "approval", artifact)
            return "queued for the server's next poll", entry
        server = self.server(source)
        if server is None:
            raise DecisionError("unknown server")
        return submit(server, route, artifact), None

    # -- the seed API (SPEC §13) ----------------------------------------------------------------

    def push(self, body: Mapping[str, Any]) -> PendingRequest:
        """Record a request pushed by an execution server (``POST /v1/approval-requests``).

        At most :attr:`MAX_PUSHED` are kept; a new one beyond that drops the oldest.

        Raises:
            DecisionError: The body is not a pending request.
        """
        try:
            item = pending_from("push", body, complete=True)
        except (KeyError, TypeError, ValueError):
            raise DecisionError(
                "expected {request_id, tenant_id, action_hash, action_request, created_at, expires_at}"
            ) from None
        with self._lock:
            if len(self._pushed) >= self.MAX_PUSHED and item.request_id not in self._pushed:
                oldest = min(self._pushed.values(), key=lambda p: p.created_at)
                self._pushed.pop(oldest.request_id)
            self._pushed[item.request_id] = item
        return item

    def decisions_since(self, since: int, limit: int = 100) -> dict[str, Any]:
        """Return ``{"decisions": [{cursor, kind, artifact}], "next_cursor": int}`` after ``since``."""
        with self._lock:
            return self._journal.since(since, limit)
