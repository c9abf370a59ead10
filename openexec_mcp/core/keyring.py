"""The approval keyring of SPEC §5: which keys may sign approvals, and how each one verifies.

The algorithm of a signature always comes from the keyring entry, never from the artifact, so an
artifact cannot choose how it is checked (no algorithm confusion). Two algorithms exist:

- ``ed25519`` (RFC 8032): the entry holds the raw 32-byte public key; signatures are 64 bytes.
  Keys that could let one signature verify for many messages are refused when loaded: the
  small-order points (whose order divides 8, canonical or not), any non-canonical encoding, and
  anything that does not decode to a curve point (RFC 8032 §5.1.3).
- ``hmac-sha256`` (RFC 2104, RFC 4231): the entry holds the shared secret (at least 32 bytes,
  the output size of SHA-256, RFC 2104 §3); tags are the full
  32 bytes, compared in constant time. Truncated tags are refused.

Several entries may be configured at once so that keys can be rotated: an artifact names its key
with ``kid``, and an artifact without ``kid`` is accepted only when exactly one key is configured.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.errors import (
    ApprovalBadSignatureError,
    ApprovalUnknownKeyError,
    ConfigError,
    MalformedInputError,
)

__all__ = [
    "ALGORITHMS",
    "ED25519_PUBLIC_KEY_BYTES",
    "ED25519_SIGNATURE_BYTES",
    "HMAC_MIN_SECRET_BYTES",
    "HMAC_SHA256_TAG_BYTES",
    "SMALL_ORDER_ENCODINGS",
    "Algorithm",
    "Keyring",
    "KeyringEntry",
    "load_ed25519_public_key",
]

Algorithm = Literal["ed25519", "hmac-sha256"]
ALGORITHMS: Final[frozenset[str]] = frozenset({"ed25519", "hmac-sha256"})
ED25519_PUBLIC_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
HMAC_SHA256_TAG_BYTES: Final = 32
HMAC_MIN_SECRET_BYTES: Final = 32
"""Shortest accepted HMAC secret (SPEC §5): a short secret is brute-forced online through the gate."""

_P: Final = 2**255 - 19
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P
_Y_MASK: Final = (1 << 255) - 1

# The y-coordinates (little-endian, sign bit clear) of the eight points whose order divides 8:
# y = 1 (the identity), y = p - 1 (order 2), y = 0 (order 4, two points) and the two y of the
# four points of order 8; plus y = p and y = p + 1, the non-canonical spellings of 0 and 1
# (RFC 8032 §5.1.3 decoders that skip the y < p check accept them). Each is refused with either
# sign bit, the way libsodium's blocklist ignores bit 255.
_SMALL_ORDER_Y: Final = (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)
SMALL_ORDER_ENCODINGS: Final[frozenset[bytes]] = frozenset(
    bytes.fromhex(y)[:31] + bytes([bytes.fromhex(y)[31] | sign]) for y in _SMALL_ORDER_Y for sign in (0x00, 0x80)
)
"""The 14 32-byte encodings of Ed25519 points of order 1, 2, 4 or 8 that are refused as keys."""


def load_ed25519_public_key(text: str) -> bytes:
    """Load a governance Ed25519 public key from configuration (SPEC §5, §9).

    Args:
        text: Trusted configuration text: a PEM ``PUBLIC KEY`` block (SubjectPublicKeyInfo), or
            base64 (standard or URL-safe, padding optional) of the raw 32-byte key.
            Surrounding whitespace is ignored.

    Returns:
        The raw public key, 32 bytes (RFC 8032 §5.1.2 encoding).

    Raises:
        ConfigError: The text is neither form, the PEM key is not Ed25519, or the key is
            refused: small order, non-canonical, or not a curve point. The message never echoes
            the key.

    """
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise ConfigError("approval public key is not a valid PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("approval public key in PEM is not an Ed25519 key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        try:
            raw = b64decode_strict(stripped)
        except MalformedInputError:
            raise ConfigError("approval public key is neither PEM nor base64 of the raw 32-byte key") from None
    _check_ed25519_public_key(raw)
    return raw


def _check_ed25519_public_key(raw: bytes) -> None:
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ConfigError(f"Ed25519 public key is {len(raw)} bytes; it must be 32")
    if raw in SMALL_ORDER_ENCODINGS:
        # A small-order key admits signatures that verify for many messages (RFC 8032 §8.4 and
        # "Taming the many EdDSAs", Chalkias et al. 2020).
        raise ConfigError("Ed25519 public key is a small-order point; refusing it")
    encoded = int.from_bytes(raw, "little")
    y, sign = encoded & _Y_MASK, encoded >> 255
    if y >= _P:
        raise ConfigError("Ed25519 public key is not canonically encoded (y >= p)")
    # RFC 8032 §5.1.3: x^2 = (y^2 - 1) / (d y^2 + 1) must be a square, and x = 0 needs sign 0.
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if (x2 == 0 and sign) or (x2 != 0 and pow(x2, (_P - 1) // 2, _P) != 1):
        raise ConfigError("Ed25519 public key does not decode to a curve point")


@dataclass(frozen=True, slots=True)
class KeyringEntry:
    """One approval key (SPEC §5, ``[[approvals.keys]]`` of SPEC §9).

    Attributes:
        kid: The key id an artifact names in ``kid``.
        alg: ``"ed25519"`` or ``"hmac-sha256"``; decides how signatures are checked.
        key: For ``ed25519`` the raw 32-byte public key (see :func:`load_ed25519_public_key`);
            for ``hmac-sha256`` the shared secret bytes (at least 32). Never printed.
        issuers: The ``issued_by`` values this key may sign for; at least one.
        not_before: Optional aware datetime; the key is unusable before it.
        not_after: Optional aware datetime; the key is unusable after it.
        revoked: A revoked key verifies nothing.

    Raises:
        ConfigError: On construction, when any attribute is invalid (including a refused
            Ed25519 key).

    """

    kid: str
    alg: Algorithm
    key: bytes = field(repr=False)
    issuers: frozenset[str]
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not self.kid:  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError("approval key kid must be a non-empty string")
        if self.alg not in ALGORITHMS:
            raise ConfigError(f"approval key {self.kid!r}: alg must be one of {sorted(ALGORITHMS)}")
        if not isinstance(self.key, bytes):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"approval key {self.kid!r}: key must be bytes")
        if self.alg == "ed25519":
            _check_ed25519_public_key(self.key)
        elif len(self.key) < HMAC_MIN_SECRET_BYTES:
            # A 2-byte secret falls to an execute-only caller in a few hundred calls, each
            # answered approval_bad_signature; the length, never the secret, is reported.
            raise ConfigError(
                f"approval key {self.kid!r}: the HMAC secret is {len(self.key)} bytes; "
                f"it must be at least {HMAC_MIN_SECRET_BYTES}"
            )
        # Configuration hands over lists; keep a frozenset so the entry stays immutable.
        issuers: Any = self.issuers
        if isinstance(issuers, str) or not isinstance(issuers, Iterable):
            raise ConfigError(f"approval key {self.kid!r}: issuers must be a set of strings")
        object.__setattr__(self, "issuers", frozenset(cast("Iterable[Any]", issuers)))
        if not self.issuers or not all(isinstance(i, str) and i for i in self.issuers):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise ConfigError(f"approval key {self.kid!r}: issuers must be non-empty strings")
        for name in ("not_before", "not_after"):
            value: datetime | None = getattr(self, name)
            if value is not None:
                if value.utcoffset() is None:
                    raise ConfigError(f"approval key {self.kid!r}: {name} must carry a UTC offset")
                object.__setattr__(self, name, value.astimezone(UTC))
        if self.not_before and self.not_after and self.not_before > self.not_after:
            raise ConfigError(f"approval key {self.kid!r}: not_before is later than not_after")

    def usable_at(self, now: datetime) -> bool:
        """Return whether the key is not revoked and ``now`` (aware) is inside its window."""
        if self.revoked:
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        return self.not_after is None or now <= self.not_after

    def verify_signature(self, message: bytes, signature: bytes) -> None:
        """Check ``signature`` over ``message`` with this key's algorithm (SPEC §5 step 3).

        Args:
            message: The signed bytes (for approvals, the DSSE PAE of SPEC §5).
            signature: Untrusted signature bytes, already base64-decoded: 64 bytes for
                ``ed25519``, the full 32-byte tag for ``hmac-sha256``.

        Raises:
            ApprovalBadSignatureError: Wrong length for the algorithm (SPEC §10), or the
                signature does not verify.

        """
        expected = ED25519_SIGNATURE_BYTES if self.alg == "ed25519" else HMAC_SHA256_TAG_BYTES
        if len(signature) != expected:
            raise ApprovalBadSignatureError(
                f"signature is {len(signature)} bytes; approval key {self.kid!r} ({self.alg}) needs {expected}"
            )
        if self.alg == "ed25519":
            try:
                Ed25519PublicKey.from_public_bytes(self.key).verify(signature, message)
            except InvalidSignature:
                raise ApprovalBadSignatureError(f"signature does not verify under approval key {self.kid!r}") from None
        elif not hmac.compare_digest(hmac.new(self.key, message, hashlib.sha256).digest(), signature):
            raise ApprovalBadSignatureError(f"signature does not verify under approval key {self.kid!r}")

    def sign(self, message: bytes) -> bytes:
        """Return the 32-byte HMAC-SHA256 tag of ``message`` (``hmac-sha256`` entries only).

        Raises:
            ValueError: The entry is ``ed25519``: it holds only a public key.

        """
        if self.alg != "hmac-sha256":
            raise ValueError(f"approval key {self.kid!r} is {self.alg}: sign with the private key")
        return hmac.new(self.key, message, hashlib.sha256).digest()


class Keyring:
    """The configured approval keys, by ``kid`` (SPEC §5). Immutable once built.

    Raises:
        ConfigError: On construction, when two entries share a ``kid``.

    """

    __slots__ = ("_by_kid",)

    def __init__(self, entries: Iterable[KeyringEntry] = ()) -> None:
        by_kid: dict[str, KeyringEntry] = {}
        for entry in entries:
            if entry.kid in by_kid:
                raise ConfigError(f"two approval keys have kid {entry.kid!r}")
            by_kid[entry.kid] = entry
        self._by_kid = by_kid

    def __len__(self) -> int:
        return len(self._by_kid)

    def __iter__(self) -> Iterator[KeyringEntry]:
        return iter(self._by_kid.values())

    def get(self, kid: str) -> KeyringEntry | None:
        """Return the entry with this ``kid``, usable or not, or ``None``."""
        return self._by_kid.get(kid)

    def select(self, kid: str | None, *, now: datetime) -> KeyringEntry:
        """Return the key that must verify an artifact (SPEC §5 step ``approval_unknown_key``).

        Args:
            kid: The artifact's ``kid`` (untrusted), or ``None`` when it has none: then the only
                configured key is used.
            now: The verification time, an aware datetime read once by the caller.

        Raises:
            ApprovalUnknownKeyError: No key has that ``kid``; no ``kid`` was given and the
                keyring does not hold exactly one key; or the key is revoked or ``now`` is
                outside its ``not_before`` / ``not_after`` window.

        """
        if kid is None:
            if len(self._by_kid) != 1:
                raise ApprovalUnknownKeyError(
                    f"artifact has no kid and {len(self._by_kid)} approval keys are configured; name the key with kid"
                )
            (entry,) = self._by_kid.values()
        else:
            found = self._by_kid.get(kid)
            if found is None:
                raise ApprovalUnknownKeyError(f"no approval key has kid {kid[:64]!r}")
            entry = found
        if not entry.usable_at(now):
            state = "revoked" if entry.revoked else "outside its validity window"
            raise ApprovalUnknownKeyError(f"approval key {entry.kid!r} is {state}")
        return entry
