"""Notifications of new pending requests (SPEC §13): a Slack-compatible webhook and email over SMTP.

Each new request (first seen on a watched server, or pushed through the seed API) is announced
once to every ``[[governance.notify]]`` entry, with a link to its page in the console. A failing
notifier is logged and never blocks the console or the other notifiers.
"""

from __future__ import annotations

import logging
import smtplib
import threading
from email.message import EmailMessage
from typing import Any

import httpx

from openexec_mcp.governance.config import Approver, Notifier
from openexec_mcp.governance.records import PendingRequest
from openexec_mcp.governance.service import GovernanceService

__all__ = ["NotificationLoop", "message_for", "send"]

logger = logging.getLogger("openexec_mcp.governance.notify")

_EVERY_TENANT = Approver(sha256="", name="notifier", tenants=("*",))
"""Notifications announce every tenant's requests (each approver then sees only their own)."""


def request_url(public_url: str, item: PendingRequest) -> str:
    """Return the console page of ``item``."""
    return f"{public_url}/requests/{item.source}/{item.request_id}"


def message_for(public_url: str, item: PendingRequest) -> dict[str, Any]:
    """Return the webhook body ``{"text", "request"}`` (``text`` is what Slack shows)."""
    action = str(item.action_request.get("action"))[:200]
    link = request_url(public_url, item)
    text = f"Approval needed: {action} for tenant {item.tenant_id[:100]} (expires {item.expires_at}): {link}"
    request = {
        "request_id": item.request_id,
        "tenant_id": item.tenant_id,
        "action": action,
        "action_hash": item.action_hash,
        "expires_at": item.expires_at,
        "url": link,
    }
    return {"text": text, "request": request}


def send(notifier: Notifier, body: dict[str, Any]) -> None:
    """Deliver one notification; raises the transport's error on failure."""
    if notifier.webhook_url is not None:
        httpx.post(notifier.webhook_url, json=body, timeout=10.0).raise_for_status()
        return
    message = EmailMessage()
    message["Subject"] = f"[openexec] approval needed: {body['request']['action']}"[:200]
    message["From"] = notifier.smtp_from
    message["To"] = str(notifier.email)
    message.set_content(body["text"] + "\n")
    with smtplib.SMTP(notifier.smtp_host, notifier.smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


class NotificationLoop:
    """A daemon thread: every ``poll_seconds``, announce requests not announced before.

    Args:
        service: The governance service (its watched servers and pushed requests).
    """

    def __init__(self, service: GovernanceService) -> None:
        self.service = service
        self._seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="governance-notify", daemon=True)

    def start(self) -> None:
        """Start the thread (no-op without notifiers)."""
        if self.service.config.notify:
            self._thread.start()

    def wake(self) -> None:
        """Look again now (a request was just pushed)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._wake.set()

    def run_once(self) -> int:
        """Announce new requests once; return how many were announced."""
        items, _ = self.service.pending(_EVERY_TENANT)
        fresh = [item for item in items if (item.source, item.request_id) not in self._seen]
        for item in fresh:
            self._seen.add((item.source, item.request_id))
            body = message_for(self.service.config.public_url, item)
            for notifier in self.service.config.notify:
                if not notifier.wants(item.tenant_id):
                    continue
                try:
                    send(notifier, body)
                except Exception as exc:  # one notifier failing never stops the others
                    logger.warning(
                        "notification to %s failed: %s", notifier.webhook_url or notifier.email, type(exc).__name__
                    )
        if len(self._seen) > 100_000:
            self._seen.clear()
        return len(fresh)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # a server down: try again next round
                logger.info("notification round failed: %s", type(exc).__name__)
            self._wake.wait(self.service.config.poll_seconds)
            self._wake.clear()
