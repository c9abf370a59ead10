"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records every message and misbehaves on cue.

``mode`` decides the answer to the message data: ``ok`` (250), ``reject`` (554), ``drop`` (the
connection is closed after the data arrived, no reply) or ``stall`` (no reply until the server
stops). Recipients starting with ``refuse`` get ``550`` at RCPT. With ``tls`` a self-signed
certificate for 127.0.0.1 is made and STARTTLS (required) and AUTH (``user``/``secret-pw``) are
turned on.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SMTP_USER = "user"
SMTP_PASSWORD = "secret-pw-7f3a91c2"


@dataclass(frozen=True)
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.content)


@dataclass
class Recorder:
    mode: str = "ok"
    delivered: list[Delivered] = field(default_factory=list)
    data_received: int = 0
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address.startswith("refuse"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_received += 1
        if self.mode == "reject":
            return "554 5.7.1 rejected by policy"
        if self.mode == "stall":
            await asyncio.sleep(120)
        self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        if self.mode == "drop":
            server.transport.close()
        return "250 2.0.0 queued"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a certificate and key for 127.0.0.1 (valid one day); return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass(frozen=True)
class SmtpServer:
    port: int
    recorder: Recorder
    ca_file: Path | None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@contextmanager
def running_smtp(port: int, *, tls_dir: Path | None = None) -> Iterator[SmtpServer]:
    """Run the server on ``port`` (a free one) in its thread; stop it on exit."""
    import ssl

    recorder = Recorder()
    kwargs: dict[str, Any] = {}
    ca_file = None
    if tls_dir is not None:
        ca_file, key_file = self_signed_certificate(tls_dir)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca_file, key_file)
        kwargs = dict(tls_context=context, require_starttls=True, authenticator=_authenticate, auth_required=True)
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port, recorder, ca_file)
    finally:
        controller.stop()
