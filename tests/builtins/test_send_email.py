"""``send_email`` through the real gate, against a real SMTP server (aiosmtpd) on 127.0.0.1 (SPEC §12)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from oe_testing.http_server import free_port
from oe_testing.receipts import body_of
from oe_testing.smtp import SMTP_PASSWORD, SMTP_USER, SmtpServer, running_smtp

from openexec_mcp.errors import ConfigError
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-mail")
MAIL = {"to": ["alice@example.com"], "subject": "Quarterly report", "text": "Hello Alice,\n.\nThe report is ready."}


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with running_smtp(free_port()) as server:
        yield server


@pytest.fixture
def mail_runtime(make_runtime: Callable[..., Runtime], smtp: SmtpServer):
    def make(**table: Any) -> Runtime:
        config: dict[str, Any] = {
            "smtp_url": smtp.url,
            "from": "agent@example.com",
            "timeout_seconds": 2,
            "allowed_recipients": ["*@example.com", "ops@partner.test"],
        }
        config.update(table)
        return make_runtime(actions={"builtins": ["send_email"], "send_email": config})

    return make


async def send(runtime: Runtime, nonce: str, **payload: Any):
    return await runtime.gate.call("send_email", {**payload, "nonce": nonce}, CTX)


async def test_message_is_delivered_exactly_once_and_a_replay_does_not_resend(
    mail_runtime: Callable[..., Runtime], smtp: SmtpServer
):
    runtime = mail_runtime()
    first = await send(runtime, "mail-once-1", **MAIL, cc=["ops@partner.test"], reply_to="desk@example.com")
    assert first.status == "executed"
    result = first.envelope["result"]
    assert result["accepted"] == ["alice@example.com", "ops@partner.test"] and result["refused"] == {}
    again = await send(runtime, "mail-once-1", **MAIL, cc=["ops@partner.test"], reply_to="desk@example.com")
    assert again.status == "replayed" and again.envelope["result"] == result
    assert len(smtp.recorder.delivered) == 1
    delivered = smtp.recorder.delivered[0]
    assert delivered.mail_from == "agent@example.com"
    assert delivered.rcpt_tos == ["alice@example.com", "ops@partner.test"]
    message = delivered.message
    assert message["Message-ID"] == result["message_id"]  # a person can find the message by it
    assert result["message_id"].endswith("@example.com>")
    assert message["From"] == "agent@example.com" and message["Reply-To"] == "desk@example.com"
    assert message["Subject"] == "Quarterly report"
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes) and payload.decode().replace("\r\n", "\n") == MAIL["text"] + "\n"


@pytest.mark.parametrize(
    "payload",
    [
        {"to": ["mallory@evil.test"]},
        {"to": ["alice@example.com"], "cc": ["mallory@evil.test"]},
        {"to": ["alice@example.com"], "reply_to": "mallory@evil.test"},  # replies would leak there
        {"to": ["alice@example.com.evil.test"]},
    ],
)
async def test_recipient_outside_the_allow_list_is_denied_and_nothing_is_sent(
    mail_runtime: Callable[..., Runtime], smtp: SmtpServer, payload: dict[str, Any]
):
    runtime = mail_runtime()
    answer = await send(runtime, "mail-refused-1", subject="s", text="t", **payload)
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "recipient_not_allowed"
    assert body_of(answer.envelope)["error_code"] == "recipient_not_allowed"
    assert smtp.recorder.delivered == [] and smtp.recorder.data_received == 0
    fixed = await send(runtime, "mail-refused-1", **MAIL)  # the nonce was not consumed
    assert fixed.status == "executed"


@pytest.mark.parametrize(
    "payload",
    [
        {**MAIL, "subject": "Hi\r\nBcc: mallory@evil.test"},
        {**MAIL, "subject": "Hi\nBcc: mallory@evil.test"},
        {**MAIL, "to": ["alice@example.com\r\nBcc: mallory@evil.test"]},
        {**MAIL, "to": ["Alice <alice@example.com>"]},
        {**MAIL, "to": ["alice@example.com, mallory@evil.test"]},
        {**MAIL, "reply_to": "desk@example.com\nX-Evil: 1"},
        {**MAIL, "cc": ["not-an-address"]},
        {**MAIL, "to": []},
    ],
)
async def test_header_injection_and_malformed_addresses_are_invalid_requests(
    mail_runtime: Callable[..., Runtime], smtp: SmtpServer, payload: dict[str, Any]
):
    answer = await send(mail_runtime(), "mail-inject-1", **payload)
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "invalid_request"
    assert answer.envelope.get("receipt") is None
    assert smtp.recorder.data_received == 0


async def test_refused_before_data_is_failed(mail_runtime: Callable[..., Runtime], smtp: SmtpServer):
    answer = await send(mail_runtime(), "mail-rcpt-1", **{**MAIL, "to": ["refuse-me@example.com"]})
    assert answer.status == "failed" and answer.envelope["error"]["code"] == "upstream_error"
    assert answer.envelope["result"]["refused"] == {"refuse-me@example.com": "550 5.1.1 no such user"}
    assert smtp.recorder.data_received == 0


async def test_some_recipients_refused_are_reported_and_the_rest_delivered(
    mail_runtime: Callable[..., Runtime], smtp: SmtpServer
):
    answer = await send(mail_runtime(), "mail-rcpt-2", **{**MAIL, "to": ["alice@example.com", "refuse@example.com"]})
    assert answer.status == "executed"
    assert answer.envelope["result"]["accepted"] == ["alice@example.com"]
    assert answer.envelope["result"]["refused"] == {"refuse@example.com": "550 5.1.1 no such user"}
    assert smtp.recorder.delivered[0].rcpt_tos == ["alice@example.com"]


async def test_message_rejected_after_data_is_failed(mail_runtime: Callable[..., Runtime], smtp: SmtpServer):
    smtp.recorder.mode = "reject"
    answer = await send(mail_runtime(), "mail-reject-1", **MAIL)
    assert answer.status == "failed" and answer.envelope["error"]["code"] == "upstream_error"
    assert answer.envelope["result"]["refused"] == {"alice@example.com": "554 5.7.1 rejected by policy"}


@pytest.mark.parametrize("mode", ["drop", "stall"])
async def test_connection_lost_after_data_is_indeterminate_and_never_resent(
    mail_runtime: Callable[..., Runtime], smtp: SmtpServer, mode: str
):
    smtp.recorder.mode = mode
    runtime = mail_runtime(timeout_seconds=1)
    answer = await send(runtime, "mail-lost-1", **MAIL)
    assert answer.status == "indeterminate" and answer.envelope["error"]["code"] == "outcome_unknown"
    assert body_of(answer.envelope)["status"] == "indeterminate"
    retry = await send(runtime, "mail-lost-1", **MAIL)
    assert retry.status == "denied" and retry.envelope["error"]["code"] == "outcome_unknown"
    assert smtp.recorder.data_received == 1


async def test_no_server_sends_nothing_and_frees_the_nonce(make_runtime: Callable[..., Runtime]):
    table = {
        "smtp_url": f"smtp://127.0.0.1:{free_port()}",
        "from": "agent@example.com",
        "allowed_recipients": ["*@example.com"],
        "timeout_seconds": 2,
    }
    runtime = make_runtime(actions={"builtins": ["send_email"], "send_email": table})
    answer = await send(runtime, "mail-down-1", **MAIL)
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "upstream_unavailable"
    again = await send(runtime, "mail-down-1", **MAIL)
    assert again.envelope["error"]["code"] == "upstream_unavailable"


@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated")
async def test_starttls_and_login_with_credentials_from_the_environment(
    make_runtime: Callable[..., Runtime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OE_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("OE_SMTP_PASSWORD", SMTP_PASSWORD)
    with running_smtp(free_port(), tls_dir=tmp_path) as server:
        table = {
            "smtp_url": server.url,
            "from": "agent@example.com",
            "allowed_recipients": ["*@example.com"],
            "username": "env:OE_SMTP_USER",
            "password": "env:OE_SMTP_PASSWORD",
            "ca_file": str(server.ca_file),
            "timeout_seconds": 5,
        }
        runtime = make_runtime(actions={"builtins": ["send_email"], "send_email": table})
        answer = await send(runtime, "mail-tls-1", **MAIL)
        assert answer.status == "executed", answer.envelope
        assert len(server.recorder.delivered) == 1  # the server requires STARTTLS and AUTH
        assert SMTP_PASSWORD not in json.dumps(answer.envelope)


def test_listed_without_its_table_refuses_to_start(make_runtime: Callable[..., Runtime]):
    with pytest.raises(ConfigError, match=r"\[actions.send_email\] table is missing"):
        make_runtime(actions={"builtins": ["send_email"]})


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"smtp_url": "http://h.test"}, "smtp_url"),
        ({"smtp_url": "smtp://u:p@h.test"}, "smtp_url"),
        ({"allowed_recipients": []}, "allowed_recipients"),
        ({"password": "hunter2", "username": "env:X"}, "password"),
        ({"password": "env:OE_TEST_UNSET_VAR", "username": "env:OE_TEST_UNSET_VAR"}, "username"),
        ({"from": "Agent <agent@example.com>"}, "from"),
    ],
)
def test_invalid_tables_name_the_key(make_runtime: Callable[..., Runtime], table: dict[str, Any], key: str):
    config = {"smtp_url": "smtp://127.0.0.1:2525", "from": "agent@example.com", "allowed_recipients": ["*"], **table}
    with pytest.raises(ConfigError, match=rf"actions\.send_email\.{key}"):
        make_runtime(actions={"builtins": ["send_email"], "send_email": config})
