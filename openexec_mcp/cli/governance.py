"""The approver's side (SPEC §5, §9): governance keys, the inbox, minting artifacts.

``keys generate`` writes a governance Ed25519 key pair; ``approvals list`` shows pending
approval requests; ``approve`` shows the approver the exact action and payload, mints an artifact
bound to its action_hash, signs it with the governance key and submits it. The server never
loads these private keys: they stay with the approver.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from openexec_mcp.core.approval import sign_approval
from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.receipt import kid_for_public_key
from openexec_mcp.errors import ConfigError

# Grants (SPEC §13) live in their own module; imported last to avoid a cycle.

__all__ = ["register_approvals", "register_approve", "register_keys_generate"]

DEFAULT_SERVER = "http://127.0.0.1:8000"


def register_keys_generate(keys_sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``keys generate``."""
    generate = keys_sub.add_parser("generate", parents=[common], help="write a governance Ed25519 key pair")
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the key files")
    generate.add_argument("--kid", help="key id to configure (default: derived from the public key)")
    generate.set_defaults(run=run_keys_generate)


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


def run_keys_generate(args: argparse.Namespace) -> int:
    """Write ``governance.key`` (PKCS#8 PEM, 0600) and ``governance.pub`` (base64 raw) into DIR."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = out / "governance.key", out / "governance.pub"
    if private_path.exists():
        raise ConfigError(f"{private_path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_path.write_text(b64encode(raw) + "\n")
    kid = args.kid or "gov-" + kid_for_public_key(raw)
    print(f"wrote {private_path} (private, 0600: keep it with the approver) and {public_path}")
    print("\nadd to the server's config:\n")
    print(
        f'[[approvals.keys]]\nkid = "{kid}"\nalg = "ed25519"\npublic_key = "{b64encode(raw)}"\nissuers = ["clawshield"]'
    )
    print(f"\nor set CLAWSHIELD_PUBLIC_KEY={b64encode(raw)}  (kid 'clawshield', issuer 'clawshield')")
    return 0


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


def run_approve(args: argparse.Namespace) -> int:
    """Show the exact call, mint and sign the artifact, submit it (SPEC §5)."""
    if getattr(args, "grant", None) is not None:
        return run_grant(args)
    if bool(args.request_id) == bool(args.action_hash):
        raise ConfigError("give exactly one of REQUEST_ID or --action-hash")
    if args.reject is not None and len(args.reject) > 500:
        raise ConfigError("--reject REASON is at most 500 characters")
    private_key = _load_private_key(args.key)
    if args.request_id:
        item = _fetch_request(args, args.request_id)
        action_hash, tenant = item["action_hash"], args.tenant or item["tenant_id"]
        request = item["action_request"]
        print(f"action:      {request.get('action')}", file=sys.stderr)
        print(f"payload:     {json.dumps(request.get('payload'), indent=2, sort_keys=True)}", file=sys.stderr)
        print(f"nonce:       {request.get('nonce')}", file=sys.stderr)
    else:
        if not args.tenant:
            raise ConfigError("--action-hash needs --tenant (the tenant_id of the call)")
        action_hash, tenant = args.action_hash, args.tenant
        print("approving a call that was never proposed: you see only its hash", file=sys.stderr)
    print(f"action_hash: {action_hash}\ntenant:      {tenant}\nvalid for:   {args.ttl} s", file=sys.stderr)
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
    audience = args.audience or (None if args.no_submit else _server_id(args))
    if audience:
        fields["audience"] = audience
    artifact = sign_approval(fields, private_key)
    if args.out:
        text = json.dumps(artifact, indent=2)
        print(text) if str(args.out) == "-" else args.out.write_text(text + "\n")
    if not args.no_submit:
        answer = _client(args).post("/approvals", json=artifact)
        if answer.status_code not in (200, 201):
            print(f"openexec-mcp: the server refused the artifact: {answer.text}", file=sys.stderr)
            return 1
        kind = "rejection" if args.reject is not None else "approval"
        print(f"submitted {kind} {artifact['approval_id']} for action_hash {action_hash}", file=sys.stderr)
    return 0


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
    """Return one pending request with its whole action request (``GET /approvals/{request_id}``)."""
    answer = _get(args, f"/approvals/{quote(request_id, safe='')}")
    if answer.status_code == 404:
        raise ConfigError(f"no pending approval request {request_id!r} (expired or already executed?)")
    if answer.status_code != 200:
        detail = f"{answer.status_code}: {answer.text[:200]}"
        raise ConfigError(f"GET {args.server}/approvals/{request_id} answered {detail}")
    item: dict[str, Any] = answer.json()
    return item


def _server_id(args: argparse.Namespace) -> str | None:
    try:
        answer = _client(args).get("/health")
        server_id: str | None = answer.json().get("server_id")
    except (httpx.HTTPError, ValueError):
        return None
    return server_id


from openexec_mcp.cli.grants import register_grant_options, run_grant  # noqa: E402
