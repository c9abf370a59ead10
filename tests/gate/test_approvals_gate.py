"""Signed approvals through the real gate on a real SQLite file (SPEC §4, §5; issue 3).

The artifact checks themselves have unit tests in ``tests/core/test_approval*.py``; here each
behaviour is shown end to end through :meth:`Gate.call`: what executes (counted on disk by the
``count`` action), what is consumed, what the inbox holds, and what the receipt says. Artifacts
are minted with a governance key the server never sees (``oe_testing.approvals``); ``tamper``
re-signs with that real key so the semantic check, not the signature, is what refuses.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import server_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from mcp import Client
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.approvals import (
    GOV_KID,
    GOV_PUBLIC_B64,
    HMAC_ENTRY,
    HMAC_SECRET,
    ISSUER,
    approvals_config,
    iso,
    mint,
    tamper,
)
from oe_testing.http_server import app_client
from oe_testing.receipts import body_of

from openexec_mcp.core.action import compute_action_hash
from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.encoding import b64encode
from openexec_mcp.errors import ConfigError
from openexec_mcp.gate.pipeline import Answer, CallContext, Gate
from openexec_mcp.keystore import public_keys_document
from openexec_mcp.runtime import DEMO_WARNING, Runtime
from openexec_mcp.transport.mcp import build_mcp_server

pytestmark = pytest.mark.anyio

TENANT = "default"


# -- helpers ---------------------------------------------------------------------------------------


def ahash(payload: dict[str, Any], nonce: str, action: str = "count") -> str:
    return compute_action_hash(action, payload, nonce)


def artifact_hash(artifact: dict[str, Any]) -> str:
    return sha256_hex(canonicalize(artifact))


async def call(
    runtime: Runtime | Gate,
    payload: dict[str, Any],
    nonce: str,
    *,
    artifact: Any = None,
    tenant_id: str = TENANT,
    action: str = "count",
) -> Answer:
    gate = runtime.gate if isinstance(runtime, Runtime) else runtime
    ctx = CallContext(tenant_id=tenant_id, run_id="run-approvals", approval_artifact=artifact)
    answer = await gate.call(action, {**payload, "nonce": nonce}, ctx)
    assert isinstance(answer, Answer)  # no elicitor here: never an input round
    return answer


def code(answer: Answer) -> str | None:
    error = answer.envelope["error"]
    return None if error is None else str(error["code"])


def submit_to_inbox(runtime: Runtime, artifact: dict[str, Any]) -> None:
    """What ``POST /approvals`` stores once the artifact checks out."""
    stored = runtime.store.add_approval_artifact(
        artifact["action_hash"], artifact["approval_id"], canonicalize(artifact).decode(), format_timestamp(utc_now())
    )
    assert stored


def pending(runtime: Runtime, tenant_id: str | None = None) -> list[Any]:
    return runtime.store.list_approval_requests(utc_now().timestamp(), tenant_id)


def assert_verifies(runtime: Runtime, answer: Answer) -> dict[str, Any]:
    """Check the receipt with the published server key, as an outside auditor would."""
    return verifier.verify_envelope(answer.envelope, public_keys_document(runtime.server_key))


@pytest.fixture
def clawshield(make_runtime: Callable[..., Runtime]) -> Runtime:
    """Clawshield mode: every action needs an artifact signed by the test governance key."""
    return make_runtime(mode="clawshield", approvals=approvals_config())


# -- propose: a call without an artifact -------------------------------------------------------------


async def test_clawshield_call_without_artifact_is_approval_required_and_consumes_nothing(
    clawshield: Runtime, counter_file: Path
) -> None:
    answer = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert (answer.status, code(answer)) == ("denied", "approval_required")
    request = answer.envelope["approval_request"]
    assert set(request) == {"request_id", "action_hash", "expires_at"}
    assert request["action_hash"] == ahash({"label": "a"}, "nonce-0001")
    assert answer.envelope["result"] is None
    body = assert_verifies(clawshield, answer)
    assert (body["status"], body["error_code"]) == ("denied", "approval_required")
    assert body["approval"] == {
        "method": "signed",
        "approval_id": None,
        "kid": None,
        "issued_by": None,
        "artifact_hash": None,
    }
    assert body["policy_hash"] == clawshield.policy.policy_hash
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce(TENANT, "nonce-0001") is None


async def test_approval_required_records_the_exact_call_in_the_inbox(clawshield: Runtime) -> None:
    answer = await call(clawshield, {"label": "a"}, "nonce-0001")
    request_id = answer.envelope["approval_request"]["request_id"]
    (recorded,) = pending(clawshield)
    assert recorded.request_id == request_id
    assert recorded.tenant_id == TENANT
    assert recorded.action_hash == ahash({"label": "a"}, "nonce-0001")
    assert json.loads(recorded.action_request) == {"action": "count", "payload": {"label": "a"}, "nonce": "nonce-0001"}
    assert recorded.expires_at == answer.envelope["approval_request"]["expires_at"]
    assert datetime.fromisoformat(recorded.expires_at) > utc_now()


async def test_repeating_the_unapproved_call_reuses_its_pending_request(clawshield: Runtime) -> None:
    first = await call(clawshield, {"label": "a"}, "nonce-0001")
    second = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert second.envelope["approval_request"] == first.envelope["approval_request"]
    other = await call(clawshield, {"label": "b"}, "nonce-0002")
    assert other.envelope["approval_request"]["request_id"] != first.envelope["approval_request"]["request_id"]
    assert len(pending(clawshield)) == 2


# -- execute: a valid artifact -------------------------------------------------------------------------


async def test_valid_artifact_in_the_call_executes_once_with_a_signed_approval_on_the_receipt(
    clawshield: Runtime, counter_file: Path
) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    answer = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)
    assert (answer.status, code(answer)) == ("executed", None)
    assert answer.envelope["result"] == {"executions": 1}
    assert executions(counter_file) == 1
    body = assert_verifies(clawshield, answer)
    assert body["approval"] == {
        "method": "signed",
        "approval_id": artifact["approval_id"],
        "kid": GOV_KID,
        "issued_by": ISSUER,
        "artifact_hash": artifact_hash(artifact),
    }
    assert body["policy_hash"] == clawshield.policy.policy_hash
    assert body["action_hash"] == artifact["action_hash"]


async def test_artifact_without_kid_is_verified_by_the_only_key_and_the_receipt_names_it(clawshield: Runtime) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"), kid=None)
    assert "kid" not in artifact
    answer = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)
    assert answer.status == "executed"
    assert body_of(answer.envelope)["approval"]["kid"] == GOV_KID


async def test_executing_closes_the_pending_inbox_request(clawshield: Runtime) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-0001")
    request_id = proposed.envelope["approval_request"]["request_id"]
    assert clawshield.store.get_approval_request(request_id) is not None
    executed = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=mint(ahash({"label": "a"}, "nonce-0001")))
    assert executed.status == "executed"
    assert clawshield.store.get_approval_request(request_id) is None
    assert pending(clawshield) == []


# -- single use ---------------------------------------------------------------------------------------


async def test_one_artifact_with_a_second_nonce_is_refused_and_runs_nothing(
    clawshield: Runtime, counter_file: Path
) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    assert (await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)).status == "executed"
    again = await call(clawshield, {"label": "a"}, "nonce-0002", artifact=artifact)
    # The artifact names one action_hash, and the nonce is part of it.
    assert (again.status, code(again)) == ("denied", "approval_action_mismatch")
    assert executions(counter_file) == 1
    assert clawshield.store.get_nonce(TENANT, "nonce-0002") is None


async def test_approval_id_reused_for_another_call_is_approval_consumed(
    clawshield: Runtime, counter_file: Path
) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    assert (await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)).status == "executed"
    # The approver's key signs the same approval_id for a second call: it still executes once.
    reused = tamper(artifact, action_hash=ahash({"label": "a"}, "nonce-0002"))
    again = await call(clawshield, {"label": "a"}, "nonce-0002", artifact=reused)
    assert (again.status, code(again)) == ("denied", "approval_consumed")
    assert body_of(again.envelope)["error_code"] == "approval_consumed"
    assert executions(counter_file) == 1
    # Nothing of the refused call was consumed: a fresh approval for the same nonce works.
    assert clawshield.store.get_nonce(TENANT, "nonce-0002") is None
    fresh = await call(clawshield, {"label": "a"}, "nonce-0002", artifact=mint(ahash({"label": "a"}, "nonce-0002")))
    assert fresh.status == "executed"
    assert executions(counter_file) == 2


async def test_concurrent_calls_spending_one_approval_id_execute_exactly_once(
    clawshield: Runtime, counter_file: Path
) -> None:
    first = mint(ahash({"label": "a"}, "nonce-race-0"))
    artifacts = [first] + [tamper(first, action_hash=ahash({"label": "a"}, f"nonce-race-{i}")) for i in range(1, 6)]
    answers: list[Answer] = []

    async def one(index: int) -> None:
        answers.append(await call(clawshield, {"label": "a"}, f"nonce-race-{index}", artifact=artifacts[index]))

    async with anyio.create_task_group() as tg:
        for index in range(len(artifacts)):
            tg.start_soon(one, index)
    assert sorted(code(answer) or answer.status for answer in answers) == ["approval_consumed"] * 5 + ["executed"]
    assert executions(counter_file) == 1


async def test_pruned_nonce_record_cannot_be_replayed_with_its_consumed_approval(
    clawshield: Runtime, counter_file: Path
) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    assert (await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)).status == "executed"
    # Retention pruning removes the nonce record (SPEC §4); the approval_id stays spent.
    with sqlite3.connect(clawshield.settings.storage_url().removeprefix("sqlite:///")) as db:
        db.execute("DELETE FROM nonces WHERE nonce = 'nonce-0001'")
    db.close()
    again = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)
    assert (again.status, code(again)) == ("denied", "approval_consumed")
    assert executions(counter_file) == 1


# -- refusals consume nothing ------------------------------------------------------------------------


async def test_artifact_for_another_action_hash_is_refused_consumes_nothing_and_the_corrected_retry_runs(
    clawshield: Runtime, counter_file: Path
) -> None:
    other_call = ahash({"label": "b"}, "nonce-0002")
    wrong = mint(other_call)
    denied = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=wrong)
    assert (denied.status, code(denied)) == ("denied", "approval_action_mismatch")
    assert denied.envelope["approval_request"] is None
    assert body_of(denied.envelope)["approval"] == {
        "method": "signed",
        "approval_id": wrong["approval_id"],
        "kid": GOV_KID,
        "issued_by": ISSUER,
        "artifact_hash": artifact_hash(wrong),
    }
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce(TENANT, "nonce-0001") is None
    # Same nonce, the right artifact: executes.
    right = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=mint(ahash({"label": "a"}, "nonce-0001")))
    assert right.status == "executed"
    # The refused artifact was not spent either: it still approves its own call.
    own = await call(clawshield, {"label": "b"}, "nonce-0002", artifact=wrong)
    assert own.status == "executed"
    assert executions(counter_file) == 2


HOUR = timedelta(hours=1)

REFUSALS: dict[str, tuple[str, Callable[[dict[str, Any]], Any]]] = {
    "tenant": ("approval_tenant_mismatch", lambda a: tamper(a, tenant_id="someone-else")),
    "audience": ("approval_audience_mismatch", lambda a: tamper(a, audience="another-server")),
    "issuer": ("approval_issuer_mismatch", lambda a: tamper(a, issued_by="mallory")),
    "unknown-kid": ("approval_unknown_key", lambda a: tamper(a, kid="gov-unknown")),
    "future": (
        "approval_not_yet_valid",
        lambda a: tamper(a, issued_at=iso(utc_now() + HOUR), expires_at=iso(utc_now() + HOUR + timedelta(minutes=1))),
    ),
    "expired": (
        "approval_expired",
        lambda a: tamper(a, issued_at=iso(utc_now() - HOUR), expires_at=iso(utc_now() - HOUR + timedelta(minutes=4))),
    ),
    "ttl": ("approval_ttl_too_long", lambda a: tamper(a, expires_at=iso(utc_now() + HOUR))),
    "expires-9999": ("approval_ttl_too_long", lambda a: tamper(a, expires_at="9999-12-31T23:59:59Z")),
    "expires-9999-offset": ("approval_malformed", lambda a: tamper(a, expires_at="9999-12-31T23:59:59-01:00")),
    "issued-year-1": ("approval_expired", lambda a: tamper(a, issued_at="0001-01-01T00:00:00Z")),
    "naive-time": ("approval_malformed", lambda a: tamper(a, expires_at=a["expires_at"].rstrip("Z"))),
    "edited-not-resigned": ("approval_bad_signature", lambda a: {**a, "tenant_id": TENANT + "x"}),
    "not-an-object": ("approval_malformed", lambda a: [a]),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
async def test_refused_artifact_is_denied_with_its_code_and_the_corrected_retry_runs(
    clawshield: Runtime, counter_file: Path, case: str
) -> None:
    expected, spoil = REFUSALS[case]
    good = mint(ahash({"label": "a"}, "nonce-0001"), audience=clawshield.settings.server_id)
    denied = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=spoil(good))
    assert (denied.status, code(denied)) == ("denied", expected)
    assert body_of(denied.envelope)["error_code"] == expected
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce(TENANT, "nonce-0001") is None
    retry = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=good)
    assert retry.status == "executed"
    assert executions(counter_file) == 1


async def test_artifact_expiring_at_the_end_of_year_9999_is_ttl_too_long_on_record_not_internal_error(
    clawshield: Runtime, counter_file: Path
) -> None:
    """expires_at + skew once overflowed datetime: internal_error, no receipt (issue 9)."""
    good = mint(ahash({"label": "a"}, "nonce-0001"), audience=clawshield.settings.server_id)
    forever = tamper(good, expires_at="9999-12-31T23:59:59Z")
    denied = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=forever)
    assert (denied.status, code(denied)) == ("denied", "approval_ttl_too_long")
    body = assert_verifies(clawshield, denied)
    assert (body["status"], body["error_code"]) == ("denied", "approval_ttl_too_long")
    assert body["approval"]["artifact_hash"] == artifact_hash(forever)
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce(TENANT, "nonce-0001") is None


async def test_artifact_expiring_in_year_9999_over_http_execute_is_a_403_envelope_with_a_receipt(
    clawshield: Runtime, counter_file: Path
) -> None:
    good = mint(ahash({"label": "a"}, "nonce-0001"), audience=clawshield.settings.server_id)
    forever = tamper(good, expires_at="9999-12-31T23:59:59Z")
    async with app_client(clawshield) as client:
        answer = await client.post(
            "/execute",
            json={"action": "count", "payload": {"label": "a"}, "nonce": "nonce-0001", "approval_artifact": forever},
        )
    envelope = answer.json()
    assert (answer.status_code, envelope["status"], envelope["error"]["code"]) == (
        403,
        "denied",
        "approval_ttl_too_long",
    )
    assert verifier.verify_envelope(envelope, public_keys_document(clawshield.server_key))["error_code"] == (
        "approval_ttl_too_long"
    )
    assert executions(counter_file) == 0


async def test_artifact_for_tenant_a_used_by_tenant_b_is_tenant_mismatch(
    clawshield: Runtime, counter_file: Path
) -> None:
    for_a = mint(ahash({"label": "a"}, "nonce-0001"), tenant_id="tenant-a")
    stolen = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=for_a, tenant_id="tenant-b")
    assert (stolen.status, code(stolen)) == ("denied", "approval_tenant_mismatch")
    assert "tenant-b" not in stolen.envelope["error"]["message"]  # the caller's tenant is never echoed
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce("tenant-b", "nonce-0001") is None
    owner = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=for_a, tenant_id="tenant-a")
    assert owner.status == "executed"
    assert body_of(owner.envelope)["tenant_id"] == "tenant-a"


# -- replays in clawshield mode ----------------------------------------------------------------------


async def test_replayed_nonce_without_artifact_returns_that_same_calls_result(
    clawshield: Runtime, counter_file: Path
) -> None:
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    first = await call(clawshield, {"label": "a"}, "nonce-0001", artifact=artifact)
    replay = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert (replay.status, code(replay)) == ("replayed", None)
    assert replay.envelope["result"] == first.envelope["result"]
    body = assert_verifies(clawshield, replay)
    assert body["original_exec_id"] == first.envelope["exec_id"]
    assert body["action_hash"] == body_of(first.envelope)["action_hash"]
    assert body["result_hash"] == body_of(first.envelope)["result_hash"]
    assert body["approval"] == body_of(first.envelope)["approval"]  # the approval it ran under
    assert executions(counter_file) == 1


async def test_replayed_nonce_with_another_payload_is_nonce_conflict_never_the_other_result(
    clawshield: Runtime, counter_file: Path
) -> None:
    await call(clawshield, {"label": "a"}, "nonce-0001", artifact=mint(ahash({"label": "a"}, "nonce-0001")))
    bare = await call(clawshield, {"label": "b"}, "nonce-0001")
    # Even with a valid approval for the other payload, the used nonce is refused.
    approved = await call(clawshield, {"label": "b"}, "nonce-0001", artifact=mint(ahash({"label": "b"}, "nonce-0001")))
    other_action = await call(clawshield, {}, "nonce-0001", action="echo")
    for answer in (bare, approved, other_action):
        assert (answer.status, code(answer)) == ("denied", "nonce_conflict")
        assert answer.envelope["result"] is None
        assert body_of(answer.envelope)["result_hash"] is None
        assert body_of(answer.envelope)["original_exec_id"] is None
    assert executions(counter_file) == 1


async def test_another_tenants_used_nonce_is_not_replayed_to_this_tenant(
    clawshield: Runtime, counter_file: Path
) -> None:
    await call(
        clawshield,
        {"label": "a"},
        "nonce-0001",
        artifact=mint(ahash({"label": "a"}, "nonce-0001"), tenant_id="tenant-a"),
        tenant_id="tenant-a",
    )
    answer = await call(clawshield, {"label": "a"}, "nonce-0001", tenant_id="tenant-b")
    assert (answer.status, code(answer)) == ("denied", "approval_required")
    assert answer.envelope["result"] is None
    assert executions(counter_file) == 1


# -- the inbox ------------------------------------------------------------------------------------


async def test_artifact_submitted_to_the_inbox_is_picked_up_by_the_retry(
    clawshield: Runtime, counter_file: Path
) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-0001")
    request = proposed.envelope["approval_request"]
    artifact = mint(request["action_hash"])
    submit_to_inbox(clawshield, artifact)
    retry = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert (retry.status, code(retry)) == ("executed", None)
    assert body_of(retry.envelope)["approval"] == {
        "method": "signed",
        "approval_id": artifact["approval_id"],
        "kid": GOV_KID,
        "issued_by": ISSUER,
        "artifact_hash": artifact_hash(artifact),
    }
    assert executions(counter_file) == 1
    assert clawshield.store.get_approval_request(request["request_id"]) is None
    assert pending(clawshield) == []
    # The inbox artifact is spent: the same call again is a replay, not a second run.
    assert (await call(clawshield, {"label": "a"}, "nonce-0001")).status == "replayed"
    assert executions(counter_file) == 1


async def test_inbox_artifact_for_another_call_does_not_approve_this_one(
    clawshield: Runtime, counter_file: Path
) -> None:
    submit_to_inbox(clawshield, mint(ahash({"label": "b"}, "nonce-0001")))
    answer = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert (answer.status, code(answer)) == ("denied", "approval_required")
    assert executions(counter_file) == 0


async def test_newest_valid_inbox_artifact_wins_over_an_older_refused_one(clawshield: Runtime) -> None:
    action_hash = ahash({"label": "a"}, "nonce-0001")
    submit_to_inbox(clawshield, mint(action_hash, issued_by="mallory"))
    good = mint(action_hash)
    submit_to_inbox(clawshield, good)
    answer = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert answer.status == "executed"
    assert body_of(answer.envelope)["approval"]["approval_id"] == good["approval_id"]


async def test_another_tenants_inbox_artifact_neither_leaks_nor_blocks_the_approval_request(
    clawshield: Runtime, counter_file: Path
) -> None:
    # Same action, payload and nonce in two tenants: one action_hash, two separate calls.
    action_hash = ahash({"label": "a"}, "nonce-0001")
    submit_to_inbox(clawshield, mint(action_hash, tenant_id="tenant-a"))
    answer = await call(clawshield, {"label": "a"}, "nonce-0001", tenant_id="tenant-b")
    assert "tenant-a" not in json.dumps(answer.envelope["error"])
    assert (answer.status, code(answer)) == ("denied", "approval_required")
    assert answer.envelope["approval_request"] is not None
    assert [r.tenant_id for r in pending(clawshield, "tenant-b")] == ["tenant-b"]
    assert executions(counter_file) == 0
    # Tenant B's own approval, submitted beside A's, executes B's call; A's stays unspent.
    submit_to_inbox(clawshield, mint(action_hash, tenant_id="tenant-b"))
    assert (await call(clawshield, {"label": "a"}, "nonce-0001", tenant_id="tenant-b")).status == "executed"
    assert (await call(clawshield, {"label": "a"}, "nonce-0001", tenant_id="tenant-a")).status == "executed"
    assert executions(counter_file) == 2


async def test_call_whose_inbox_artifact_expired_gets_a_fresh_approval_request(clawshield: Runtime) -> None:
    action_hash = ahash({"label": "a"}, "nonce-0001")
    submit_to_inbox(clawshield, mint(action_hash, now=utc_now() - HOUR))  # approved, then left too long
    answer = await call(clawshield, {"label": "a"}, "nonce-0001")
    assert (answer.status, code(answer)) == ("denied", "approval_expired")
    assert answer.envelope["approval_request"] is not None
    assert [r.action_hash for r in pending(clawshield)] == [action_hash]
    # The approver approves again; the retry picks the fresh artifact over the stale one.
    submit_to_inbox(clawshield, mint(action_hash))
    assert (await call(clawshield, {"label": "a"}, "nonce-0001")).status == "executed"


async def test_pending_requests_expire(clawshield: Runtime) -> None:
    moments = [utc_now() - HOUR]
    gate = Gate(
        registry=clawshield.registry,
        policy=clawshield.policy,
        store=clawshield.store,
        server_key=clawshield.server_key,
        server_id=clawshield.settings.server_id,
        approver=clawshield.gate.approver,
        clock=lambda: moments[0],
    )
    old = await call(gate, {"label": "a"}, "nonce-0001")
    old_request = old.envelope["approval_request"]
    lifetime = datetime.fromisoformat(old_request["expires_at"]) - moments[0]
    assert timedelta(minutes=5) <= lifetime < HOUR
    assert pending(clawshield) == []  # listed no longer: expired by the real clock
    # A later call for the same action opens a new request instead of reviving the expired one.
    moments[0] = utc_now()
    new = await call(gate, {"label": "a"}, "nonce-0001")
    assert new.envelope["approval_request"]["request_id"] != old_request["request_id"]
    assert [r.request_id for r in pending(clawshield)] == [new.envelope["approval_request"]["request_id"]]
    assert clawshield.store.get_approval_request(old_request["request_id"]) is None


# -- policy -------------------------------------------------------------------------------------------


async def test_deny_policy_refuses_even_a_valid_artifact_and_opens_no_request(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime = make_runtime(
        mode="clawshield", approvals=approvals_config(), policy={"actions": {"count": {"approval": "deny"}}}
    )
    artifact = mint(ahash({"label": "a"}, "nonce-0001"))
    answer = await call(runtime, {"label": "a"}, "nonce-0001", artifact=artifact)
    assert (answer.status, code(answer)) == ("denied", "approval_denied")
    assert answer.envelope["approval_request"] is None
    assert pending(runtime) == []
    assert executions(counter_file) == 0
    assert runtime.store.get_nonce(TENANT, "nonce-0001") is None


async def test_per_action_override_in_demo_mode_requires_a_signature_for_that_action_only(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    runtime = make_runtime(approvals=approvals_config(), policy={"actions": {"count": {"approval": "signed"}}})
    assert runtime.policy.mode == "demo"
    assert dict(runtime.policy.approvals) == {
        "add": "auto",
        "boom": "auto",
        "count": "signed",
        "count_then_crash": "auto",
        "echo": "auto",
        "not_json": "auto",
    }
    assert code(await call(runtime, {"label": "a"}, "nonce-0001")) == "approval_required"
    echoed = await call(runtime, {"msg": "hi"}, "nonce-0002", action="echo")
    assert echoed.status == "executed"
    assert body_of(echoed.envelope)["approval"]["method"] == "auto"
    signed = await call(runtime, {"label": "a"}, "nonce-0001", artifact=mint(ahash({"label": "a"}, "nonce-0001")))
    assert signed.status == "executed"
    assert executions(counter_file) == 1


async def test_per_action_auto_override_in_clawshield_mode_runs_without_artifact(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(
        mode="clawshield", approvals=approvals_config(), policy={"actions": {"echo": {"approval": "auto"}}}
    )
    assert (await call(runtime, {"msg": "hi"}, "nonce-0001", action="echo")).status == "executed"
    assert code(await call(runtime, {"label": "a"}, "nonce-0002")) == "approval_required"


async def test_hmac_key_from_clawshield_secret_key_approves_end_to_end(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch, counter_file: Path
) -> None:
    monkeypatch.setenv("CLAWSHIELD_SECRET_KEY", HMAC_SECRET)
    runtime = make_runtime(mode="clawshield")
    action_hash = ahash({"label": "a"}, "nonce-0001")
    artifact = mint(action_hash, key=HMAC_ENTRY, kid="clawshield")
    assert len(base64.b64decode(artifact["signature"])) == 32
    answer = await call(runtime, {"label": "a"}, "nonce-0001", artifact=artifact)
    assert answer.status == "executed"
    assert body_of(answer.envelope)["approval"]["kid"] == "clawshield"
    assert executions(counter_file) == 1
    # The Ed25519 governance key means nothing to this server.
    ed = await call(
        runtime, {"label": "b"}, "nonce-0002", artifact=mint(ahash({"label": "b"}, "nonce-0002"), kid="clawshield")
    )
    assert code(ed) == "approval_bad_signature"
    # A tag under another secret, re-signed correctly in every other way, is refused too.
    forged_entry = type(HMAC_ENTRY)(
        kid="clawshield", alg="hmac-sha256", key=b"a guessed secret, 32 bytes or more", issuers=frozenset({ISSUER})
    )
    forged = await call(
        runtime,
        {"label": "b"},
        "nonce-0002",
        artifact=mint(ahash({"label": "b"}, "nonce-0002"), key=forged_entry, kid="clawshield"),
    )
    assert code(forged) == "approval_bad_signature"
    assert executions(counter_file) == 1


async def test_clawshield_public_key_and_tenant_from_the_environment(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAWSHIELD_PUBLIC_KEY", GOV_PUBLIC_B64)
    monkeypatch.setenv("CLAWSHIELD_TENANT_ID", "acme")
    monkeypatch.setenv("OPENEXEC_MODE", "clawshield")
    runtime = make_runtime()
    assert runtime.settings.tenant_id == "acme"
    artifact = mint(ahash({"label": "a"}, "nonce-0001"), tenant_id="acme", kid="clawshield")
    answer = await call(runtime, {"label": "a"}, "nonce-0001", artifact=artifact, tenant_id="acme")
    assert answer.status == "executed"
    assert body_of(answer.envelope)["approval"]["kid"] == "clawshield"


async def test_two_keys_at_once_let_approvers_rotate_and_a_revoked_key_approves_nothing(
    make_runtime: Callable[..., Runtime], counter_file: Path
) -> None:
    new_key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    new_public = b64encode(new_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    old_entry = approvals_config("gov-old")["keys"][0]
    new_entry = {"kid": "gov-new", "alg": "ed25519", "public_key": new_public, "issuers": [ISSUER]}
    both = make_runtime(mode="clawshield", approvals={"keys": [old_entry, new_entry]})
    old = await call(
        both, {"label": "a"}, "nonce-0001", artifact=mint(ahash({"label": "a"}, "nonce-0001"), kid="gov-old")
    )
    new = await call(
        both,
        {"label": "a"},
        "nonce-0002",
        artifact=mint(ahash({"label": "a"}, "nonce-0002"), key=new_key, kid="gov-new"),
    )
    assert (old.status, new.status) == ("executed", "executed")
    assert [body_of(a.envelope)["approval"]["kid"] for a in (old, new)] == ["gov-old", "gov-new"]
    # With two keys an artifact must say which one signed it.
    unnamed = await call(
        both, {"label": "a"}, "nonce-0003", artifact=mint(ahash({"label": "a"}, "nonce-0003"), kid=None)
    )
    assert code(unnamed) == "approval_unknown_key"
    # The old key revoked (same database): its fresh artifacts are refused, the new key still works.
    rotated = make_runtime(mode="clawshield", approvals={"keys": [{**old_entry, "revoked": True}, new_entry]})
    revoked = await call(
        rotated, {"label": "a"}, "nonce-0004", artifact=mint(ahash({"label": "a"}, "nonce-0004"), kid="gov-old")
    )
    assert code(revoked) == "approval_unknown_key"
    current = await call(
        rotated,
        {"label": "a"},
        "nonce-0004",
        artifact=mint(ahash({"label": "a"}, "nonce-0004"), key=new_key, kid="gov-new"),
    )
    assert current.status == "executed"
    assert executions(counter_file) == 3


@pytest.mark.parametrize(
    "public_key",
    [base64.b64encode(bytes(32)).decode(), base64.b64encode(b"\x01" + bytes(31)).decode(), "not base64!"],
    ids=["small-order-y0", "identity-point", "junk"],
)
def test_weak_or_unreadable_approval_key_fails_closed_at_start(
    make_runtime: Callable[..., Runtime], public_key: str
) -> None:
    with pytest.raises(ConfigError):
        make_runtime(
            mode="clawshield", approvals={"keys": [{"kid": "weak", "alg": "ed25519", "public_key": public_key}]}
        )


# -- start-up refusals of issue 9 -------------------------------------------------------------------


def test_two_byte_hmac_secret_in_config_fails_closed_at_start(make_runtime: Callable[..., Runtime]) -> None:
    """A 2-byte secret was brute-forced online in 430 calls by a caller that may only execute."""
    with pytest.raises(ConfigError, match="at least 32 bytes") as raised:
        make_runtime(mode="clawshield", approvals={"keys": [{"kid": "k", "alg": "hmac-sha256", "secret": "zq"}]})
    assert "zq" not in raised.value.message


def test_31_byte_hmac_secret_fails_closed_and_32_bytes_start(make_runtime: Callable[..., Runtime]) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        make_runtime(mode="clawshield", approvals={"keys": [{"kid": "k", "alg": "hmac-sha256", "secret": "s" * 31}]})
    runtime = make_runtime(
        mode="clawshield", approvals={"keys": [{"kid": "k", "alg": "hmac-sha256", "secret": "s" * 32}]}
    )
    assert len(runtime.gate.approver.keyring) == 1


@pytest.mark.parametrize("value", ["zq", ""], ids=["two-bytes", "empty"])
def test_short_or_empty_clawshield_secret_key_fails_closed_at_start(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """An empty CLAWSHIELD_SECRET_KEY configured no key while /health said verification was on."""
    monkeypatch.setenv("CLAWSHIELD_SECRET_KEY", value)
    with pytest.raises(ConfigError, match="CLAWSHIELD_SECRET_KEY") as raised:
        make_runtime(mode="clawshield")
    assert (value or "\x00") not in raised.value.message.replace("CLAWSHIELD_SECRET_KEY", "")


@pytest.mark.parametrize("not_after", ["2027-11-01T00:00:00", "2027-11-01", 1700000000], ids=["naive", "date", "unix"])
def test_key_window_that_is_not_rfc3339_with_an_offset_fails_closed_at_start(
    make_runtime: Callable[..., Runtime], not_after: Any
) -> None:
    """Timestamps go through the one RFC 3339 parser (core.clock): a naive one means nothing."""
    key = {"kid": GOV_KID, "alg": "ed25519", "public_key": GOV_PUBLIC_B64, "issuers": [ISSUER], "not_after": not_after}
    with pytest.raises(ConfigError, match="RFC 3339"):
        make_runtime(mode="clawshield", approvals={"keys": [key]})


@pytest.mark.parametrize(
    ("retention", "refused"), [(300 + 2 * 60, True), (300 + 60 + 1, True), (300 + 2 * 60 + 1, False)]
)
def test_nonce_retention_must_outlive_max_ttl_plus_twice_the_skew(
    make_runtime: Callable[..., Runtime], retention: int, refused: bool
) -> None:
    """An artifact issued one skew ahead stays valid until expires_at + skew: 2 skews past max_ttl."""
    overrides: dict[str, Any] = {
        "nonce": {"retention_seconds": retention},
        "approvals": {"max_ttl_seconds": 300, "clock_skew_seconds": 60},
    }
    if refused:
        with pytest.raises(ConfigError, match=r"nonce.retention_seconds .* must exceed .*\(420\)"):
            make_runtime(**overrides)
    else:
        assert make_runtime(**overrides).settings.nonce.retention_seconds == retention


@pytest.mark.parametrize(
    "env",
    [{"CLAWSHIELD_SECRET_KEY": "zq"}, {"CLAWSHIELD_SECRET_KEY": ""}, {"OPENEXEC_NONCE__RETENTION_SECONDS": "420"}],
    ids=["two-byte-secret", "empty-secret", "retention-one-skew-short"],
)
def test_serve_refuses_to_start_with_exit_2_and_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    outcome = subprocess.run(
        [sys.executable, "-m", "openexec_mcp", "serve"],
        env=server_env(tmp_path / "state", OPENEXEC_MODE="clawshield", **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcome.returncode == 2, outcome.stderr
    assert outcome.stdout == "" and "Traceback" not in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "state" / "openexec.db").exists()  # nothing was opened


@pytest.mark.parametrize(
    "overrides",
    [
        {"mode": "paranoid"},
        {"policy": {"actions": {"no_such_action": {"approval": "auto"}}}},
        {"policy": {"actions": {"count": {"approval": "maybe"}}}},
        {"toolsets": {"safe": ["echo", "no_such_action"]}},
    ],
    ids=["unknown-mode", "unknown-action-in-policy", "unknown-approval", "unknown-action-in-toolset"],
)
def test_unknown_names_in_config_fail_closed(make_runtime: Callable[..., Runtime], overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        make_runtime(**overrides)
    assert raised.value.code == "config_error"
    assert "\n" not in raised.value.message


def test_unknown_toolset_fails_closed(make_runtime: Callable[..., Runtime]) -> None:
    with pytest.raises(ConfigError, match="unknown toolset 'missing'"):
        make_runtime(toolset="missing", toolsets={"safe": ["echo"]})


async def test_toolset_exposes_only_its_actions(make_runtime: Callable[..., Runtime], counter_file: Path) -> None:
    runtime = make_runtime(toolset="safe", toolsets={"safe": ["echo", "add"], "all": ["echo", "add", "count"]})
    assert [action.name for action in runtime.gate.exposed()] == ["add", "echo"]
    assert sorted(runtime.policy.to_json()["exposed"]) == ["add", "echo"]
    hidden = await call(runtime, {"label": "a"}, "nonce-0001")
    assert (hidden.status, code(hidden)) == ("denied", "unknown_action")
    assert "receipt" not in hidden.envelope  # refused before anything was recorded
    assert executions(counter_file) == 0
    assert (await call(runtime, {"msg": "hi"}, "nonce-0002", action="echo")).status == "executed"
    async with Client(build_mcp_server(runtime.gate, tenant_for=lambda _ctx: TENANT)) as client:
        assert sorted(tool.name for tool in (await client.list_tools()).tools) == ["add", "echo"]


async def test_policy_hash_follows_the_policy_and_is_stamped_on_receipts(make_runtime: Callable[..., Runtime]) -> None:
    demo = make_runtime()
    same = make_runtime()
    override = make_runtime(policy={"actions": {"count": {"approval": "elicit"}}})
    claw = make_runtime(mode="clawshield")
    limited = make_runtime(limits={"max_depth": 8})
    toolset = make_runtime(toolset="safe", toolsets={"safe": ["echo"]})
    hashes = [r.policy.policy_hash for r in (demo, override, claw, limited, toolset)]
    assert demo.policy.policy_hash == same.policy.policy_hash
    assert len(set(hashes)) == len(hashes)
    assert sha256_hex(canonicalize(demo.policy.to_json())) == demo.policy.policy_hash
    for runtime in (demo, override):
        answer = await call(runtime, {"msg": "x"}, "nonce-ph-" + runtime.policy.policy_hash[:8], action="echo")
        assert body_of(answer.envelope)["policy_hash"] == runtime.policy.policy_hash


def test_demo_mode_warns_at_start(make_runtime: Callable[..., Runtime], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="openexec_mcp"):
        make_runtime()
    assert any(record.levelno == logging.WARNING and record.getMessage() == DEMO_WARNING for record in caplog.records)


def test_clawshield_mode_does_not_warn_about_demo(
    make_runtime: Callable[..., Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="openexec_mcp"):
        make_runtime(mode="clawshield", approvals=approvals_config())
    assert not any("DEMO" in record.getMessage() for record in caplog.records)
