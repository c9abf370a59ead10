"""The governance service's state and logic: approvers, watched servers, signing, history, the seed queue.

Nothing here renders HTML (``app.py`` does). Every decision is re-checked here before signing:
the request is fetched again from its execution server, its action_hash recomputed from the
action request (SPEC §3), and a mismatch refuses to sign (SPEC §13).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.approval import MAX_REASON_CHARS, sign_approval
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.grant import compile_when, sign_grant
from openexec_mcp.errors import ApprovalMalformedError, ConfigError

__all__ = [
    "Approver",
    "Decision",
    "DecisionError",
    "GovernanceConfig",
    "GovernanceService",
    "Notifier",
    "PendingRequest",
    "WatchedServer",
    "load_governance_config",
]

logger = logging.getLogger("openexec_mcp.governance")

_TIMEOUT = httpx.Timeout(10.0)
MAX_GRANT_HOURS = 8.0
"""The console offers grants of at most 8 hours (the server's default ``max_grant_ttl_seconds``)."""


@dataclass(frozen=True, slots=True)
class Approver:
    """``[[governance.approvers]]``: who may sign in, and for which tenants (``"*"``: all)."""

    sha256: str
    name: str
    tenants: tuple[str, ...]

    def may_decide(self, tenant_id: str) -> bool:
        """Return whether this approver decides for ``tenant_id``."""
        return "*" in self.tenants or tenant_id in self.tenants


@dataclass(frozen=True, slots=True)
class Notifier:
    """``[[governance.notify]]``: a webhook (``webhook_url``) or an email recipient (``email`` + SMTP)."""

    webhook_url: str | None = None
    email: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "openexec-governance@localhost"
    tenants: tuple[str, ...] = ("*",)
    """Announce only requests of these tenants (``"*"``: all)."""

    def wants(self, tenant_id: str) -> bool:
        """Return whether requests of ``tenant_id`` are announced here."""
        return "*" in self.tenants or tenant_id in self.tenants


@dataclass(frozen=True, slots=True)
class WatchedServer:
    """An execution server the console reads pending requests from and submits decisions to."""

    index: int
    url: str
    token: str | None = None


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    """The service's configuration (``[governance]`` table and ``governance serve`` options)."""

    key: Ed25519PrivateKey
    kid: str
    issuer: str
    servers: tuple[WatchedServer, ...]
    approvers: tuple[Approver, ...]
    notify: tuple[Notifier, ...] = ()
    public_url: str = "http://127.0.0.1:8700"
    api_key: str | None = None
    """The seed's ``CLAWSHIELD_API_KEY``: execution servers push requests and poll decisions with it."""
    poll_seconds: float = 2.0
    approval_ttl_seconds: int = 300
    state_dir: Path | None = None
    """Where ``decisions.jsonl`` keeps the history and the seed decisions across restarts (``None``: memory)."""


def load_governance_config(
    *, key_file: Path, servers: list[str], config_file: Path | None, token: str | None, kid: str, issuer: str,
    public_url: str, api_key: str | None, poll_seconds: float = 2.0, state_dir: Path | None = None,
) -> GovernanceConfig:  # fmt: skip
    """Build the configuration from the options and the ``[governance]`` table of ``config_file``.

    Raises:
        ConfigError: Unreadable key or config, no approver, a malformed approver or notifier.
    """
    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read governance key {key_file}: {type(exc).__name__}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{key_file} is not an Ed25519 private key")
    table: dict[str, Any] = {}
    if config_file is not None:
        try:
            table = tomllib.loads(config_file.read_text(encoding="utf-8")).get("governance", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from None
    approvers: list[Approver] = []
    for entry in table.get("approvers", []):
        digest, name, tenants = entry.get("sha256"), entry.get("name"), entry.get("tenants", ["*"])
        if not isinstance(digest, str) or len(digest) != 64 or not isinstance(name, str) or not name:
            raise ConfigError("each [[governance.approvers]] needs sha256 (64 hex) and name")
        approvers.append(Approver(digest.lower(), name, tuple(str(t) for t in tenants)))
    if not approvers:
        raise ConfigError("no [[governance.approvers]] configured: nobody could sign in")
    notifiers: list[Notifier] = []
    for entry in table.get("notify", []):
        if ("webhook_url" in entry) == ("email" in entry):
            raise ConfigError("each [[governance.notify]] needs exactly one of webhook_url or email")
        notifiers.append(
            Notifier(
                webhook_url=entry.get("webhook_url"), email=entry.get("email"),
                smtp_host=entry.get("smtp_host", "127.0.0.1"), smtp_port=int(entry.get("smtp_port", 25)),
                smtp_from=entry.get("smtp_from", "openexec-governance@localhost"),
                tenants=tuple(str(t) for t in entry.get("tenants", ["*"])),
            )
        )  # fmt: skip
    urls = servers or list(table.get("servers", []))
    watched = tuple(WatchedServer(i, url.rstrip("/"), token) for i, url in enumerate(urls))
    return GovernanceConfig(
        key=key, kid=kid, issuer=issuer, servers=watched, approvers=tuple(approvers), notify=tuple(notifiers),
        public_url=(table.get("public_url") or public_url).rstrip("/"), api_key=api_key, poll_seconds=poll_seconds,
        state_dir=state_dir,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A pending approval request as the console shows it.

    Attributes:
        source: ``"s<index>"`` for a watched server, ``"push"`` for one pushed by a server (seed API).
        request_id: The server's request id.
        tenant_id: The call's tenant.
        action_hash: What the server says the hash is (recomputed before signing).
        action_request: The whole action request, or the listing's preview when ``complete`` is false.
        created_at: RFC 3339.
        expires_at: RFC 3339.
        complete: The action request is whole (not a listing preview).
    """

    source: str
    request_id: str
    tenant_id: str
    action_hash: str
    action_request: Mapping[str, Any]
    created_at: str
    expires_at: str
    complete: bool = True

    @property
    def recomputed_hash(self) -> str | None:
        """The action_hash recomputed from the action request, or ``None`` when it is not a valid one."""
        request = self.action_request
        action, payload, nonce = request.get("action"), request.get("payload"), request.get("nonce")
        if set(request) != {"action", "payload", "nonce"} or not isinstance(action, str):
            return None
        if not isinstance(payload, dict) or not isinstance(nonce, str):
            return None
        try:
            return compute_action_hash(action, payload, nonce)  # pyright: ignore[reportUnknownArgumentType]
        except Exception:  # a value JCS cannot encode: no hash, so no signature
            return None

    @property
    def hash_matches(self) -> bool:
        """Return whether the recomputed hash is the one the server announced."""
        return self.recomputed_hash == self.action_hash


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision in the history."""

    at: str
    approver: str
    kind: str  # approve | grant | reject
    source: str
    request_id: str
    tenant_id: str
    action: str
    action_hash: str
    artifact_id: str
    detail: str
    delivered: str


class DecisionError(Exception):
    """A decision that cannot be signed or delivered; ``message`` is shown to the approver."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Seed:
    """What execution servers pushed (``POST /v1/approval-requests``) and the decisions they poll."""

    pushed: dict[str, PendingRequest] = field(default_factory=dict[str, PendingRequest])
    decisions: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])


class GovernanceService:
    """The service: reads watched servers, signs decisions, keeps history, feeds the seed API.

    Thread-safe for the few shared structures (one lock); network calls are synchronous httpx
    run on worker threads by the app.
    """

    MAX_PUSHED = 10_000
    MAX_HISTORY = 1_000

    def __init__(self, config: GovernanceConfig) -> None:
        self.config = config
        self.history: list[Decision] = []
        self.seed = _Seed()
        self._lock = threading.Lock()
        self._decided: set[tuple[str, str]] = set()
        self._cursor = 0
        self._journal = config.state_dir / "decisions.jsonl" if config.state_dir is not None else None
        self._load_journal()

    def _load_journal(self) -> None:
        """Read back the history and the seed decisions of earlier runs (one JSON object a line)."""
        if self._journal is None or not self._journal.exists():
            return
        for line in self._journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                decision = Decision(**entry["decision"])
            except (ValueError, KeyError, TypeError):
                logger.warning("skipping a malformed line of %s", self._journal)
                continue
            self.history.insert(0, decision)
            self._decided.add((decision.source, decision.request_id))
            if entry.get("seed") is not None:
                self.seed.decisions.append(entry["seed"])
                self._cursor = max(self._cursor, int(entry["seed"]["cursor"]))
        del self.history[self.MAX_HISTORY :]

    def _record(self, decision: Decision, seed: dict[str, Any] | None) -> None:
        """Keep a decision in memory and, with a state directory, in the journal (call holding the lock)."""
        self.history.insert(0, decision)
        del self.history[self.MAX_HISTORY :]
        self._decided.add((decision.source, decision.request_id))
        if self._journal is not None:
            self._journal.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._journal.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"decision": asdict(decision), "seed": seed}, sort_keys=True) + "\n")

    def _next_cursor(self) -> int:
        """Return a cursor that only grows, across restarts too (microseconds since the epoch, or one more)."""
        self._cursor = max(self._cursor + 1, time.time_ns() // 1000)
        return self._cursor

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

    def _client(self, server: WatchedServer) -> httpx.Client:
        headers = {"Authorization": f"Bearer {server.token}"} if server.token else {}
        return httpx.Client(base_url=server.url, headers=headers, timeout=_TIMEOUT)

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
                found += self._list(server)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                errors.append(f"{server.url}: {type(exc).__name__}")
        with self._lock:
            found += list(self.seed.pushed.values())
            decided = set(self._decided)
        now = format_timestamp(utc_now())
        visible = [
            item for item in found
            if approver.may_decide(item.tenant_id) and (item.source, item.request_id) not in decided
            and item.expires_at >= now[: len(item.expires_at)]
        ]  # fmt: skip
        return sorted(visible, key=lambda item: (item.created_at, item.request_id)), errors

    def _list(self, server: WatchedServer) -> list[PendingRequest]:
        items: list[PendingRequest] = []
        params = {"limit": "100"}
        with self._client(server) as client:
            for _ in range(100):  # at most 10 000 requests a listing
                answer = client.get("/approvals", params=params)
                answer.raise_for_status()
                page = answer.json()
                for item in page["approval_requests"]:
                    items.append(_pending(f"s{server.index}", item, complete=not item.get("truncated")))
                if not page.get("next_cursor"):
                    break
                params["cursor"] = str(page["next_cursor"])
        return items

    def request(self, source: str, request_id: str) -> PendingRequest | None:
        """Return one pending request with its WHOLE action request, or ``None`` when gone or unknown."""
        if source == "push":
            with self._lock:
                return self.seed.pushed.get(request_id)
        server = self.server(source)
        if server is None:
            return None
        with self._client(server) as client:
            answer = client.get(f"/approvals/{request_id}")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return _pending(source, answer.json(), complete=True)

    def tool_info(self, source: str, action: str) -> dict[str, Any] | None:
        """Return ``{"annotations", "policy", "title", "description"}`` of ``action`` from the server's tools/list.

        Best effort: ``None`` when the server cannot be asked (pushed requests, no MCP endpoint).
        """
        server = self.server(source)
        if server is None:
            return None
        try:
            return _tool_info(server, action)
        except Exception as exc:  # any failure of the MCP round trip: the page says it is unavailable
            logger.info("tools/list of %s failed: %s", server.url, type(exc).__name__)
            return None

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
                "approval_id": "ap-" + secrets.token_hex(12), "action_hash": item.action_hash,
                "issued_by": self.config.issuer, "issued_at": format_timestamp(now),
                "expires_at": format_timestamp(now + timedelta(seconds=self.config.approval_ttl_seconds)),
                "tenant_id": item.tenant_id, "kid": self.config.kid,
            }  # fmt: skip
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
            at=format_timestamp(now), approver=approver.name, kind=kind, source=source, request_id=request_id,
            tenant_id=item.tenant_id, action=action, action_hash=item.action_hash, artifact_id=artifact_id,
            detail=detail, delivered=delivered,
        )  # fmt: skip
        with self._lock:
            self._record(decision, seed_entry)
            if source == "push":
                self.seed.pushed.pop(request_id, None)
        logger.info("%s %s %s for %s by %s", kind, artifact_id, item.action_hash[:16], item.tenant_id, approver.name)
        return decision

    def revoke(self, approver: Approver, source: str, grant_id: str) -> Decision:
        """Revoke a grant this console signed, on its execution server (``POST /grants/{id}/revoke``).

        Raises:
            DecisionError: Unknown grant, another tenant's, a pushed request's (the seed API has
                no revocation), or the server refused.
        """
        with self._lock:
            granted = next((d for d in self.history if d.kind == "grant" and d.artifact_id == grant_id
                            and d.source == source), None)  # fmt: skip
        if granted is None or not approver.may_decide(granted.tenant_id):
            raise DecisionError("no such grant signed here")
        server = self.server(source)
        if server is None:
            raise DecisionError("grants delivered through the seed API cannot be revoked from here")
        try:
            with self._client(server) as client:
                answer = client.post(f"/grants/{grant_id}/revoke")
        except httpx.HTTPError as exc:
            raise DecisionError(f"cannot reach {server.url}: {type(exc).__name__}") from None
        if answer.status_code != 200:
            raise DecisionError(f"the execution server refused the revocation ({answer.status_code})")
        decision = Decision(
            at=format_timestamp(utc_now()), approver=approver.name, kind="revoke", source=source,
            request_id=granted.request_id, tenant_id=granted.tenant_id, action=granted.action,
            action_hash=granted.action_hash, artifact_id=grant_id, detail="grant revoked",
            delivered=f"submitted to {server.url}/grants/{grant_id}/revoke",
        )  # fmt: skip
        with self._lock:
            self._record(decision, None)
        return decision

    def _grant(
        self, item: PendingRequest, action: str, form: Mapping[str, str], now: Any
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
            "grant_id": "gr-" + secrets.token_hex(12), "tenant_id": item.tenant_id, "issued_by": self.config.issuer,
            "issued_at": format_timestamp(now), "expires_at": format_timestamp(now + timedelta(hours=hours)),
            "kid": self.config.kid, "actions": patterns, "max_uses": uses,
        }  # fmt: skip
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
                entry = {"cursor": self._next_cursor(), "kind": "grant" if kind == "grant" else "approval",
                         "artifact": artifact}  # fmt: skip
                self.seed.decisions.append(entry)
            return "queued for the server's next poll", entry
        server = self.server(source)
        if server is None:
            raise DecisionError("unknown server")
        try:
            with self._client(server) as client:
                answer = client.post(route, json=artifact)
        except httpx.HTTPError as exc:
            raise DecisionError(f"cannot reach {server.url}: {type(exc).__name__}") from None
        if answer.status_code not in (200, 201):
            try:
                code = answer.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = str(answer.status_code)
            raise DecisionError(f"the execution server refused the signed decision: {code}")
        return f"submitted to {server.url}{route}", None

    # -- the seed API (SPEC §13) ----------------------------------------------------------------

    def push(self, body: Mapping[str, Any]) -> PendingRequest:
        """Record a request pushed by an execution server (``POST /v1/approval-requests``).

        Raises:
            DecisionError: The body is not a pending request.
        """
        try:
            item = _pending("push", body, complete=True)
        except (KeyError, TypeError, ValueError):
            raise DecisionError(
                "expected {request_id, tenant_id, action_hash, action_request, created_at, expires_at}"
            ) from None
        with self._lock:
            if len(self.seed.pushed) >= self.MAX_PUSHED and item.request_id not in self.seed.pushed:
                oldest = min(self.seed.pushed.values(), key=lambda p: p.created_at)
                self.seed.pushed.pop(oldest.request_id)
            self.seed.pushed[item.request_id] = item
        return item

    def decisions_since(self, since: int, limit: int = 100) -> dict[str, Any]:
        """Return ``{"decisions": [{cursor, kind, artifact}], "next_cursor": int}`` after ``since``."""
        with self._lock:
            page = [d for d in self.seed.decisions if d["cursor"] > since][:limit]
            last = page[-1]["cursor"] if page else max(since, 0)
        return {"decisions": page, "next_cursor": last}


def _pending(source: str, item: Mapping[str, Any], *, complete: bool) -> PendingRequest:
    request = item["action_request"]
    if not isinstance(request, dict):
        raise ValueError("action_request must be an object")
    for name in ("request_id", "tenant_id", "action_hash", "created_at", "expires_at"):
        if not isinstance(item[name], str):
            raise ValueError(f"{name} must be a string")
    return PendingRequest(
        source=source, request_id=item["request_id"], tenant_id=item["tenant_id"], action_hash=item["action_hash"],
        action_request=request, created_at=item["created_at"], expires_at=item["expires_at"], complete=complete,  # pyright: ignore[reportUnknownArgumentType]
    )  # fmt: skip


def _tool_info(server: WatchedServer, action: str) -> dict[str, Any] | None:
    """tools/list over streamable HTTP (stateless JSON-RPC POSTs); find ``action``."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-06-18"}  # fmt: skip
    if server.token:
        headers["Authorization"] = f"Bearer {server.token}"
    with httpx.Client(base_url=server.url, headers=headers, timeout=_TIMEOUT) as client:
        init = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "openexec-governance", "version": "1"}}})  # fmt: skip
        session = init.headers.get("mcp-session-id")
        if session:
            client.headers["mcp-session-id"] = session
        client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = client.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    tools = _jsonrpc_result(listed)["tools"]
    for tool in tools:
        if tool.get("name") == action:
            meta: dict[str, Any] = tool.get("_meta") or {}
            policy = meta.get("dev.openexec/approval")
            return {"title": tool.get("title"), "description": tool.get("description"),
                    "annotations": tool.get("annotations") or {}, "policy": policy}  # fmt: skip
    return None


def _jsonrpc_result(answer: httpx.Response) -> dict[str, Any]:
    text = answer.text
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1]
    result: dict[str, Any] = json.loads(text)["result"]
    return result
