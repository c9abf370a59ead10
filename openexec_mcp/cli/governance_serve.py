"""``openexec-mcp governance serve``: the governance console and seed API (SPEC §13).

It runs apart from the execution servers, holds the governance private key, and needs
``[[governance.approvers]]`` in the config file (``--config``) so that someone can sign in.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["register_governance"]


def register_governance(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``governance serve``."""
    parser = commands.add_parser("governance", help="the governance service (approvers' console)")
    sub = parser.add_subparsers(dest="governance_command", required=True, metavar="SUBCOMMAND")
    serve = sub.add_parser("serve", parents=[common], help="serve the approval console and the seed API")
    serve.add_argument("--key", required=True, type=Path, metavar="FILE", help="governance private key (PEM)")
    serve.add_argument(
        "--server", action="append", default=[], metavar="URL", help="an execution server to watch (repeatable)"
    )
    serve.add_argument(
        "--server-token",
        default=os.environ.get("OPENEXEC_TOKEN"),
        help="bearer token for the watched servers (scopes read, approve)",
    )
    serve.add_argument("--kid", default="clawshield", help="key id the servers know the key by (default clawshield)")
    serve.add_argument("--issuer", default="clawshield", help="issued_by of signed decisions (default clawshield)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8700, help="port (default 8700)")
    serve.add_argument("--public-url", help="the console's URL in notifications (default http://HOST:PORT)")
    serve.add_argument("--state-dir", type=Path, help="keep the decision history here (decisions.jsonl)")
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="how often new requests are looked for")
    serve.set_defaults(run=run_governance_serve)


def run_governance_serve(args: argparse.Namespace) -> int:
    """Load the configuration and serve until interrupted."""
    import uvicorn

    from openexec_mcp.governance.app import build_governance_app
    from openexec_mcp.governance.config import load_governance_config
    from openexec_mcp.governance.notify import NotificationLoop
    from openexec_mcp.governance.service import GovernanceService

    config_file = getattr(args, "config", None) or os.environ.get("OPENEXEC_CONFIG")
    config = load_governance_config(
        key_file=args.key,
        servers=args.server,
        config_file=Path(config_file) if config_file else None,
        token=args.server_token,
        kid=args.kid,
        issuer=args.issuer,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        api_key=os.environ.get("CLAWSHIELD_API_KEY"),
        poll_seconds=args.poll_seconds,
        state_dir=args.state_dir,
    )
    service = GovernanceService(config)
    app = build_governance_app(service, NotificationLoop(service))
    logging.getLogger("openexec_mcp.governance").info("governance console on %s", config.public_url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
