"""The approval keyring (SPEC §5): loading keys, refusing weak ones, choosing the key by kid."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from openexec_mcp.core.keyring import SMALL_ORDER_ENCODINGS, Keyring, KeyringEntry, load_ed25519_public_key
from openexec_mcp.errors import ApprovalBadSignatureError, ApprovalUnknownKeyError, ConfigError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
RAW = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
PEM = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

# --- an independent model of edwards25519 (RFC 8032 §5.1), for the small-order tests -----------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int]  # affine (x, y)
IDENTITY: Point = (0, 1)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def multiply(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point = add(point, point)
        k >>= 1
    return result


def recover_x(y: int) -> int | None:
    """RFC 8032 §5.1.3 step 3: a square root of (y^2 - 1) / (d y^2 + 1), or None."""
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    return x if (x * x - x2) % P == 0 else None


def encode(y: int, sign: int) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


def torsion_points() -> set[Point]:
    """Find the 8 points whose order divides 8: [L]Q for a point Q with an order-8 component."""
    for y in range(2, 1000):
        x = recover_x(y)
        if x is None:
            continue
        candidate = multiply(L, (x, y))
        if multiply(4, candidate) != IDENTITY:  # order exactly 8: it generates the subgroup
            points = {multiply(k, candidate) for k in range(8)}
            assert all(multiply(8, point) == IDENTITY for point in points)
            return points
    raise AssertionError("no point with an order-8 component found")


def test_small_order_list_is_exactly_every_encoding_of_the_eight_torsion_points() -> None:
    points = torsion_points()
    assert len(points) == 8
    expected: set[bytes] = set()
    for _, y in points:
        for sign in (0, 1):
            expected.add(encode(y, sign))  # both signs: sign 1 with x = 0 is an invalid spelling
            if y + P < 2**255:
                expected.add(encode(y + P, sign))  # the non-canonical spelling y + p
    assert expected == SMALL_ORDER_ENCODINGS
    assert len(SMALL_ORDER_ENCODINGS) == 14


@pytest.mark.parametrize("raw", sorted(SMALL_ORDER_ENCODINGS), ids=lambda raw: raw.hex()[:8] + "…" + raw.hex()[-2:])
def test_small_order_public_key_is_refused_at_load(raw: bytes) -> None:
    with pytest.raises(ConfigError, match="small-order"):
        load_ed25519_public_key(base64.b64encode(raw).decode())
    with pytest.raises(ConfigError, match="small-order"):
        KeyringEntry(kid="k", alg="ed25519", key=raw, issuers=frozenset({"i"}))


@pytest.mark.parametrize("raw", sorted(SMALL_ORDER_ENCODINGS)[:4], ids=lambda raw: raw.hex()[:8])
def test_small_order_public_key_in_pem_is_refused(raw: bytes) -> None:
    pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigError, match="small-order"):
        load_ed25519_public_key(pem.decode())


def test_non_canonical_public_key_is_refused() -> None:
    y = 5  # y + p still fits in 255 bits
    with pytest.raises(ConfigError, match="canonical"):
        load_ed25519_public_key(base64.b64encode(encode(y + P, 0)).decode())


def test_public_key_off_the_curve_is_refused() -> None:
    y = next(y for y in range(2, 100) if recover_x(y) is None)
    with pytest.raises(ConfigError, match="curve point"):
        load_ed25519_public_key(base64.b64encode(encode(y, 0)).decode())


def test_public_key_loads_from_pem_and_from_base64_of_raw_bytes() -> None:
    assert load_ed25519_public_key(PEM) == RAW
    assert load_ed25519_public_key("\n  " + base64.b64encode(RAW).decode() + "\n") == RAW
    assert load_ed25519_public_key(base64.urlsafe_b64encode(RAW).decode().rstrip("=")) == RAW


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a key",
        base64.b64encode(RAW[:31]).decode(),
        base64.b64encode(RAW + b"\x00").decode(),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    ],
    ids=["empty", "junk", "31-bytes", "33-bytes", "bad-pem", "p256-pem"],
)
def test_unusable_public_key_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        load_ed25519_public_key(text)


def test_config_error_never_echoes_the_key() -> None:
    text = base64.b64encode(RAW[:31]).decode()
    with pytest.raises(ConfigError) as info:
        load_ed25519_public_key(text)
    assert text not in info.value.message


# --- keyring entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"kid": ""},
        {"alg": "rsa"},
        {"alg": "none"},
        {"alg": "hmac-sha256", "key": b""},
        {"key": "not bytes"},
        {"issuers": frozenset[str]()},
        {"issuers": "clawshield"},
        {"issuers": frozenset({""})},
        {"not_before": datetime(2026, 1, 1)},
        {"not_before": NOW, "not_after": NOW - timedelta(seconds=1)},
    ],
)
def test_invalid_keyring_entry_is_a_config_error(overrides: dict[str, object]) -> None:
    arguments: dict[str, object] = {"kid": "k", "alg": "ed25519", "key": RAW, "issuers": frozenset({"i"})}
    arguments.update(overrides)
    with pytest.raises(ConfigError):
        KeyringEntry(**arguments)  # type: ignore[arg-type]


def test_keyring_entry_takes_issuers_from_a_list_and_normalises_windows_to_utc() -> None:
    plus_two = datetime(2026, 11, 21, 12, 0, tzinfo=UTC).astimezone(datetime.now(UTC).astimezone().tzinfo)
    entry = KeyringEntry(kid="k", alg="ed25519", key=RAW, issuers=["a", "b"], not_before=plus_two)  # type: ignore[arg-type]
    assert entry.issuers == frozenset({"a", "b"})
    assert entry.not_before is not None and entry.not_before.tzinfo is UTC


def test_keyring_entry_repr_never_shows_the_secret() -> None:
    entry = KeyringEntry(
        kid="k", alg="hmac-sha256", key=b"super-secret-value-of-32-bytes-or-more", issuers=frozenset({"i"})
    )
    assert "super-secret-value" not in repr(entry)


def test_signature_of_wrong_length_is_refused_before_any_crypto() -> None:
    entry = KeyringEntry(kid="k", alg="ed25519", key=RAW, issuers=frozenset({"i"}))
    with pytest.raises(ApprovalBadSignatureError, match="64"):
        entry.verify_signature(b"message", KEY.sign(b"message")[:63])
    entry.verify_signature(b"message", KEY.sign(b"message"))


# --- the keyring --------------------------------------------------------------------------------


def test_duplicate_kid_is_a_config_error() -> None:
    entry = KeyringEntry(kid="k", alg="ed25519", key=RAW, issuers=frozenset({"i"}))
    with pytest.raises(ConfigError, match="kid"):
        Keyring([entry, entry])


def test_select_by_kid_and_the_only_key_without_kid() -> None:
    first = KeyringEntry(kid="a", alg="ed25519", key=RAW, issuers=frozenset({"i"}))
    second = KeyringEntry(kid="b", alg="hmac-sha256", key=b"s" * 32, issuers=frozenset({"i"}))
    assert Keyring([first]).select(None, now=NOW) is first
    keyring = Keyring([first, second])
    assert keyring.select("b", now=NOW) is second
    assert len(keyring) == 2 and list(keyring) == [first, second] and keyring.get("c") is None
    with pytest.raises(ApprovalUnknownKeyError, match="no kid"):
        keyring.select(None, now=NOW)


def test_rotation_old_and_new_keys_verify_inside_their_windows() -> None:
    old = KeyringEntry(kid="2025", alg="ed25519", key=RAW, issuers=frozenset({"i"}), not_after=NOW)
    new = KeyringEntry(kid="2026", alg="ed25519", key=RAW, issuers=frozenset({"i"}), not_before=NOW)
    keyring = Keyring([old, new])
    assert keyring.select("2025", now=NOW) is old
    assert keyring.select("2026", now=NOW) is new
    with pytest.raises(ApprovalUnknownKeyError, match="window"):
        keyring.select("2025", now=NOW + timedelta(microseconds=1))
    with pytest.raises(ApprovalUnknownKeyError, match="window"):
        keyring.select("2026", now=NOW - timedelta(microseconds=1))


def test_unknown_kid_message_bounds_the_attacker_text() -> None:
    with pytest.raises(ApprovalUnknownKeyError) as info:
        Keyring([]).select("x" * 10_000, now=NOW)
    assert len(info.value.message) < 200
