"""Approval artifacts (SPEC §5): one test per check and per attack, asserting the stable codes.

``tamper`` re-signs with the real key, so each semantic check is shown to fire on its own, not
hidden behind the signature check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from oe_testing.approvals import DROP, tamper

from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.approval import (
    APPROVAL_PAYLOAD_TYPE,
    REQUIRED_FIELDS,
    VerifiedApproval,
    approval_signing_input,
    parse_approval_artifact,
    sign_approval,
    verify_approval,
)
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.errors import ApprovalError, ApprovalMalformedError

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
ED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ED_PUBLIC = ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
HMAC_SECRET = b"correct horse battery staple, 32"
ED_ENTRY = KeyringEntry(kid="gov-ed", alg="ed25519", key=ED_PUBLIC, issuers=frozenset({"clawshield"}))
HMAC_ENTRY = KeyringEntry(kid="gov-hmac", alg="hmac-sha256", key=HMAC_SECRET, issuers=frozenset({"clawshield"}))
KEYRING = Keyring([ED_ENTRY, HMAC_ENTRY])
TENANT = "acme-configured-tenant"
SERVER = "openexec-mcp"
ACTION_HASH = compute_action_hash("echo", {"text": "hi"}, "nonce-0001")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def fields(**changes: Any) -> dict[str, Any]:
    base = {
        "approval_id": "ap-0001",
        "action_hash": ACTION_HASH,
        "issued_by": "clawshield",
        "issued_at": iso(NOW - timedelta(minutes=1)),
        "expires_at": iso(NOW + timedelta(minutes=4)),
        "tenant_id": TENANT,
        "audience": SERVER,
        "kid": "gov-ed",
    }
    merged = {**base, **changes}
    return {name: value for name, value in merged.items() if value is not DROP}


def signed(key: Ed25519PrivateKey | KeyringEntry = ED_KEY, **changes: Any) -> dict[str, Any]:
    if isinstance(key, KeyringEntry) and "kid" not in changes:
        changes["kid"] = key.kid
    return sign_approval(fields(**changes), key)


def verify(artifact: Any, **overrides: Any) -> VerifiedApproval:
    arguments: dict[str, Any] = {
        "keyring": KEYRING,
        "action_hash": ACTION_HASH,
        "tenant_id": TENANT,
        "audience": SERVER,
        "now": NOW,
        "clock_skew_seconds": 60,
        "max_ttl_seconds": 300,
    }
    arguments.update(overrides)
    return verify_approval(artifact, **arguments)


def refusal(artifact: Any, **overrides: Any) -> ApprovalError:
    with pytest.raises(ApprovalError) as info:
        verify(artifact, **overrides)
    return info.value


def code_of(artifact: Any, **overrides: Any) -> str:
    return refusal(artifact, **overrides).code


def flip_signature(artifact: dict[str, Any]) -> dict[str, Any]:
    raw = bytearray(base64.b64decode(artifact["signature"]))
    raw[-1] ^= 0x01
    return {**artifact, "signature": base64.b64encode(bytes(raw)).decode()}


# --- the happy paths --------------------------------------------------------------------------


def test_ed25519_artifact_verifies_and_feeds_the_receipt() -> None:
    artifact = signed()
    result = verify(artifact)
    assert result == VerifiedApproval(
        approval_id="ap-0001",
        kid="gov-ed",
        issued_by="clawshield",
        artifact_hash=hashlib.sha256(rfc8785.dumps(artifact)).hexdigest(),
        expires_at=NOW + timedelta(minutes=4),
    )
    assert result.to_receipt_json() == {
        "method": "signed",
        "approval_id": "ap-0001",
        "kid": "gov-ed",
        "issued_by": "clawshield",
        "artifact_hash": result.artifact_hash,
    }


def test_hmac_artifact_verifies() -> None:
    assert verify(signed(HMAC_ENTRY)).kid == "gov-hmac"


def test_signed_bytes_are_dsse_pae_over_jcs_of_every_member_but_signature() -> None:
    artifact = signed()
    body = rfc8785.dumps({name: value for name, value in artifact.items() if name != "signature"})
    payload_type = APPROVAL_PAYLOAD_TYPE.encode()
    expected = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)
    assert approval_signing_input(artifact) == approval_signing_input(fields()) == expected
    ED_KEY.public_key().verify(base64.b64decode(artifact["signature"]), expected)
    assert parse_approval_artifact(artifact).signing_input == expected


def test_sign_approval_replaces_an_existing_signature() -> None:
    artifact = signed()
    assert sign_approval({**artifact, "signature": "AAAA"}, ED_KEY) == artifact


def test_ed25519_keyring_entry_cannot_sign() -> None:
    with pytest.raises(ValueError, match="private key"):
        sign_approval(fields(), ED_ENTRY)


def test_artifact_hash_covers_the_artifact_as_received() -> None:
    artifact = signed()
    urlsafe = {**artifact, "signature": artifact["signature"].replace("+", "-").replace("/", "_").rstrip("=")}
    assert verify(urlsafe).artifact_hash == hashlib.sha256(rfc8785.dumps(urlsafe)).hexdigest()
    assert verify(urlsafe).artifact_hash != verify(artifact).artifact_hash


def test_parsed_artifact_keeps_members_read_only() -> None:
    parsed = parse_approval_artifact(signed())
    with pytest.raises(TypeError):
        parsed.received["tenant_id"] = "other"  # type: ignore[index]


# --- (1) approval_malformed -------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, [], "artifact", 42, ["approval_id", "ap-1"]])
def test_artifact_that_is_not_an_object_is_malformed(value: Any) -> None:
    assert code_of(value) == "approval_malformed"


@pytest.mark.parametrize("name", sorted(REQUIRED_FIELDS))
def test_artifact_missing_a_required_member_is_malformed(name: str) -> None:
    artifact = signed()
    del artifact[name]
    assert code_of(artifact) == "approval_malformed"


def test_unknown_member_is_malformed_even_when_signed() -> None:
    assert code_of(signed(scope="everything")) == "approval_malformed"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("approval_id", 7),
        ("tenant_id", None),
        ("audience", None),
        ("kid", 1),
        ("issued_at", 1_790_000_000),
        ("action_hash", ["a" * 64]),
        ("approval_id", ""),
        ("kid", ""),
        ("tenant_id", "t" * 257),
    ],
)
def test_member_of_wrong_type_or_size_is_malformed_even_when_signed(name: str, value: Any) -> None:
    assert code_of(signed(**{name: value})) == "approval_malformed"


@pytest.mark.parametrize("action_hash", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, "\u0660" * 64])
def test_action_hash_that_is_not_64_lowercase_hex_is_malformed(action_hash: str) -> None:
    assert code_of(signed(action_hash=action_hash)) == "approval_malformed"


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-21T09:59:00",  # naive
        "2026-11-21 09:59:00Z",  # not the RFC 3339 separator
        "2026-11-21T09:59Z",  # no seconds
        "20261121T095900Z",  # ISO 8601 basic format
        "2026-11-21T09:59:00+0100",  # offset without colon
        "2026-11-21T09:59:00+24:00",  # offset out of range
        "2026-11-21T09:59:00+01:60",
        "2026-11-21T25:00:00Z",
        "2026-02-30T09:59:00Z",
        "2026-11-21T09:59:60Z",  # leap second: not representable
        "\u0662\u0660\u0662\u0666-11-21T09:59:00Z",  # non-ASCII digits
        "2026-11-21T09:59:00.Z",
        "2026-11-21T09:59:00.1234567890Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "",
    ],
)
def test_timestamp_that_is_naive_or_not_rfc3339_is_malformed(timestamp: str) -> None:
    assert code_of(signed(issued_at=timestamp)) == "approval_malformed"


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-11-21t09:59:00z", NOW - timedelta(minutes=1)),
        ("2026-11-21T11:59:00+02:00", NOW - timedelta(minutes=1)),
        ("2026-11-21T04:29:00-05:30", NOW - timedelta(minutes=1)),
        ("2026-11-21T09:59:00.123456789Z", NOW - timedelta(minutes=1) + timedelta(microseconds=123456)),
        ("2026-11-21T09:59:00.5-00:00", NOW - timedelta(seconds=59.5)),
    ],
)
def test_rfc3339_timestamps_with_offsets_and_fractions_are_accepted(text: str, instant: datetime) -> None:
    parsed = parse_approval_artifact(signed(issued_at=text))
    assert parsed.issued_at == instant
    assert parsed.issued_at.tzinfo is UTC
    verify(signed(issued_at=text))


def test_expiry_not_after_issue_is_malformed() -> None:
    moment = iso(NOW)
    assert code_of(signed(issued_at=moment, expires_at=moment)) == "approval_malformed"


@pytest.mark.parametrize(
    "signature",
    ["not base64!", "AAAA AAAA", "AAAA\n", "AA+A_A==", "AAA=A", "A", "AB==", "AAAA===", "\uff21" * 4],
)
def test_signature_that_is_not_strict_base64_is_malformed(signature: str) -> None:
    assert code_of({**signed(), "signature": signature}) == "approval_malformed"


def test_signature_in_urlsafe_or_unpadded_base64_is_accepted() -> None:
    artifact = signed()
    raw = base64.b64decode(artifact["signature"])
    for spelling in (base64.urlsafe_b64encode(raw).decode(), base64.b64encode(raw).decode().rstrip("=")):
        verify({**artifact, "signature": spelling})


def test_lone_surrogate_is_malformed_not_a_crash() -> None:
    artifact = signed()
    assert code_of({**artifact, "approval_id": "ap-\ud800"}) == "approval_malformed"


def test_malformed_message_names_the_problem() -> None:
    artifact = signed()
    del artifact["expires_at"]
    with pytest.raises(ApprovalMalformedError, match="missing expires_at"):
        verify(artifact)


# --- (2) approval_unknown_key -----------------------------------------------------------------


def test_unknown_kid_is_refused() -> None:
    assert code_of(signed(kid="gov-2025")) == "approval_unknown_key"


def test_revoked_key_is_refused() -> None:
    revoked = KeyringEntry(kid="gov-ed", alg="ed25519", key=ED_PUBLIC, issuers=frozenset({"clawshield"}), revoked=True)
    assert code_of(signed(), keyring=Keyring([revoked])) == "approval_unknown_key"


@pytest.mark.parametrize(
    ("not_before", "not_after", "usable"),
    [
        (NOW + timedelta(seconds=1), None, False),
        (None, NOW - timedelta(seconds=1), False),
        (NOW, NOW, True),
        (NOW - timedelta(days=1), NOW + timedelta(days=1), True),
    ],
)
def test_key_outside_its_validity_window_is_refused(
    not_before: datetime | None, not_after: datetime | None, usable: bool
) -> None:
    entry = KeyringEntry(
        kid="gov-ed",
        alg="ed25519",
        key=ED_PUBLIC,
        issuers=frozenset({"clawshield"}),
        not_before=not_before,
        not_after=not_after,
    )
    if usable:
        verify(signed(), keyring=Keyring([entry]))
    else:
        assert code_of(signed(), keyring=Keyring([entry])) == "approval_unknown_key"


def test_artifact_without_kid_uses_the_only_configured_key() -> None:
    artifact = signed(kid=DROP)
    assert verify(artifact, keyring=Keyring([ED_ENTRY])).kid == "gov-ed"
    assert verify(signed(HMAC_ENTRY, kid=DROP), keyring=Keyring([HMAC_ENTRY])).kid == "gov-hmac"


def test_artifact_without_kid_is_refused_when_several_keys_are_configured() -> None:
    assert code_of(signed(kid=DROP)) == "approval_unknown_key"
    assert code_of(signed(kid=DROP), keyring=Keyring([])) == "approval_unknown_key"


def test_kid_never_falls_back_to_the_only_key() -> None:
    assert code_of(signed(kid="gov-other"), keyring=Keyring([ED_ENTRY])) == "approval_unknown_key"


# --- (3) approval_bad_signature ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["approval_id", "action_hash", "issued_by", "tenant_id", "audience"])
def test_member_changed_without_resigning_breaks_the_signature(name: str) -> None:
    artifact = signed()
    forged = {**artifact, name: "0" * 64 if name == "action_hash" else artifact[name] + "x"}
    assert code_of(forged) == "approval_bad_signature"


def test_timestamp_changed_without_resigning_breaks_the_signature() -> None:
    artifact = signed()
    assert code_of({**artifact, "expires_at": iso(NOW + timedelta(minutes=5))}) == "approval_bad_signature"


def test_dropping_the_signed_audience_to_widen_the_approval_breaks_the_signature() -> None:
    artifact = signed()
    del artifact["audience"]
    assert code_of(artifact) == "approval_bad_signature"


def test_dropping_the_signed_kid_breaks_the_signature() -> None:
    artifact = signed()
    del artifact["kid"]
    assert code_of(artifact, keyring=Keyring([ED_ENTRY])) == "approval_bad_signature"


def test_field_boundary_shuffling_between_members_is_caught() -> None:
    first = fields(approval_id="a1", tenant_id="bc")
    second = fields(approval_id="a1b", tenant_id="c")
    assert approval_signing_input(first) != approval_signing_input(second)
    transplanted = {**second, "signature": sign_approval(first, ED_KEY)["signature"]}
    assert code_of(transplanted, tenant_id="c") == "approval_bad_signature"


def test_signature_from_another_key_is_refused() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    assert code_of(signed(other)) == "approval_bad_signature"


def test_hmac_signature_under_the_wrong_secret_is_refused() -> None:
    impostor = KeyringEntry(
        kid="gov-hmac", alg="hmac-sha256", key=b"a guessed secret, 32 bytes or more", issuers=frozenset({"x"})
    )
    error = refusal(signed(impostor))
    assert error.code == "approval_bad_signature"
    assert HMAC_SECRET.decode() not in error.message


def test_truncated_hmac_tag_is_refused() -> None:
    body = fields(kid="gov-hmac")
    tag = hmac.new(HMAC_SECRET, approval_signing_input(body), hashlib.sha256).digest()
    for length in (16, 20, 31):
        assert code_of({**body, "signature": base64.b64encode(tag[:length]).decode()}) == "approval_bad_signature"
    verify({**body, "signature": base64.b64encode(tag).decode()})


@pytest.mark.parametrize("length", [0, 1, 32, 63, 65, 128])
def test_ed25519_signature_of_wrong_length_is_a_bad_signature(length: int) -> None:
    artifact = signed()
    real = base64.b64decode(artifact["signature"])
    wrong = (real * 3)[:length]
    error = refusal({**artifact, "signature": base64.b64encode(wrong).decode()})
    assert error.code == "approval_bad_signature"


def test_algorithm_confusion_hmac_keyed_with_the_ed25519_public_key_fails() -> None:
    # An attacker who knows the public key "signs" with HMAC using it as the secret and names
    # the Ed25519 key: the entry fixes the algorithm, so this is checked as Ed25519 and fails.
    body = fields(kid="gov-ed")
    tag = hmac.new(ED_PUBLIC, approval_signing_input(body), hashlib.sha256).digest()
    assert code_of({**body, "signature": base64.b64encode(tag).decode()}) == "approval_bad_signature"
    doubled = base64.b64encode(tag + tag).decode()  # even at the Ed25519 signature length
    assert code_of({**body, "signature": doubled}) == "approval_bad_signature"


def test_hmac_artifact_naming_the_ed25519_key_fails() -> None:
    artifact = sign_approval(fields(kid="gov-ed"), HMAC_ENTRY)
    assert code_of(artifact) == "approval_bad_signature"


def test_ed25519_artifact_naming_the_hmac_key_fails() -> None:
    assert code_of(signed(ED_KEY, kid="gov-hmac")) == "approval_bad_signature"


# --- (4) to (10): the semantic checks, each shown with a correctly re-signed artifact -----------


def test_issuer_not_accepted_by_the_key_is_refused() -> None:
    assert code_of(tamper(signed(), ED_KEY, issued_by="mallory")) == "approval_issuer_mismatch"


def test_issuer_accepted_by_another_key_is_still_refused() -> None:
    other = KeyringEntry(kid="gov-hmac", alg="hmac-sha256", key=HMAC_SECRET, issuers=frozenset({"ops"}))
    artifact = tamper(signed(HMAC_ENTRY), HMAC_ENTRY, issued_by="ops")
    assert code_of(artifact) == "approval_issuer_mismatch"
    verify(artifact, keyring=Keyring([ED_ENTRY, other]))


def test_approval_for_another_tenant_is_refused_without_naming_ours() -> None:
    error = refusal(tamper(signed(), ED_KEY, tenant_id="globex"))
    assert error.code == "approval_tenant_mismatch"
    assert "globex" in error.message
    assert TENANT not in error.message


def test_approval_for_another_server_is_refused() -> None:
    assert code_of(tamper(signed(), ED_KEY, audience="other-server")) == "approval_audience_mismatch"


def test_approval_without_audience_is_accepted_by_any_server() -> None:
    artifact = tamper(signed(), ED_KEY, audience=DROP)
    verify(artifact)
    verify(artifact, audience="another-server")


def test_approval_issued_in_the_future_beyond_skew_is_not_yet_valid() -> None:
    artifact = tamper(
        signed(), ED_KEY, issued_at=iso(NOW + timedelta(seconds=61)), expires_at=iso(NOW + timedelta(minutes=5))
    )
    assert code_of(artifact) == "approval_not_yet_valid"


@pytest.mark.parametrize("ahead_seconds", [1, 59, 60])
def test_approval_issued_in_the_future_within_skew_is_accepted(ahead_seconds: int) -> None:
    issued_at = NOW + timedelta(seconds=ahead_seconds)
    verify(tamper(signed(), ED_KEY, issued_at=iso(issued_at), expires_at=iso(issued_at + timedelta(minutes=1))))


def test_expired_approval_beyond_skew_is_refused() -> None:
    artifact = tamper(
        signed(), ED_KEY, issued_at=iso(NOW - timedelta(minutes=3)), expires_at=iso(NOW - timedelta(seconds=61))
    )
    assert code_of(artifact) == "approval_expired"


@pytest.mark.parametrize("late_seconds", [0, 1, 60])
def test_expired_approval_within_skew_is_accepted(late_seconds: int) -> None:
    expires_at = NOW - timedelta(seconds=late_seconds)
    verify(tamper(signed(), ED_KEY, issued_at=iso(expires_at - timedelta(minutes=2)), expires_at=iso(expires_at)))


def test_skew_of_zero_is_exact() -> None:
    artifact = tamper(signed(), ED_KEY, issued_at=iso(NOW - timedelta(minutes=2)), expires_at=iso(NOW))
    verify(artifact, clock_skew_seconds=0)
    assert code_of(artifact, clock_skew_seconds=0, now=NOW + timedelta(microseconds=1)) == "approval_expired"


def test_approval_issued_before_the_nonce_retention_horizon_is_expired() -> None:
    artifact = signed()
    assert code_of(artifact, min_issued_at=NOW) == "approval_expired"
    verify(artifact, min_issued_at=NOW - timedelta(minutes=1))


def test_approval_living_longer_than_max_ttl_is_refused() -> None:
    artifact = tamper(signed(), ED_KEY, issued_at=iso(NOW), expires_at=iso(NOW + timedelta(seconds=301)))
    assert code_of(artifact) == "approval_ttl_too_long"


def test_approval_living_exactly_max_ttl_is_accepted() -> None:
    verify(tamper(signed(), ED_KEY, issued_at=iso(NOW), expires_at=iso(NOW + timedelta(seconds=300))))


def test_approval_for_other_action_hash_is_denied() -> None:
    other = compute_action_hash("echo", {"text": "hi"}, "nonce-0002")
    assert code_of(tamper(signed(), ED_KEY, action_hash=other)) == "approval_action_mismatch"


def test_approval_for_the_same_action_with_another_payload_is_denied() -> None:
    assert code_of(signed(), action_hash=compute_action_hash("echo", {"text": "bye"}, "nonce-0001")) == (
        "approval_action_mismatch"
    )


def test_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="aware"):
        verify(signed(), now=NOW.replace(tzinfo=None))


# --- ordering: the first failure in SPEC order wins -----------------------------------------


def faulty(*faults: str) -> dict[str, Any]:
    """Build an artifact that has exactly the given faults."""
    changes: dict[str, Any] = {}
    if "approval_issuer_mismatch" in faults:
        changes["issued_by"] = "mallory"
    if "approval_tenant_mismatch" in faults:
        changes["tenant_id"] = "globex"
    if "approval_audience_mismatch" in faults:
        changes["audience"] = "other-server"
    issued_at, expires_at = NOW - timedelta(minutes=1), NOW + timedelta(minutes=4)
    if "approval_not_yet_valid" in faults:
        issued_at, expires_at = NOW + timedelta(minutes=10), NOW + timedelta(minutes=12)
    if "approval_expired" in faults:
        issued_at, expires_at = NOW - timedelta(minutes=10), NOW - timedelta(minutes=5)
    if "approval_ttl_too_long" in faults:
        expires_at = issued_at + timedelta(hours=1) if "approval_expired" not in faults else expires_at
        issued_at = issued_at - timedelta(hours=1) if "approval_expired" in faults else issued_at
    changes.update(issued_at=iso(issued_at), expires_at=iso(expires_at))
    if "approval_action_mismatch" in faults:
        changes["action_hash"] = "0" * 64
    artifact = signed(**changes)
    if "approval_bad_signature" in faults:
        artifact = flip_signature(artifact)
    if "approval_unknown_key" in faults:
        artifact["kid"] = "gov-retired"
    if "approval_malformed" in faults:
        artifact["scope"] = "everything"
    return artifact


ORDER_FUTURE = [
    "approval_malformed",
    "approval_unknown_key",
    "approval_bad_signature",
    "approval_issuer_mismatch",
    "approval_tenant_mismatch",
    "approval_audience_mismatch",
    "approval_not_yet_valid",
    "approval_ttl_too_long",
    "approval_action_mismatch",
]
ORDER_PAST = [code if code != "approval_not_yet_valid" else "approval_expired" for code in ORDER_FUTURE]


@pytest.mark.parametrize("order", [ORDER_FUTURE, ORDER_PAST], ids=["not-yet-valid", "expired"])
@pytest.mark.parametrize("first", range(len(ORDER_FUTURE)))
def test_artifact_with_several_faults_reports_the_first_in_spec_order(order: list[str], first: int) -> None:
    assert code_of(faulty(*order[first:])) == order[first]


def test_each_fault_alone_reports_its_own_code() -> None:
    for code in dict.fromkeys(ORDER_FUTURE + ORDER_PAST):
        assert code_of(faulty(code)) == code
    verify(faulty())
