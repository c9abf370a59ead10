"""The ``send_email`` real action (SPEC §12): one message, to allowed recipients only.

On :mod:`aiosmtplib` (asyncio): the gate runs the handler on its event loop, so a stalled SMTP
server holds a coroutine, not a worker thread, and the gate's handler timeout can cancel it
(a ``smtplib`` call on a thread cannot be stopped). The SMTP steps are driven one by one so that
each failure is classified by how far the transaction got:

- refused before ``DATA`` was sent (a 4xx/5xx reply to MAIL, to every RCPT, to AUTH): ``failed``
  (``UpstreamError``, the result says which recipients were refused);
- no connection, or the connection lost before ``DATA`` was sent: ``UpstreamUnavailableError``
  (nothing can have been delivered; the gate releases the nonce, a retry may succeed);
- the ``DATA`` command went out and then the connection was lost or the deadline passed:
  ``OutcomeUnknownError`` (``indeterminate``: the message may have left);
- a 4xx/5xx reply to ``DATA`` or to the message: ``failed``;
- 250 after the message: ``executed`` with the server-generated ``Message-ID``.

The sender, the server and the credentials come from ``[actions.send_email]`` only.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid

import aiosmtplib
import anyio
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from openexec_mcp.builtins.config import SendEmailSettings, resolve_env
from openexec_mcp.builtins.urls import SmtpTarget, parse_smtp_url
from openexec_mcp.errors import (
    ConfigError,
    OutcomeUnknownError,
    RecipientNotAllowedError,
    UpstreamError,
    UpstreamUnavailableError,
)

__all__ = ["EmailPolicy", "SendEmailIn", "SendEmailOut", "build_email_policy", "send_email_message"]

logger = logging.getLogger("openexec_mcp.builtins.send_email")

# RFC 5321/5322 addr-spec, dot-atom local part only (no quoted strings, no comments, no display
# names, no SMTPUTF8): every accepted address has exactly one spelling on the wire.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
ADDRESS = re.compile(rf"^{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")  # fmt: skip
MAX_RECIPIENTS = 50


def _address(value: str) -> str:
    if len(value) > 254 or not ADDRESS.match(value) or len(value.partition("@")[0]) > 64:
        raise ValueError("not a plain address local@domain (no display name, CR, LF or spaces)")
    return value


class SendEmailIn(BaseModel):
    """``{"to": [addr], "cc"?: [addr], "subject", "text", "reply_to"?}`` (SPEC §12)."""

    model_config = ConfigDict(extra="forbid", title="SendEmailIn")

    to: list[str] = Field(min_length=1, max_length=MAX_RECIPIENTS, description="Recipient addresses")
    cc: list[str] = Field(default_factory=list[str], max_length=MAX_RECIPIENTS)
    subject: str = Field(max_length=500, description="One line; CR, LF and control characters are refused")
    text: str = Field(description="The plain-text body (UTF-8)")
    reply_to: str | None = None

    @field_validator("to", "cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_address(value) for value in values]

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in value):
            raise ValueError("the subject holds CR, LF or other control characters (header injection)")
        return value

    def recipients(self) -> list[str]:
        """``to`` then ``cc``, each address once (case-insensitively), in order."""
        seen: set[str] = set()
        result: list[str] = []
        for address in [*self.to, *self.cc]:
            if address.lower() not in seen:
                seen.add(address.lower())
                result.append(address)
        return result


class SendEmailOut(BaseModel):
    """``{"message_id", "accepted": [addr], "refused": {addr: reply}}`` (SPEC §12)."""

    model_config = ConfigDict(title="SendEmailOut")

    message_id: str
    accepted: list[str]
    refused: dict[str, str]


@dataclass(frozen=True, slots=True)
class EmailPolicy:
    """``[actions.send_email]`` in force, credentials read from the environment."""

    target: SmtpTarget
    from_address: str
    allowed_recipients: tuple[str, ...]
    username: SecretStr | None
    password: SecretStr | None
    timeout_seconds: float
    require_tls: bool
    tls_context: ssl.SSLContext

    def check(self, payload: SendEmailIn) -> None:
        """Refuse any address outside ``allowed_recipients`` (the precheck: pure, no I/O).

        Raises:
            RecipientNotAllowedError: The first such address of ``to``, ``cc``, ``reply_to``.
        """
        for address in [*payload.to, *payload.cc, *([payload.reply_to] if payload.reply_to else [])]:
            if not any(fnmatch.fnmatchcase(address.lower(), pattern) for pattern in self.allowed_recipients):
                raise RecipientNotAllowedError(f"recipient {address!r} is not in the server's allow list")


def build_email_policy(settings: SendEmailSettings) -> EmailPolicy:
    """Freeze ``[actions.send_email]``, reading ``username``/``password`` from the environment.

    Raises:
        ConfigError: An ``env:NAME`` is unset, only one of username/password is set, the
            ``from`` address is not a plain address, or ``ca_file`` cannot be loaded.
    """
    username = resolve_env(settings.username, "actions.send_email.username")
    password = resolve_env(settings.password, "actions.send_email.password")
    if (username is None) != (password is None):
        raise ConfigError("invalid config: actions.send_email: set both username and password, or neither")
    try:
        _address(settings.from_address)
    except ValueError:
        raise ConfigError("invalid config: actions.send_email.from: not a plain address local@domain") from None
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError):
        raise ConfigError("invalid config: actions.send_email.ca_file: cannot load that CA bundle") from None
    return EmailPolicy(
        target=parse_smtp_url(settings.smtp_url),
        from_address=settings.from_address,
        allowed_recipients=tuple(settings.allowed_recipients),
        username=username,
        password=password,
        timeout_seconds=settings.timeout_seconds,
        require_tls=settings.require_tls,
        tls_context=context,
    )


def build_message(policy: EmailPolicy, payload: SendEmailIn) -> EmailMessage:
    """Build the RFC 5322 message, with a ``Message-ID`` generated here."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = policy.from_address
    message["To"] = ", ".join(payload.to)
    if payload.cc:
        message["Cc"] = ", ".join(payload.cc)
    if payload.reply_to:
        message["Reply-To"] = payload.reply_to
    message["Subject"] = payload.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=policy.from_address.rpartition("@")[2])
    message.set_content(payload.text)
    return message


async def send_email_message(policy: EmailPolicy, payload: SendEmailIn) -> SendEmailOut:
    """Deliver the message once to the configured server; never retry.

    Raises:
        RecipientNotAllowedError: As :meth:`EmailPolicy.check` (checked again here; nothing sent).
        UpstreamUnavailableError: Nothing can have been delivered (no connection, no TLS when
            required, connection lost before ``DATA``).
        UpstreamError: The server refused (sender, every recipient, authentication, the message).
        OutcomeUnknownError: ``DATA`` was sent and no final reply came.
    """
    policy.check(payload)
    message = build_message(policy, payload)
    message_id = str(message["Message-ID"])
    recipients = payload.recipients()
    refused: dict[str, str] = {}
    target = policy.target
    client = aiosmtplib.SMTP(
        hostname=target.host, port=target.port, use_tls=target.implicit_tls, start_tls=False,
        tls_context=policy.tls_context, timeout=policy.timeout_seconds,
        local_hostname=policy.from_address.rpartition("@")[2],
    )  # fmt: skip
    accepted: list[str] = []
    data_sent = False
    try:
        with anyio.fail_after(policy.timeout_seconds):
            await client.connect()
            await client.ehlo()
            if not target.implicit_tls:
                if client.supports_extension("starttls"):
                    await client.starttls(tls_context=policy.tls_context, server_hostname=target.host)
                elif policy.require_tls or policy.password is not None:
                    raise UpstreamUnavailableError("the SMTP server offers no STARTTLS; nothing was sent")
            if policy.username is not None and policy.password is not None:
                await client.login(policy.username.get_secret_value(), policy.password.get_secret_value())
            await client.mail(policy.from_address)
            for address in recipients:
                try:
                    await client.rcpt(address)
                    accepted.append(address)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[address] = f"{exc.code} {exc.message}"[:300]
            if not accepted:
                raise UpstreamError(
                    "the SMTP server refused every recipient",
                    result=SendEmailOut(message_id=message_id, accepted=[], refused=refused).model_dump(),
                )
            data_sent = True  # from the DATA command on, the message may be delivered
            await client.data(message.as_bytes(policy=SMTP_POLICY))
    except aiosmtplib.SMTPResponseException as exc:
        # A refusal is an answer: nothing was delivered. Recipients accepted at RCPT carry the reply.
        reply = f"{exc.code} {exc.message}"[:300]
        refused.update({address: reply for address in accepted})
        result = SendEmailOut(message_id=message_id, accepted=[], refused=refused).model_dump()
        raise UpstreamError(f"the SMTP server refused: {exc.code}", result=result) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        if data_sent:
            logger.warning("send_email via %s: DATA sent, no final reply (%s); indeterminate", target.host, kind)
            raise OutcomeUnknownError(f"the message was sent to the SMTP server and no reply came ({kind})") from None
        raise UpstreamUnavailableError(f"the SMTP server could not be used; nothing was sent ({kind})") from None
    finally:
        await _quit(client)
    return SendEmailOut(message_id=message_id, accepted=accepted, refused=refused)


async def _quit(client: aiosmtplib.SMTP) -> None:
    """Say QUIT (best effort, shielded and bounded): the outcome is already decided."""
    if not client.is_connected:
        return
    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
    if client.is_connected:
        client.close()
