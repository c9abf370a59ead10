"""``[[policy.rules]]``: first match wins, CEL ``when`` over args/action/tenant_id (SPEC §11)."""

from __future__ import annotations

import pytest

from openexec_mcp.config import PolicyRuleSettings
from openexec_mcp.errors import ConfigError, PolicyError
from openexec_mcp.gate.rules import PolicyRules


def rules(*specs: dict[str, object]) -> PolicyRules:
    return PolicyRules([PolicyRuleSettings.model_validate(spec) for spec in specs])


SPEC_EXAMPLE = rules(
    {"actions": ["fs.read_*", "fs.list_*"], "approval": "auto"},
    {"actions": ["fs.write_file"], "when": 'args.path.startsWith("/srv/data/tmp/")', "approval": "auto"},
    {"actions": ["fs.*"], "approval": "signed"},
)


def test_first_matching_rule_wins() -> None:
    assert SPEC_EXAMPLE.decide("fs.read_text_file", {"path": "/etc/x"}, "t") == "auto"
    assert SPEC_EXAMPLE.decide("fs.list_directory", {"path": "/"}, "t") == "auto"
    assert SPEC_EXAMPLE.decide("fs.write_file", {"path": "/srv/data/tmp/a", "content": ""}, "t") == "auto"
    assert SPEC_EXAMPLE.decide("fs.write_file", {"path": "/srv/data/a", "content": ""}, "t") == "signed"
    assert SPEC_EXAMPLE.decide("fs.edit_file", {"path": "/srv/data/tmp/a"}, "t") == "signed"


def test_no_matching_rule_leaves_the_decision_to_the_next_layer() -> None:
    assert SPEC_EXAMPLE.decide("echo", {"x": 1}, "t") is None
    assert SPEC_EXAMPLE.decide("FS.read_text_file", {}, "t") is None  # patterns are case-sensitive


def test_when_sees_action_and_tenant() -> None:
    by_tenant = rules({"actions": ["*"], "when": 'tenant_id == "acme" && action == "echo"', "approval": "deny"})
    assert by_tenant.decide("echo", {}, "acme") == "deny"
    assert by_tenant.decide("echo", {}, "other") is None
    assert by_tenant.decide("add", {}, "acme") is None


def test_a_when_that_does_not_compile_is_a_startup_error() -> None:
    with pytest.raises(ConfigError) as raised:
        rules({"actions": ["*"], "when": "args.(", "approval": "auto"})
    assert "policy.rules[0].when" in raised.value.message


def test_a_when_that_fails_at_call_time_is_a_policy_error() -> None:
    missing = rules({"actions": ["fs.*"], "when": 'args.path.startsWith("/tmp")', "approval": "auto"})
    with pytest.raises(PolicyError) as raised:
        missing.decide("fs.write_file", {"content": "no path"}, "t")
    assert raised.value.code == "policy_error"
    with pytest.raises(PolicyError):
        missing.decide("fs.write_file", {"path": 7}, "t")  # startsWith on an int


def test_a_when_that_is_not_a_bool_is_a_policy_error() -> None:
    with pytest.raises(PolicyError):
        rules({"actions": ["*"], "when": "args.n + 1", "approval": "auto"}).decide("add", {"n": 1}, "t")


def test_a_traversal_is_not_under_the_allowed_prefix_by_string_test_alone() -> None:
    # CEL sees the string as given: a rule author who allows a prefix must also refuse "..".
    guarded = rules(
        {
            "actions": ["fs.write_file"],
            "when": 'args.path.startsWith("/srv/tmp/") && !args.path.contains("..")',
            "approval": "auto",
        },
        {"actions": ["fs.*"], "approval": "signed"},
    )
    assert guarded.decide("fs.write_file", {"path": "/srv/tmp/../etc/passwd"}, "t") == "signed"
    assert guarded.decide("fs.write_file", {"path": "/srv/tmp/ok"}, "t") == "auto"


def test_rules_serialize_in_order_for_the_policy_hash() -> None:
    assert SPEC_EXAMPLE.to_json()[1] == {
        "actions": ["fs.write_file"], "when": 'args.path.startsWith("/srv/data/tmp/")', "approval": "auto",
    }  # fmt: skip


def test_resolver_order_rules_then_overrides_then_action_then_mode() -> None:
    from types import SimpleNamespace

    from openexec_mcp.gate.rules import ApprovalResolver

    resolver = ApprovalResolver("clawshield", SPEC_EXAMPLE, {"fs.read_text_file": "deny", "echo": "elicit"})
    read = SimpleNamespace(name="fs.read_text_file", approval=None, trusted_read_only=False)
    assert resolver.for_call(read, {"path": "/x"}, "t") == "auto"  # the rule wins over the override
    echo = SimpleNamespace(name="echo", approval=None, trusted_read_only=False)
    assert resolver.for_call(echo, {}, "t") == "elicit"
    add = SimpleNamespace(name="add", approval="auto", trusted_read_only=False)
    assert resolver.for_call(add, {}, "t") == "auto"
    other = SimpleNamespace(name="gh.list_issues", approval=None, trusted_read_only=False)
    assert resolver.for_call(other, {}, "t") == "signed"
    trusted = SimpleNamespace(name="gh.list_issues", approval=None, trusted_read_only=True)
    assert resolver.for_call(trusted, {}, "t") == "auto"  # trust_annotations only lowers the mode default
    write = SimpleNamespace(name="fs.write_file", approval=None, trusted_read_only=True)
    assert resolver.for_call(write, {"path": "/srv/data/x"}, "t") == "signed"  # a rule beats annotations
    assert resolver.advertised(write) == "signed"


@pytest.mark.anyio
async def test_a_rule_that_fails_at_call_time_denies_with_policy_error_and_a_receipt(
    make_runtime, counter_file
) -> None:  # type: ignore[no-untyped-def]
    from oe_testing import verifier
    from oe_testing.actions import executions

    from openexec_mcp.gate.pipeline import Answer, CallContext

    runtime = make_runtime(policy={"rules": [{"actions": ["count"], "when": "args.missing == 1", "approval": "auto"}]})
    answer = await runtime.gate.call("count", {"label": "x", "nonce": "nonce-policy-1"}, CallContext("default", "run"))
    assert isinstance(answer, Answer)
    envelope = answer.envelope
    assert (envelope["status"], envelope["error"]["code"]) == ("denied", "policy_error")
    assert verifier.decode_payload(envelope["receipt"])["error_code"] == "policy_error"
    assert executions(counter_file) == 0


def test_rules_are_part_of_the_policy_hash(make_runtime) -> None:  # type: ignore[no-untyped-def]
    plain = make_runtime().policy.policy_hash
    ruled = make_runtime(policy={"rules": [{"actions": ["count"], "approval": "deny"}]}).policy.policy_hash
    assert plain != ruled


def test_a_when_that_does_not_compile_stops_the_start_up(make_runtime) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError):
        make_runtime(policy={"rules": [{"actions": ["count"], "when": "args.(", "approval": "auto"}]})
