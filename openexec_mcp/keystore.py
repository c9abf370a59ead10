"""The server's Ed25519 key on disk (SPEC §7).

Generated on first start into ``<state_dir>/server_key.pem`` (PKCS#8 PEM, unencrypted, mode 0600);
loaded on every later start. Two processes may start together on a fresh state directory: each
writes its key completely into a private temporary file (``O_EXCL``, 0600, fsynced) and hard-links
it into place with :func:`os.link`, which fails if the name exists. The name therefore appears
only with a whole key behind it; the loser deletes its temporary file and loads the winner's key.
The public key is published at ``GET /keys`` and by ``openexec-mcp keys public``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.receipt import ServerKey
from openexec_mcp.errors import ConfigError
from openexec_mcp.faults import unsafe_fault_point

__all__ = ["SERVER_KEY_FILENAME", "load_or_create_server_key", "load_server_key", "public_keys_document"]

SERVER_KEY_FILENAME = "server_key.pem"


def load_or_create_server_key(state_dir: Path) -> ServerKey:
    """Load the server key from ``state_dir``, generating it on first start.

    Raises:
        ConfigError: The key file exists but is unreadable, not an Ed25519 PEM key, or readable
            by group or others.
    """
    path = state_dir / SERVER_KEY_FILENAME
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        _publish_once(path, pem)
    return load_server_key(path)


def _publish_once(path: Path, data: bytes) -> None:
    """Make ``path`` hold ``data`` unless it exists already; never visible half-written.

    Raises:
        ConfigError: The directory cannot hold the file (permissions, no hard links).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data[: len(data) // 2])
            unsafe_fault_point("in_server_key")  # crash tests: a writer killed mid-write
            handle.write(data[len(data) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(temporary, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write server key {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_server_key(path: Path) -> ServerKey:
    """Load an Ed25519 private key from a PEM file.

    Raises:
        ConfigError: Missing, unreadable, too permissive (group/other bits set), or not Ed25519.
    """
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"server key {path} must not be readable by group or others (chmod 600)")
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read server key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"server key {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"server key {path} is not an Ed25519 key")
    return ServerKey.from_private_key(key)


def public_keys_document(key: ServerKey) -> dict[str, Any]:
    """Return the ``GET /keys`` JSON: ``{"keys": [{"kid", "alg": "Ed25519", "public_key": base64 raw}]}``."""
    return {"keys": [{"kid": key.kid, "alg": "Ed25519", "public_key": b64encode(key.public_raw)}]}
