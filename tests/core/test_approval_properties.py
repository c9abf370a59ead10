"""Property-based tests of approval artifacts: round trips, one-character forgeries, junk input."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from openexec_mcp.core.approval import MAX_FIELD_CHARS, REQUIRED_FIELDS, sign_approval, verify_approval
from openexec_mcp.core.keyring import Keyring, KeyringEntry
from openexec_mcp.errors import ApprovalError

ED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ED_PUBLIC = ED_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
HMAC_SECRET = b"property-test-secret-32-bytes-ok"

identifiers = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=24)
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def rfc3339(moment: datetime, tz: timezone) -> str:
    return moment.astimezone(tz).isoformat().replace("+00:00", "Z")


@st.composite
def approvals(draw: st.DrawFn) -> tuple[dict[str, Any], Keyring, datetime]:
    """A signed artifact, a keyring that accepts it, and a moment inside its lifetime."""
    issued_at = draw(instants)
    lifetime = draw(st.integers(min_value=1, max_value=300_000_000))  # microseconds, up to 300 s
    expires_at = issued_at + timedelta(microseconds=lifetime)
    fields: dict[str, Any] = {
        "approval_id": draw(identifiers),
        "action_hash": draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
        "issued_by": draw(identifiers),
        "issued_at": rfc3339(issued_at, draw(offsets)),
        "expires_at": rfc3339(expires_at, draw(offsets)),
        "tenant_id": draw(identifiers),
    }
    if draw(st.booleans()):
        fields["audience"] = draw(identifiers)
    kid = draw(st.none() | identifiers)
    if kid is not None:
        fields["kid"] = kid
    if draw(st.booleans()):
        entry = KeyringEntry(kid=kid or "only", alg="ed25519", key=ED_PUBLIC, issuers=frozenset({fields["issued_by"]}))
        artifact = sign_approval(fields, ED_KEY)
    else:
        entry = KeyringEntry(kid=kid or "only", alg="hmac-sha256", key=HMAC_SECRET, issuers=[fields["issued_by"]])  # type: ignore[arg-type]
        artifact = sign_approval(fields, entry)
    now = issued_at + timedelta(microseconds=draw(st.integers(min_value=0, max_value=lifetime)))
    return artifact, Keyring([entry]), now


def verify(artifact: Any, keyring: Keyring, now: datetime) -> Any:
    return verify_approval(
        artifact, keyring=keyring, action_hash=artifact.get("action_hash", ""),
        tenant_id=artifact.get("tenant_id", ""), audience=artifact.get("audience", "server"), now=now,
        clock_skew_seconds=0, max_ttl_seconds=300,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(approvals())
def test_signed_artifact_round_trips(case: tuple[dict[str, Any], Keyring, datetime]) -> None:
    artifact, keyring, now = case
    verified = verify(artifact, keyring, now)
    assert verified.approval_id == artifact["approval_id"]
    assert verified.issued_by == artifact["issued_by"]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(approvals(), st.data())
def test_any_one_character_change_of_a_signed_member_is_refused(
    case: tuple[dict[str, Any], Keyring, datetime], data: st.DataObject
) -> None:
    artifact, keyring, now = case
    name = data.draw(st.sampled_from(sorted(n for n in artifact if n != "signature")), label="member")
    value: str = artifact[name]
    position = data.draw(st.integers(min_value=0, max_value=len(value) - 1), label="position")
    replacement = data.draw(st.characters(exclude_categories=["Cs"]), label="replacement")
    assume(replacement != value[position])
    forged = {**artifact, name: value[:position] + replacement + value[position + 1 :]}
    try:
        verify(forged, keyring, now)
    except ApprovalError as error:
        allowed = {"approval_bad_signature", "approval_malformed"}
        if name == "kid":
            allowed.add("approval_unknown_key")  # the key is looked up before the signature is checked
        assert error.code in allowed, (name, error.code)
    else:
        raise AssertionError(f"a forged {name} was accepted")


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=80)
member_names = st.sampled_from(sorted(REQUIRED_FIELDS | {"audience", "kid", "scope", ""})) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(member_names, json_scalars | st.lists(json_scalars, max_size=3), max_size=12) | json_scalars)
def test_junk_is_refused_with_an_approval_code_never_a_crash(junk: Any) -> None:
    keyring = Keyring([KeyringEntry(kid="k", alg="hmac-sha256", key=HMAC_SECRET, issuers=frozenset({"i"}))])
    try:
        verify_approval(
            junk, keyring=keyring, action_hash="a" * 64, tenant_id="t", audience="s",
            now=datetime(2026, 11, 21, tzinfo=UTC), clock_skew_seconds=60, max_ttl_seconds=300,
        )  # fmt: skip
    except ApprovalError as error:
        assert error.code.startswith("approval_")
    else:
        raise AssertionError("junk was accepted")


@given(st.integers(min_value=MAX_FIELD_CHARS + 1, max_value=4 * MAX_FIELD_CHARS))
def test_over_long_identifiers_are_malformed(length: int) -> None:
    keyring = Keyring([KeyringEntry(kid="k", alg="hmac-sha256", key=HMAC_SECRET, issuers=frozenset({"i"}))])
    entry = next(iter(keyring))
    now = datetime(2026, 11, 21, tzinfo=UTC)
    artifact = sign_approval(
        {"approval_id": "x" * length, "action_hash": "a" * 64, "issued_by": "i", "issued_at": "2026-11-21T00:00:00Z",
         "expires_at": "2026-11-21T00:01:00Z", "tenant_id": "t", "kid": "k"},
        entry,
    )  # fmt: skip
    try:
        verify(artifact, keyring, now)
    except ApprovalError as error:
        assert error.code == "approval_malformed"
    else:
        raise AssertionError("an over-long approval_id was accepted")


ANY_INSTANT = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    issued_at=ANY_INSTANT | st.sampled_from([datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]),
    expires_at=ANY_INSTANT | st.sampled_from([datetime.max.replace(tzinfo=UTC)]),
    now=ANY_INSTANT,
    skew=st.integers(min_value=0, max_value=3600),
    retention=st.none() | st.integers(min_value=1, max_value=10**12),
)
def test_signed_artifacts_at_the_ends_of_time_raise_only_approval_errors(
    issued_at: datetime, expires_at: datetime, now: datetime, skew: int, retention: int | None
) -> None:
    """No instant a datetime holds, plus any skew, overflows the checks (issue 9: year 9999)."""
    fields = {
        "approval_id": "ap-1", "action_hash": "a" * 64, "issued_by": "clawshield", "tenant_id": "t",
        "issued_at": rfc3339(issued_at, UTC), "expires_at": rfc3339(expires_at, UTC),
    }  # fmt: skip
    entry = KeyringEntry(kid="only", alg="ed25519", key=ED_PUBLIC, issuers=frozenset({"clawshield"}))
    min_issued_at = None
    if retention is not None:
        try:
            min_issued_at = now - timedelta(seconds=retention)
        except OverflowError:
            min_issued_at = datetime.min.replace(tzinfo=UTC)
    with contextlib.suppress(ApprovalError):  # any other exception (OverflowError) fails the test
        verify_approval(
            sign_approval(fields, ED_KEY), keyring=Keyring([entry]), action_hash="a" * 64, tenant_id="t",
            audience="srv", now=now, clock_skew_seconds=skew, max_ttl_seconds=300, min_issued_at=min_issued_at,
        )  # fmt: skip
