"""The approver's side (SPEC §5, §9, §13): the inbox and minting artifacts.

``approvals list`` shows pending approval requests; ``approve`` shows the approver the exact
action request, recomputes its action_hash itself (SPEC §3) and refuses when the server's differs,
mints an artifact bound to that hash, the request's tenant and the server's audience, signs it
with the governance key and submits it. The server is not trusted to say what is being approved:
a doctored answer can make ``approve`` refuse, never sign another call. The server never loads
these private keys: they stay with the approver (``keys generate`` makes them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from openexec_mcp.core.action import compute_action_hash, parse_nonce
from openexec_mcp.core.approval import sign_approval
from openexec_mcp.core.canonical import json_object
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.display import escape_text, render_payload_lines
from openexec_mcp.errors import ConfigError, OpenExecError

# Grants (SPEC §13) live in their own module; imported last to avoid a cycle.

__all__ = ["register_approvals", "register_approve"]

DEFAULT_SERVER = "http://127.0.0.1:8000"


def register_approvals(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``approvals list``."""
    parser = commands.add_parser("approvals", help="the approval inbox")
    sub = parser.add_subparsers(dest="approvals_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", parents=[common, _client_options()], help="list pending approval requests")
    listing.add_argument("--json", action="store_true", help="print the raw JSON")
    listing.set_defaults(run=run_approvals_list)


def register_approve(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``approve``."""
    parser = commands.add_parser(
        "approve", parents=[common, _client_options()], help="sign an approval for one exact call and submit it"
    )
    parser.add_argument("request_id", nargs="?", help="the pending approval request to approve")
    parser.add_argument("--action-hash", help="approve this action_hash directly (a call never proposed)")
    parser.add_argument("--tenant", help="tenant_id of the call (default: the request's)")
    parser.add_argument("--key", required=True, type=Path, metavar="FILE", help="governance private key (PEM)")
    parser.add_argument("--kid", help="key id the server knows this key by (needed when it has several keys)")
    parser.add_argument("--issuer", default="clawshield", help="issued_by (default: clawshield)")
    parser.add_argument("--ttl", type=int, default=300, help="lifetime in seconds (default: 300)")
    parser.add_argument("--audience", help="the server_id the artifact is for (default: the server's)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--out", type=Path, help="also write the artifact to FILE ('-' prints it)")
    parser.add_argument("--no-submit", action="store_true", help="do not submit the artifact to the server")
    parser.add_argument("--reject", metavar="REASON", help="sign a reject decision with this reason (SPEC §13)")
    register_grant_options(parser)
    parser.set_defaults(run=run_approve)


def _client_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--server", default=os.environ.get("OPENEXEC_SERVER", DEFAULT_SERVER),
                         help=f"server URL (default: $OPENEXEC_SERVER or {DEFAULT_SERVER})")  # fmt: skip
    options.add_argument("--token", default=os.environ.get("OPENEXEC_TOKEN"),
                         help="bearer token (default: $OPENEXEC_TOKEN)")  # fmt: skip
    return options


def run_approvals_list(args: argparse.Namespace) -> int:
    """Print the pending approval requests, every page of ``GET /approvals``, as previews.

    A payload too large for the listing is shown cut, and says so; ``approve REQUEST_ID`` shows
    the whole call before signing.
    """
    pending = _fetch_requests(args)
    if args.json:
        print(json.dumps({"approval_requests": pending}, indent=2))
        return 0
    if not pending:
        print("no pending approval requests")
        return 0
    for item in pending:
        request = item["action_request"]
        if item.get("truncated"):
            payload = f"{request.get('payload_preview')} (cut: approve {item['request_id']} shows it all)"
        else:
            payload = json.dumps(request.get("payload"), sort_keys=True)
        print(
            f"{item['request_id']}  {request.get('action')}  tenant={item['tenant_id']}  expires={item['expires_at']}"
        )
        print(f"    payload={payload}  nonce={request.get('nonce')}  action_hash={item['action_hash']}")
    return 0


class ApprovalRefused(Exception):
    """``approve`` will not sign: what the server shows is not what would be signed (exit 1)."""


def run_approve(args: argparse.Namespace) -> int:
    """Show the exact call, check it, mint and sign the artifact, submit it (SPEC §5, §13).

    Exit 0 signed (and submitted), 1 refused (a mismatch, or the approver said no), 2 usage.
    """
    if getattr(args, "grant", None) is not None:
        return run_grant(args)
    if bool(args.request_id) == bool(args.action_hash):
        raise ConfigError("give exactly one of REQUEST_ID or --action-hash")
    if args.reject is not None and len(args.reject) > 500:
        raise ConfigError("--reject REASON is at most 500 characters")
    private_key = _load_private_key(args.key)
    try:
        if args.request_id:
            action_hash, tenant = _show_request(args)
        else:
            if not args.tenant:
                raise ConfigError("--action-hash needs --tenant (the tenant_id of the call)")
            if not re.fullmatch(r"[0-9a-f]{64}", args.action_hash):
                raise ConfigError("--action-hash must be 64 lowercase hex characters (SPEC §3)")
            action_hash, tenant = args.action_hash, args.tenant
            print("approving a call that was never proposed: you see only its hash", file=sys.stderr)
        audience = _audience(args)
    except ApprovalRefused as exc:
        print(f"openexec-mcp: refusing to sign: {exc}", file=sys.stderr)
        return 1
    print(f"action_hash: {action_hash}\ntenant:      {escape_text(tenant)}", file=sys.stderr)
    print(f"audience:    {escape_text(audience) if audience else 'any server (no audience)'}", file=sys.stderr)
    print(f"valid for:   {args.ttl} s", file=sys.stderr)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("refusing to approve without a terminal; pass --yes to confirm non-interactively")
        question = "reject this exact call?" if args.reject is not None else "approve this exact call once?"
        if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
            print("not approved", file=sys.stderr)
            return 1
    now = utc_now()
    fields: dict[str, Any] = {
        "approval_id": secrets.token_hex(16), "action_hash": action_hash, "issued_by": args.issuer,
        "issued_at": format_timestamp(now).replace(".000Z", "Z"),
        "expires_at": format_timestamp(now + timedelta(seconds=args.ttl)), "tenant_id": tenant,
    }  # fmt: skip
    if args.kid:  # without a kid the server uses its only configured key (SPEC §5)
        fields["kid"] = args.kid
    if args.reject is not None:  # a signed "no": the call is refused until this artifact expires (SPEC §13)
        fields["decision"], fields["reason"] = "reject", args.reject
    if audience:
        fields["audience"] = audience
    artifact = sign_approval(fields, private_key)
    if args.out:
        text = json.dumps(artifact, indent=2)
        print(text) if str(args.out) == "-" else args.out.write_text(text + "\n")
    if not args.no_submit:
        answer = _client(args).post("/approvals", json=artifact)
        if answer.status_code not in (200, 201):
            print(f"openexec-mcp: the server refused the artifact: {escape_text(answer.text[:500])}", file=sys.stderr)
            return 1
        kind = "rejection" if args.reject is not None else "approval"
        print(f"submitted {kind} {artifact['approval_id']} for action_hash {action_hash}", file=sys.stderr)
    return 0


def _show_request(args: argparse.Namespace) -> tuple[str, str]:
    """Fetch the pending request, show every member escaped, and return (action_hash, tenant).

    The hash signed is the one recomputed here from the action request shown (SPEC §3), never
    the server's; the tenant is the request's, and ``--tenant`` must agree with it.

    Raises:
        ApprovalRefused: The request is malformed, its action_hash is not the hash of its action
            request, or its tenant is not ``--tenant``.
    """
    item = _fetch_request(args, args.request_id)
    request: Any = item.get("action_request")
    served_hash, tenant = item.get("action_hash"), item.get("tenant_id")
    if not isinstance(request, dict) or set(request) != {"action", "payload", "nonce"}:  # pyright: ignore[reportUnknownArgumentType]
        raise ApprovalRefused("the server's action request is not {action, payload, nonce}")
    action, payload, nonce = request["action"], request["payload"], request["nonce"]  # pyright: ignore[reportUnknownVariableType]
    if not isinstance(action, str) or not isinstance(payload, dict) or not isinstance(tenant, str) or not tenant:
        raise ApprovalRefused("the server's approval request has a malformed action, payload or tenant_id")
    try:
        recomputed = compute_action_hash(action, payload, parse_nonce(nonce))  # pyright: ignore[reportUnknownArgumentType]
    except OpenExecError as exc:
        raise ApprovalRefused(f"the server's action request cannot be hashed: {exc.message}") from None
    print(f'action:      "{escape_text(action)}"', file=sys.stderr)
    print("payload:", file=sys.stderr)
    for line in render_payload_lines(payload):  # every member, every character, escaped
        print(f"  {line}", file=sys.stderr)
    print(f'nonce:       "{escape_text(str(nonce))}"', file=sys.stderr)  # pyright: ignore[reportUnknownArgumentType]
    if served_hash != recomputed:
        raise ApprovalRefused(
            f"the server says action_hash {str(served_hash)[:64]!r} but the action request shown hashes to "
            f"{recomputed}: what it shows is not what would be approved"
        )
    if args.tenant and args.tenant != tenant:
        raise ApprovalRefused(f"the request is for tenant {escape_text(tenant)!r}, not --tenant {args.tenant!r}")
    return recomputed, tenant


def _audience(args: argparse.Namespace) -> str | None:
    """Return the audience to sign for: ``--audience``, checked against the server's server_id.

    Raises:
        ApprovalRefused: The server names another server_id than ``--audience``, or, when the
            artifact is submitted, it names none and ``--audience`` is not given.
    """
    if args.no_submit:
        return args.audience
    server_id = _server_id(args)
    if args.audience and server_id is not None and server_id != args.audience:
        raise ApprovalRefused(
            f"the server at {args.server} says it is {escape_text(server_id)!r}, not --audience {args.audience!r}"
        )
    audience = args.audience or server_id
    if not audience:
        raise ApprovalRefused(f"{args.server} does not say its server_id; pass --audience SERVER_ID")
    return audience


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read governance key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    return httpx.Client(base_url=args.server, headers=headers, timeout=10.0)


def _get(args: argparse.Namespace, path: str, params: dict[str, str] | None = None) -> httpx.Response:
    try:
        return _client(args).get(path, params=params)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {args.server}: {exc}") from None


def _fetch_requests(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Return every pending request (previews), following ``next_cursor`` page after page."""
    requests: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "100"}
    while True:
        answer = _get(args, "/approvals", params)
        if answer.status_code != 200:
            raise ConfigError(f"GET {args.server}/approvals answered {answer.status_code}: {answer.text[:200]}")
        page: dict[str, Any] = answer.json()
        requests += page["approval_requests"]
        cursor = page.get("next_cursor")
        if not cursor:
            return requests
        params["cursor"] = str(cursor)


def _fetch_request(args: argparse.Namespace, request_id: str) -> dict[str, Any]:
    """Return one pending request with its whole action request (``GET /approvals/{request_id}``).

    Raises:
        ConfigError: The server cannot be reached, knows no such request, or refuses (exit 2).
        ApprovalRefused: The answer is not a JSON object for that request (exit 1).
    """
    answer = _get(args, f"/approvals/{quote(request_id, safe='')}")
    if answer.status_code == 404:
        raise ConfigError(f"no pending approval request {request_id!r} (expired or already executed?)")
    if answer.status_code != 200:
        detail = f"{answer.status_code}: {escape_text(answer.text[:200])}"
        raise ConfigError(f"GET {args.server}/approvals/{request_id} answered {detail}")
    try:
        item = json_object(answer.json())
    except ValueError:
        item = None
    if item is None or item.get("request_id") != request_id:
        raise ApprovalRefused(f"the server's answer is not the approval request {request_id!r}")
    return item


def _server_id(args: argparse.Namespace) -> str | None:
    try:
        answer = _client(args).get("/health")
        server_id: str | None = answer.json().get("server_id")
    except (httpx.HTTPError, ValueError):
        return None
    return server_id


from openexec_mcp.cli.grants import register_grant_options, run_grant  # noqa: E402
