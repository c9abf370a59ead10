"""``http_request`` through the real gate, against a real HTTP server on 127.0.0.1 (SPEC §12)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from oe_testing.http_server import free_port
from oe_testing.origin import Origin, running_origin
from oe_testing.receipts import body_of

from openexec_mcp.errors import ConfigError
from openexec_mcp.gate.pipeline import CallContext
from openexec_mcp.runtime import Runtime

pytestmark = pytest.mark.anyio

CTX = CallContext(tenant_id="default", run_id="run-http")
TOKEN = "Bearer tok-5b2e9c0d7a41f3e8"


@pytest.fixture
def origin() -> Iterator[Origin]:
    with running_origin() as server:
        yield server


@pytest.fixture
def other() -> Iterator[Origin]:
    with running_origin() as server:
        yield server


@pytest.fixture
def http_runtime(make_runtime: Callable[..., Runtime], origin: Origin, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ORIGIN_TOKEN", TOKEN)

    def make(**table: Any) -> Runtime:
        config: dict[str, Any] = {
            "allowed_urls": [origin.url("/*")],
            "methods": ["GET", "POST"],
            "timeout_seconds": 2,
            "max_response_bytes": 4096,
            "credentials": [{"url": origin.url("/echo*"), "header": "Authorization", "value": "env:ORIGIN_TOKEN"}],
        }
        config.update(table)
        return make_runtime(actions={"builtins": ["http_request"], "http_request": config})

    return make


async def call(runtime: Runtime, nonce: str, **payload: Any):
    return await runtime.gate.call("http_request", {**payload, "nonce": nonce}, CTX)


async def test_request_is_sent_once_and_a_replay_does_not_resend(http_runtime: Callable[..., Runtime], origin: Origin):
    runtime = http_runtime()
    first = await call(runtime, "http-once-1", method="POST", url=origin.url("/ok"), json={"n": 1})
    assert first.status == "executed"
    assert first.envelope["result"]["status"] == 200
    assert first.envelope["result"]["body"] == "hello"
    assert first.envelope["result"]["body_encoding"] == "utf-8" and first.envelope["result"]["truncated"] is False
    again = await call(runtime, "http-once-1", method="POST", url=origin.url("/ok"), json={"n": 1})
    assert again.status == "replayed"
    assert again.envelope["result"] == first.envelope["result"]
    assert len(origin.hits("/ok")) == 1
    assert origin.hits("/ok")[0].body == b'{"n":1}'


async def test_annotations_say_destructive_open_world_not_idempotent(http_runtime: Callable[..., Runtime]):
    action = http_runtime().registry["http_request"]
    assert (action.read_only, action.destructive, action.idempotent, action.open_world) == (False, True, False, True)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "http://127.0.0.2:{port}/ok"),  # another host
        ("GET", "http://127.0.0.1:1/ok"),  # another port
        ("DELETE", "http://127.0.0.1:{port}/ok"),  # a method not in `methods`
        ("GET", "http://2130706433:{port}/ok"),  # 127.0.0.1 spelled in decimal
        ("GET", "http://user@127.0.0.1:{port}/ok"),  # userinfo
        ("GET", "file:///etc/passwd"),
    ],
)
async def test_url_or_method_outside_the_allow_list_is_denied_and_nothing_is_sent(
    http_runtime: Callable[..., Runtime], origin: Origin, method: str, url: str
):
    runtime = http_runtime()
    answer = await call(runtime, "http-refused-1", method=method, url=url.format(port=origin.port))
    assert answer.status == "denied"
    assert answer.envelope["error"]["code"] == "url_not_allowed"
    assert body_of(answer.envelope)["error_code"] == "url_not_allowed"  # on the ledger, with a receipt
    assert origin.requests == []
    # Nothing consumed: the same nonce is free for a corrected call.
    fixed = await call(runtime, "http-refused-1", method="GET", url=origin.url("/ok"))
    assert fixed.status == "executed"


async def test_payload_header_named_like_a_credential_is_refused(http_runtime: Callable[..., Runtime], origin: Origin):
    runtime = http_runtime()
    answer = await call(runtime, "http-cred-1", method="GET", url=origin.url("/ok"), headers={"authorization": "x"})
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "url_not_allowed"
    assert origin.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "1\r\nX-Injected: 1"},
        {"X-A": "1\nX-Injected: 1"},
        {"X A": "1"},
        {"Host": "evil.test"},
        {"Transfer-Encoding": "chunked"},
        {"x-a": "1", "X-A": "2"},
    ],
)
async def test_malformed_or_framing_headers_are_invalid_requests(
    http_runtime: Callable[..., Runtime], origin: Origin, headers: dict[str, str]
):
    answer = await call(http_runtime(), "http-hdr-1", method="GET", url=origin.url("/ok"), headers=headers)
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "invalid_request"
    assert answer.envelope.get("receipt") is None
    assert origin.requests == []


async def test_json_and_body_together_are_an_invalid_request(http_runtime: Callable[..., Runtime], origin: Origin):
    answer = await call(http_runtime(), "http-both-1", method="POST", url=origin.url("/ok"), json={}, body="x")
    assert answer.envelope["error"]["code"] == "invalid_request"


async def test_credential_reaches_the_server_and_is_redacted_from_the_result(
    http_runtime: Callable[..., Runtime], origin: Origin
):
    runtime = http_runtime()
    answer = await call(runtime, "http-echo-1", method="GET", url=origin.url("/echo"))
    assert answer.status == "executed"
    assert origin.hits("/echo")[0].headers["Authorization"] == TOKEN
    result = answer.envelope["result"]
    assert result["headers"]["x-echo"] == "[redacted]"
    assert result["body"] == "auth=[redacted];body="
    assert "tok-5b2e9c0d7a41f3e8" not in json.dumps(answer.envelope)
    # Only URLs matching the credential's pattern get it.
    await call(runtime, "http-echo-2", method="GET", url=origin.url("/ok"))
    assert "Authorization" not in origin.hits("/ok")[0].headers


async def test_redirect_to_a_url_outside_the_allow_list_is_not_followed(
    http_runtime: Callable[..., Runtime], origin: Origin, other: Origin
):
    runtime = http_runtime(follow_redirects=True)
    answer = await call(runtime, "http-redir-1", method="GET", url=origin.url(f"/redirect?to={other.url('/ok')}"))
    assert answer.status == "executed"
    assert answer.envelope["result"]["status"] == 302
    assert answer.envelope["result"]["headers"]["location"] == other.url("/ok")
    assert other.requests == []


async def test_redirects_are_followed_only_when_enabled(http_runtime: Callable[..., Runtime], origin: Origin):
    followed = await call(
        http_runtime(follow_redirects=True), "http-redir-2", method="GET", url=origin.url("/redirect?to=/ok")
    )
    assert followed.envelope["result"]["status"] == 200 and followed.envelope["result"]["body"] == "hello"
    kept = await call(http_runtime(), "http-redir-3", method="GET", url=origin.url("/redirect?to=/ok"))
    assert kept.envelope["result"]["status"] == 302
    assert len(origin.hits("/ok")) == 1


async def test_credentials_do_not_follow_a_redirect_to_another_origin(
    http_runtime: Callable[..., Runtime], origin: Origin, other: Origin
):
    runtime = http_runtime(follow_redirects=True, allowed_urls=[origin.url("/*"), other.url("/*")])
    answer = await call(runtime, "http-redir-5", method="GET", url=origin.url(f"/redirect?to={other.url('/echo')}"))
    assert answer.envelope["result"]["status"] == 200
    assert "Authorization" not in other.hits("/echo")[0].headers


async def test_large_body_is_cut_at_max_response_bytes(http_runtime: Callable[..., Runtime], origin: Origin):
    answer = await call(http_runtime(), "http-huge-1", method="GET", url=origin.url("/huge?bytes=10000000"))
    result = answer.envelope["result"]
    assert answer.status == "executed" and result["truncated"] is True
    assert result["body"] == "x" * 4096
    assert result["headers"]["content-length"] == "10000000"


async def test_binary_body_is_base64(http_runtime: Callable[..., Runtime], origin: Origin):
    answer = await call(http_runtime(), "http-bin-1", method="GET", url=origin.url("/binary"))
    result = answer.envelope["result"]
    assert result["body_encoding"] == "base64"
    assert base64.b64decode(result["body"]) == bytes(range(256))


async def test_an_error_status_is_an_answer_not_a_failure(http_runtime: Callable[..., Runtime], origin: Origin):
    answer = await call(http_runtime(), "http-500-1", method="GET", url=origin.url("/status?code=503"))
    assert answer.status == "executed" and answer.envelope["result"]["status"] == 503


@pytest.mark.parametrize("route", ["/stall", "/drop"])
async def test_sent_without_an_answer_is_indeterminate_and_never_resent(
    http_runtime: Callable[..., Runtime], origin: Origin, route: str
):
    runtime = http_runtime(timeout_seconds=1)
    answer = await call(runtime, "http-lost-1", method="POST", url=origin.url(route), body="pay 10 EUR")
    assert answer.status == "indeterminate"
    assert answer.envelope["error"]["code"] == "outcome_unknown"
    assert body_of(answer.envelope)["status"] == "indeterminate"
    retry = await call(runtime, "http-lost-1", method="POST", url=origin.url(route), body="pay 10 EUR")
    assert retry.status == "denied" and retry.envelope["error"]["code"] == "outcome_unknown"
    assert len(origin.hits(route)) == 1


async def test_connection_refused_sends_nothing_and_frees_the_nonce(
    http_runtime: Callable[..., Runtime], origin: Origin
):
    closed = free_port()
    runtime = http_runtime(allowed_urls=[origin.url("/*"), f"http://127.0.0.1:{closed}/*"])
    answer = await call(runtime, "http-down-1", method="GET", url=f"http://127.0.0.1:{closed}/ok")
    assert answer.status == "denied" and answer.envelope["error"]["code"] == "upstream_unavailable"
    assert body_of(answer.envelope)["status"] == "denied"
    retry = await call(runtime, "http-down-1", method="GET", url=f"http://127.0.0.1:{closed}/ok")
    assert retry.envelope["error"]["code"] == "upstream_unavailable"  # re-tried, not nonce_conflict / replayed


def test_listed_without_its_table_refuses_to_start(make_runtime: Callable[..., Runtime]):
    with pytest.raises(ConfigError, match=r"\[actions.http_request\] table is missing"):
        make_runtime(actions={"builtins": ["http_request"]})


def test_unset_credential_variable_refuses_to_start(make_runtime: Callable[..., Runtime], origin: Origin):
    table = {
        "allowed_urls": [origin.url("/*")],
        "credentials": [{"url": origin.url("/*"), "header": "X-Key", "value": "env:OE_TEST_UNSET_VAR"}],
    }
    with pytest.raises(ConfigError, match=r"credentials\[0\]\.value: environment variable OE_TEST_UNSET_VAR"):
        make_runtime(actions={"builtins": ["http_request"], "http_request": table})


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"allowed_urls": []}, "allowed_urls"),
        ({"allowed_urls": ["127.0.0.1/*"]}, "allowed_urls.0"),
        ({"allowed_urls": ["http://h.test/*"], "methods": ["get"]}, "methods"),
        (
            {
                "allowed_urls": ["http://h.test/*"],
                "credentials": [{"url": "http://h.test/*", "header": "A", "value": "literal"}],
            },
            "credentials.0.value",
        ),
        ({"allowed_urls": ["http://h.test/*"], "timeout_seconds": 400}, "timeout_seconds"),
        ({"allowed_urls": ["http://h.test/*"], "max_response_bytes": 16_000_000}, "max_response_bytes"),
    ],
)
def test_invalid_tables_name_the_key(make_runtime: Callable[..., Runtime], table: dict[str, Any], key: str):
    with pytest.raises(ConfigError, match=rf"actions\.http_request\.{key}"):
        make_runtime(actions={"builtins": ["http_request"], "http_request": table})


def test_credential_too_short_to_redact_refuses_to_start(
    make_runtime: Callable[..., Runtime], origin: Origin, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OE_SHORT_KEY", "abc")
    table = {
        "allowed_urls": [origin.url("/*")],
        "credentials": [{"url": origin.url("/*"), "header": "X-Key", "value": "env:OE_SHORT_KEY"}],
    }
    with pytest.raises(ConfigError, match=r"credentials\[0\]\.value: the value needs at least 8"):
        make_runtime(actions={"builtins": ["http_request"], "http_request": table})


async def test_a_secret_cut_in_half_by_the_size_limit_is_not_returned(
    http_runtime: Callable[..., Runtime], origin: Origin
):
    # /echo answers "auth=<token>;body=...": cut inside the token, its first half must not leak.
    runtime = http_runtime(max_response_bytes=len("auth=Bearer tok-5b2e"))
    answer = await call(runtime, "http-cut-1", method="GET", url=origin.url("/echo"))
    result = answer.envelope["result"]
    assert result["truncated"] is True
    assert "tok-5b2e" not in result["body"] and result["body"].startswith("auth=")


async def test_refusal_comes_before_approval_and_opens_no_approval_request(
    make_runtime: Callable[..., Runtime], origin: Origin
):
    table = {"allowed_urls": [origin.url("/*")]}
    runtime = make_runtime(mode="clawshield", actions={"builtins": ["http_request"], "http_request": table})
    refused = await call(runtime, "http-signed-1", method="GET", url="http://127.0.0.2/ok")
    assert refused.envelope["error"]["code"] == "url_not_allowed"
    assert refused.envelope["approval_request"] is None  # nobody is asked to approve a call that cannot run
    allowed = await call(runtime, "http-signed-2", method="GET", url=origin.url("/ok"))
    assert allowed.envelope["error"]["code"] == "approval_required"
    assert allowed.envelope["approval_request"] is not None
    assert origin.requests == []
