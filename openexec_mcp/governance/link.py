"""The execution server's link to a governance service through the seed's variables (SPEC §13).

With ``CLAWSHIELD_BASE_URL`` and ``CLAWSHIELD_API_KEY`` set, the execution server

* pushes each new pending approval request to ``BASE_URL/v1/approval-requests``, and
* polls ``BASE_URL/v1/decisions?since=CURSOR`` for signed artifacts, storing each as if it had
  been posted to ``/approvals`` (approve / reject decisions) or ``/grants`` (grants): verified
  first, with the server's own keyring; the link is a courier, never a source of trust.

Everything runs on one daemon thread with a bounded queue: a call never waits for the network,
a slow or absent governance service only delays decisions, and a full queue drops pushes (the
request is still in ``GET /approvals``, and the next occurrence of the call pushes it again).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

from openexec_mcp.core.approval import parse_approval_artifact
from openexec_mcp.core.canonical import canonicalize
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.errors import ApprovalError, MalformedInputError
from openexec_mcp.store.grants import StoredGrant

if TYPE_CHECKING:
    from openexec_mcp.config import Settings
    from openexec_mcp.gate.approvals import Approver
    from openexec_mcp.store.base import ApprovalRequest, Store

__all__ = ["ClawshieldLink", "link_from_environment"]

logger = logging.getLogger("openexec_mcp.governance.link")

_QUEUE_SIZE = 1000


def link_from_environment(settings: Settings, approver: Approver, store: Store) -> ClawshieldLink | None:
    """Return a link when both ``CLAWSHIELD_BASE_URL`` and ``CLAWSHIELD_API_KEY`` are set, else ``None``.

    ``CLAWSHIELD_POLL_SECONDS`` (default 2) sets the polling interval.
    """
    base_url, api_key = os.environ.get("CLAWSHIELD_BASE_URL"), os.environ.get("CLAWSHIELD_API_KEY")
    if not base_url or not api_key:
        return None
    try:
        poll = max(0.1, float(os.environ.get("CLAWSHIELD_POLL_SECONDS", "2")))
    except ValueError:
        poll = 2.0
    return ClawshieldLink(base_url, api_key, settings=settings, approver=approver, store=store, poll_seconds=poll)


class ClawshieldLink:
    """Push pending requests to, and poll decisions from, a governance service (one daemon thread).

    Args:
        base_url: ``CLAWSHIELD_BASE_URL``.
        api_key: ``CLAWSHIELD_API_KEY`` (sent as a bearer token; never logged).
        settings: The server settings (tenant, clock skew).
        approver: Verifies artifacts exactly as ``POST /approvals`` and ``POST /grants`` do.
        store: Where verified artifacts go.
        poll_seconds: Interval between polls, seconds.
    """

    def __init__(self, base_url: str, api_key: str, *, settings: Settings, approver: Approver, store: Store,
                 poll_seconds: float = 2.0) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._settings = settings
        self._approver = approver
        self._store = store
        self._poll = poll_seconds
        self._pushes: queue.Queue[dict[str, Any]] = queue.Queue(_QUEUE_SIZE)
        self._pushed: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.cursor = 0
        self._thread = threading.Thread(target=self._run, name="openexec-clawshield-link", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        logger.info("governance link: pushing requests to and polling decisions from %s", self.base_url)
        self._thread.start()

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop the thread (pending pushes are dropped)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)

    def announce(self, request: ApprovalRequest) -> None:
        """Queue a pending request for pushing; never blocks (a full queue drops it, logged)."""
        if request.request_id in self._pushed:
            return
        body = {
            "request_id": request.request_id, "tenant_id": request.tenant_id, "action_hash": request.action_hash,
            "action_request": json.loads(request.action_request), "created_at": request.created_at,
            "expires_at": request.expires_at, "server_id": self._settings.server_id,
        }  # fmt: skip
        try:
            self._pushes.put_nowait(body)
        except queue.Full:
            logger.warning("governance link: push queue full; request %s not pushed", request.request_id)
            return
        self._pushed.add(request.request_id)
        if len(self._pushed) > 100_000:
            self._pushed.clear()
        self._wake.set()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._api_key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    self._push_all(client)
                    self.poll_once(client)
                except httpx.HTTPError as exc:
                    logger.info("governance link: %s unreachable (%s)", self.base_url, type(exc).__name__)
                except Exception:  # never let the thread die: decisions must keep flowing
                    logger.exception("governance link: unexpected error")
                self._wake.wait(self._poll)
                self._wake.clear()

    def _push_all(self, client: httpx.Client) -> None:
        while True:
            try:
                body = self._pushes.get_nowait()
            except queue.Empty:
                return
            try:
                client.post("/v1/approval-requests", json=body).raise_for_status()
            except httpx.HTTPError:
                self._pushed.discard(body["request_id"])  # try again when the call comes back
                raise

    def poll_once(self, client: httpx.Client) -> int:
        """Fetch decisions after the cursor and store the valid ones; return how many were stored."""
        answer = client.get("/v1/decisions", params={"since": str(self.cursor)})
        answer.raise_for_status()
        page = answer.json()
        stored = 0
        for decision in page.get("decisions", []):
            try:
                stored += self._store_decision(decision.get("kind"), decision.get("artifact"))
            except (ApprovalError, MalformedInputError, ValueError, TypeError, AttributeError) as exc:
                code = getattr(exc, "code", type(exc).__name__)
                logger.warning("governance link: decision %s refused: %s", decision.get("cursor"), code)
            cursor = decision.get("cursor")
            if isinstance(cursor, int) and cursor > self.cursor:
                self.cursor = cursor
        return stored

    def _store_decision(self, kind: Any, artifact: Any) -> int:
        """Verify and store one artifact, exactly like ``POST /approvals`` / ``POST /grants``."""
        now = utc_now()
        if kind == "grant":
            fields: dict[str, Any] = artifact if isinstance(artifact, dict) else {}  # pyright: ignore[reportUnknownVariableType]
            tenant = fields.get("tenant_id")
            parsed, verified = self._approver.verify_grant(artifact, tenant_id=self._tenant(tenant), now=now)
            until = format_timestamp(
                verified.expires_at + timedelta(seconds=self._settings.approvals.clock_skew_seconds)
            )
            row = StoredGrant(
                grant_id=parsed.grant_id, tenant_id=parsed.tenant_id, artifact=canonicalize(artifact).decode(),
                max_uses=parsed.max_uses, uses=0, expires_at=until, keep_until=until,
                submitted_at=format_timestamp(now), revoked_at=None,
            )  # fmt: skip
            return int(self._store.add_grant(row))
        parsed_approval = parse_approval_artifact(artifact)
        self._approver.verify(artifact, action_hash=parsed_approval.action_hash,
                              tenant_id=self._tenant(parsed_approval.tenant_id), now=now)  # fmt: skip
        return int(
            self._store.add_approval_artifact(
                parsed_approval.action_hash,
                parsed_approval.approval_id,
                canonicalize(artifact).decode(),
                format_timestamp(now),
            )
        )

    def _tenant(self, claimed: Any) -> str:
        """Return the tenant an artifact is checked against.

        With ``[[auth.tokens]]`` the server serves several tenants, and the artifact's own signed
        tenant is the one it is for (the calls of that tenant only will find it); without tokens,
        the server's single tenant.
        """
        if self._settings.auth.tokens and isinstance(claimed, str):
            return claimed
        return self._settings.tenant_id
