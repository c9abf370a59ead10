"""``openexec-mcp keys``: the server's public key, and governance key pairs (SPEC §7, §9)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from openexec_mcp.cli.governance import register_keys_generate
from openexec_mcp.config import load_settings
from openexec_mcp.keystore import load_or_create_server_key, public_keys_document


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``keys`` command group."""
    parser = commands.add_parser("keys", help="server keys")
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    public = sub.add_parser("public", parents=[common], help="print the GET /keys JSON")
    public.set_defaults(run=run_public)
    register_keys_generate(sub, common)


def run_public(args: argparse.Namespace) -> int:
    """Print ``{"keys": [{"kid", "alg", "public_key"}]}`` (creating the key on first use)."""
    settings = load_settings(args.config)
    print(json.dumps(public_keys_document(load_or_create_server_key(settings.state_dir)), indent=2))
    return 0
