"""Reject decisions and grants through the real gate on a real SQLite file (SPEC §13; issue 14).

Decisions and grants are signed with the test governance key the server never holds
(``oe_testing.approvals``); the ``count`` action counts real executions on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from oe_testing import verifier
from oe_testing.actions import executions
from oe_testing.approvals import GOV_KID, ISSUER, approvals_config, mint, mint_grant, tamper
from oe_testing.receipts import body_of

from openexec_mcp.core.canonical import canonicalize, sha256_hex
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.gate.pipeline import Answer, CallContext
from openexec_mcp.keystore import public_keys_document
from openexec_mcp.runtime import Runtime
from openexec_mcp.store.grants import StoredGrant

pytestmark = pytest.mark.anyio

TENANT = "default"


def code(answer: Answer) -> str | None:
    error = answer.envelope["error"]
    return None if error is None else str(error["code"])


async def call(
    runtime: Runtime, payload: dict[str, Any], nonce: str, *, artifact: Any = None, action: str = "count"
) -> Answer:
    ctx = CallContext(tenant_id=TENANT, run_id="run-grants", approval_artifact=artifact)
    answer = await runtime.gate.call(action, {**payload, "nonce": nonce}, ctx)
    assert isinstance(answer, Answer)
    return answer


def submit(runtime: Runtime, artifact: dict[str, Any]) -> None:
    assert runtime.store.add_approval_artifact(
        artifact["action_hash"], artifact["approval_id"], canonicalize(artifact).decode(), format_timestamp(utc_now())
    )


def store_grant(runtime: Runtime, grant: dict[str, Any]) -> None:
    """What ``POST /grants`` stores once the grant checks out."""
    _, verified = runtime.gate.approver.verify_grant(grant, tenant_id=TENANT, now=utc_now())
    stored = StoredGrant(
        grant_id=grant["grant_id"],
        tenant_id=grant["tenant_id"],
        artifact=canonicalize(grant).decode(),
        max_uses=grant["max_uses"],
        uses=0,
        expires_at=format_timestamp(verified.expires_at),
        keep_until=format_timestamp(verified.expires_at),
        submitted_at=format_timestamp(utc_now()),
        revoked_at=None,
    )
    assert runtime.store.add_grant(stored)


@pytest.fixture
def clawshield(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(mode="clawshield", approvals=approvals_config())


def assert_verifies(runtime: Runtime, answer: Answer) -> dict[str, Any]:
    return verifier.verify_envelope(answer.envelope, public_keys_document(runtime.server_key))


# -- reject decisions --------------------------------------------------------------------------------


async def test_reject_in_the_call_is_approval_rejected_with_a_receipt_and_the_nonce_stays_free(
    clawshield: Runtime, counter_file: Path
) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-r1")
    action_hash = proposed.envelope["approval_request"]["action_hash"]
    reject = mint(action_hash, decision="reject", reason="not on a Friday")
    answer = await call(clawshield, {"label": "a"}, "nonce-r1", artifact=reject)
    assert (answer.status, code(answer)) == ("denied", "approval_rejected")
    assert "not on a Friday" in answer.envelope["error"]["message"]
    body = assert_verifies(clawshield, answer)
    assert body["error_code"] == "approval_rejected"
    assert body["approval"]["approval_id"] == reject["approval_id"]
    assert body["approval"]["artifact_hash"] == sha256_hex(canonicalize(reject))
    assert executions(counter_file) == 0
    assert clawshield.store.get_nonce(TENANT, "nonce-r1") is None


async def test_reject_in_the_inbox_refuses_every_retry_and_wins_over_an_approval(
    clawshield: Runtime, counter_file: Path
) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-r2")
    action_hash = proposed.envelope["approval_request"]["action_hash"]
    submit(clawshield, mint(action_hash, decision="reject", reason="no"))
    for _ in range(2):
        retry = await call(clawshield, {"label": "a"}, "nonce-r2")
        assert (retry.status, code(retry)) == ("denied", "approval_rejected")
    submit(clawshield, mint(action_hash))  # a later "yes" does not undo a valid "no"
    assert code(await call(clawshield, {"label": "a"}, "nonce-r2")) == "approval_rejected"
    assert executions(counter_file) == 0


async def test_expired_reject_no_longer_blocks_and_a_fresh_request_opens(clawshield: Runtime) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-r3")
    action_hash = proposed.envelope["approval_request"]["action_hash"]
    old = utc_now().replace(year=utc_now().year - 1)
    submit(clawshield, mint(action_hash, decision="reject", reason="no", now=old))
    retry = await call(clawshield, {"label": "a"}, "nonce-r3")
    assert code(retry) == "approval_expired"
    assert retry.envelope["approval_request"] is not None


async def test_reject_reason_over_500_characters_is_malformed(clawshield: Runtime) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-r4")
    action_hash = proposed.envelope["approval_request"]["action_hash"]
    answer = await call(
        clawshield, {"label": "a"}, "nonce-r4", artifact=mint(action_hash, decision="reject", reason="x" * 501)
    )
    assert code(answer) == "approval_malformed"
    unknown = await call(clawshield, {"label": "a"}, "nonce-r4", artifact=mint(action_hash, decision="maybe"))
    assert code(unknown) == "approval_malformed"


async def test_reject_decision_cannot_be_flipped_to_approve_without_the_key(clawshield: Runtime) -> None:
    proposed = await call(clawshield, {"label": "a"}, "nonce-r5")
    action_hash = proposed.envelope["approval_request"]["action_hash"]
    reject = mint(action_hash, decision="reject", reason="no")
    flipped = {**reject, "decision": "approve"}  # signature kept: the decision is signed
    assert code(await call(clawshield, {"label": "a"}, "nonce-r5", artifact=flipped)) == "approval_bad_signature"


# -- grants --------------------------------------------------------------------------------------------


async def test_grant_approves_max_uses_calls_then_is_exhausted_and_receipts_count_uses(
    clawshield: Runtime, counter_file: Path
) -> None:
    grant = mint_grant(["cou*"], max_uses=2)
    store_grant(clawshield, grant)
    first = await call(clawshield, {"label": "a"}, "nonce-g1")
    second = await call(clawshield, {"label": "b"}, "nonce-g2")
    assert (first.status, second.status) == ("executed", "executed")
    approvals = [body_of(answer.envelope)["approval"] for answer in (first, second)]
    assert approvals == [
        {
            "method": "grant",
            "approval_id": grant["grant_id"],
            "kid": GOV_KID,
            "issued_by": ISSUER,
            "artifact_hash": sha256_hex(canonicalize(grant)),
            "use": use,
        }
        for use in (1, 2)
    ]
    assert_verifies(clawshield, second)
    third = await call(clawshield, {"label": "c"}, "nonce-g3")
    assert (third.status, code(third)) == ("denied", "approval_grant_exhausted")
    assert third.envelope["approval_request"] is not None  # a person can still approve it once
    assert executions(counter_file) == 2
    # The replay of a granted call is a replay, not a third use.
    assert (await call(clawshield, {"label": "a"}, "nonce-g1")).status == "replayed"
    assert clawshield.store.get_grant(grant["grant_id"]).uses == 2  # type: ignore[union-attr]


async def test_revoked_grant_is_approval_grant_revoked(clawshield: Runtime, counter_file: Path) -> None:
    grant = mint_grant(["count"], max_uses=5)
    store_grant(clawshield, grant)
    assert (await call(clawshield, {"label": "a"}, "nonce-v1")).status == "executed"
    assert clawshield.store.revoke_grant(grant["grant_id"], TENANT, format_timestamp(utc_now())) is not None
    answer = await call(clawshield, {"label": "b"}, "nonce-v2")
    assert (answer.status, code(answer)) == ("denied", "approval_grant_revoked")
    assert executions(counter_file) == 1


async def test_grant_when_constrains_the_arguments_with_cel(clawshield: Runtime, counter_file: Path) -> None:
    store_grant(clawshield, mint_grant(["count"], max_uses=5, when='args.label.startsWith("ok")'))
    assert (await call(clawshield, {"label": "ok-1"}, "nonce-w1")).status == "executed"
    other = await call(clawshield, {"label": "rm -rf"}, "nonce-w2")
    assert (other.status, code(other)) == ("denied", "approval_required")
    assert executions(counter_file) == 1


async def test_grant_for_other_actions_does_not_approve_this_one(clawshield: Runtime) -> None:
    store_grant(clawshield, mint_grant(["send_*"], max_uses=5))
    assert code(await call(clawshield, {"label": "a"}, "nonce-o1")) == "approval_required"


async def test_grant_of_another_tenant_or_too_long_a_lifetime_is_refused_at_storage(clawshield: Runtime) -> None:
    from openexec_mcp.errors import ApprovalError

    for grant, expected in (
        (mint_grant(["*"], tenant_id="other"), "approval_tenant_mismatch"),
        (mint_grant(["*"], ttl_seconds=28800 + 3600), "approval_ttl_too_long"),
        ({**mint_grant(["*"]), "max_uses": 0}, "approval_malformed"),
        (
            tamper(mint_grant(["*"]), max_uses=99) | {"signature": mint_grant(["*"])["signature"]},
            "approval_bad_signature",
        ),
        (mint_grant(["*"], when="args.("), "approval_malformed"),
    ):
        with pytest.raises(ApprovalError) as caught:
            clawshield.gate.approver.verify_grant(grant, tenant_id=TENANT, now=utc_now())
        assert caught.value.code == expected


async def test_failed_call_still_consumes_its_grant_use(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(mode="clawshield", approvals=approvals_config())
    grant = mint_grant(["boom"], max_uses=1)
    store_grant(runtime, grant)
    failed = await call(runtime, {}, "nonce-f1", action="boom")
    assert failed.status == "failed"
    assert code(await call(runtime, {}, "nonce-f2", action="boom")) == "approval_grant_exhausted"


async def test_concurrent_calls_on_a_one_use_grant_execute_exactly_once(
    clawshield: Runtime, counter_file: Path
) -> None:
    store_grant(clawshield, mint_grant(["count"], max_uses=1))
    answers: list[Answer] = []

    async def one(index: int) -> None:
        answers.append(await call(clawshield, {"label": f"c{index}"}, f"nonce-c{index}"))

    async with anyio.create_task_group() as group:
        for index in range(6):
            group.start_soon(one, index)
    assert sorted(answer.status for answer in answers).count("executed") == 1
    assert {code(answer) for answer in answers if answer.status == "denied"} == {"approval_grant_exhausted"}
    assert executions(counter_file) == 1


async def test_reject_in_the_tools_call_meta_is_approval_rejected_over_mcp(clawshield: Runtime) -> None:
    from mcp import Client

    from openexec_mcp.transport.mcp import build_mcp_server

    async with Client(build_mcp_server(clawshield.gate, tenant_for=lambda _ctx: TENANT)) as client:
        proposed = (await client.call_tool("count", {"label": "m", "nonce": "nonce-meta"})).structured_content
        assert proposed is not None
        reject = mint(proposed["approval_request"]["action_hash"], decision="reject", reason="over MCP")
        result = await client.call_tool(
            "count", {"label": "m", "nonce": "nonce-meta"}, meta={"dev.openexec/approval": reject}
        )
        assert result.is_error and result.structured_content is not None
        assert result.structured_content["error"]["code"] == "approval_rejected"
