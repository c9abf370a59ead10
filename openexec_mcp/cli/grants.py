"""``openexec-mcp approve --grant USES --hours H [--when EXPR]``: sign and submit a grant (SPEC §13).

A grant approves up to USES calls of the actions it names (fnmatch patterns; by default the
action of the pending request given) for H hours, optionally only when a CEL expression over the
call's ``args`` is true. The server checks the same constraint with the same engine on every use.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from datetime import timedelta
from typing import Any

from openexec_mcp.core.clock import format_timestamp, utc_now
from openexec_mcp.core.grant import compile_when, sign_grant
from openexec_mcp.errors import ApprovalMalformedError, ConfigError

__all__ = ["register_grant_options", "run_grant"]


def register_grant_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--grant``, ``--hours``, ``--when`` and ``--actions`` to ``approve``."""
    parser.add_argument("--grant", type=int, metavar="USES", help="sign a grant for up to USES calls instead")
    parser.add_argument("--hours", type=float, default=1.0, help="grant lifetime in hours (default: 1)")
    parser.add_argument("--when", metavar="EXPR", help="CEL constraint over args, e.g. 'args.amount < 100'")
    parser.add_argument("--actions", action="append", metavar="PATTERN",
                        help="action name pattern (repeatable; default: the request's action)")  # fmt: skip


def grant_fields(
    *, tenant_id: str, actions: list[str], max_uses: int, hours: float, issuer: str, kid: str,
    when: str | None = None, audience: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Return the unsigned members of a new grant (SPEC §13), issued now.

    Raises:
        ConfigError: ``max_uses`` < 1, ``hours`` not positive, no pattern, or ``when`` does not compile.
    """
    if max_uses < 1:
        raise ConfigError("a grant needs USES >= 1")
    if not hours > 0:
        raise ConfigError("--hours must be positive")
    if not actions:
        raise ConfigError("a grant needs at least one action pattern (--actions)")
    if when is not None:
        try:
            compile_when(when)
        except ApprovalMalformedError as exc:
            raise ConfigError(exc.message) from None
    now = utc_now()
    fields: dict[str, Any] = {
        "grant_id": "gr-" + secrets.token_hex(12), "tenant_id": tenant_id, "issued_by": issuer,
        "issued_at": format_timestamp(now), "expires_at": format_timestamp(now + timedelta(hours=hours)),
        "kid": kid, "actions": actions, "max_uses": max_uses,
    }  # fmt: skip
    if when is not None:
        fields["when"] = when
    if audience:
        fields["audience"] = audience
    return fields


def run_grant(args: argparse.Namespace) -> int:
    """Show what the grant covers, sign it, submit it with ``POST /grants``."""
    from openexec_mcp.cli.governance import _client, _fetch_request, _load_private_key, _server_id  # pyright: ignore[reportPrivateUsage]

    private_key = _load_private_key(args.key)
    actions: list[str] = list(args.actions or [])
    tenant = args.tenant
    if args.request_id:
        item = _fetch_request(args, args.request_id)
        tenant = tenant or item["tenant_id"]
        actions = actions or [str(item["action_request"].get("action"))]
    if not tenant:
        raise ConfigError("a grant without REQUEST_ID needs --tenant")
    if not args.kid:
        raise ConfigError("a grant needs --kid (the key id the server knows the governance key by)")
    audience = args.audience or (None if args.no_submit else _server_id(args))
    fields = grant_fields(tenant_id=tenant, actions=actions, max_uses=args.grant, hours=args.hours,
                          issuer=args.issuer, kid=args.kid, when=args.when, audience=audience)  # fmt: skip
    print(f"grant:    up to {args.grant} call(s) of {', '.join(actions)} for {args.hours:g} h", file=sys.stderr)
    print(f"when:     {args.when or '(any arguments)'}\ntenant:   {tenant}", file=sys.stderr)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError("refusing to grant without a terminal; pass --yes to confirm non-interactively")
        if input("sign this grant? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not granted", file=sys.stderr)
            return 1
    grant = sign_grant(fields, private_key)
    if args.out:
        text = json.dumps(grant, indent=2)
        print(text) if str(args.out) == "-" else args.out.write_text(text + "\n")
    if not args.no_submit:
        answer = _client(args).post("/grants", json=grant)
        if answer.status_code not in (200, 201):
            print(f"openexec-mcp: the server refused the grant: {answer.text}", file=sys.stderr)
            return 1
        print(f"submitted grant {grant['grant_id']}", file=sys.stderr)
    return 0
