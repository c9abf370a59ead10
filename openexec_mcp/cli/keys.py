"""``openexec-mcp keys``: the server's public key, and governance key pairs (SPEC §7, §9).

``keys public`` prints the ``GET /keys`` document of the server key (creating it on first use);
``keys generate --out DIR`` writes a governance Ed25519 key pair for an approver. The server never
loads a governance private key: only its public half goes into the server's config.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from openexec_mcp.config import load_settings
from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.receipt import kid_for_public_key
from openexec_mcp.errors import ConfigError
from openexec_mcp.keystore import load_or_create_server_key, public_keys_document

__all__ = ["register", "run_generate", "run_public"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``keys`` command group: ``public`` and ``generate``."""
    parser = commands.add_parser("keys", help="server keys and governance key pairs")
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    public = sub.add_parser("public", parents=[common], help="print the GET /keys JSON")
    public.set_defaults(run=run_public)
    generate = sub.add_parser("generate", parents=[common], help="write a governance Ed25519 key pair")
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the key files")
    generate.add_argument("--kid", help="key id to configure (default: derived from the public key)")
    generate.set_defaults(run=run_generate)


def run_public(args: argparse.Namespace) -> int:
    """Print ``{"keys": [{"kid", "alg", "public_key"}]}`` (creating the key on first use)."""
    settings = load_settings(args.config)
    print(json.dumps(public_keys_document(load_or_create_server_key(settings.state_dir)), indent=2))
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Write ``governance.key`` (PKCS#8 PEM, 0600) and ``governance.pub`` (base64 raw) into DIR.

    Raises:
        ConfigError: ``DIR/governance.key`` exists (a key is never overwritten).
    """
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = out / "governance.key", out / "governance.pub"
    key = Ed25519PrivateKey.generate()
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{private_path} exists; refusing to overwrite a key") from None
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
