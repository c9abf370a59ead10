"""``openexec-mcp witness serve | key``: run an independent C2SP witness (SPEC §14).

- ``witness serve --key FILE --name NAME --log ORIGIN=PUBLIC_KEY [...] [--db FILE] [--host H --port P]``:
  serve ``POST /add-checkpoint``. ``--key`` is the witness's own Ed25519 key (PKCS#8 PEM, mode
  0600), generated on first start. ``--log`` names each log it follows: the origin line of its
  checkpoints and its public key (base64 of the raw 32 bytes, a PEM file, or the log's
  ``GET /keys`` JSON saved to a file); the log's note key name is its origin. ``--db`` is the state
  file (default: ``witness.db`` beside the key).
- ``witness key --key FILE --name NAME``: print the witness's public key as the execution server and
  auditors configure it: ``NAME=BASE64`` and the signed-note vkey (generated if missing).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.receipt import ServerKey, parse_server_public_keys
from openexec_mcp.core.tlog.checkpoint import is_valid_key_name
from openexec_mcp.core.tlog.cosignature import WitnessKey, witness_vkey
from openexec_mcp.errors import ConfigError, MalformedInputError
from openexec_mcp.keystore import load_server_key

__all__ = ["load_or_create_witness_key", "parse_log", "register"]

logger = logging.getLogger("openexec_mcp.witness")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``witness`` command group."""
    parser = commands.add_parser("witness", help="an independent C2SP witness that cosigns ledger checkpoints")
    sub = parser.add_subparsers(dest="witness_command", required=True, metavar="SUBCOMMAND")
    serve = sub.add_parser("serve", parents=[common], help="serve POST /add-checkpoint (c2sp.org/tlog-witness)")
    _key_arguments(serve)
    serve.add_argument(
        "--log", action="append", required=True, metavar="ORIGIN=PUBLIC_KEY", dest="logs",
        help="a log to follow: its origin and public key (base64 raw 32 bytes, or a PEM / GET /keys file)",
    )  # fmt: skip
    serve.add_argument("--db", type=Path, metavar="FILE", help="state file (default: witness.db beside --key)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8100, help="port (default 8100)")
    serve.set_defaults(run=run_serve)
    key = sub.add_parser("key", parents=[common], help="print the witness public key (NAME=BASE64 and vkey)")
    _key_arguments(key)
    key.set_defaults(run=run_key)


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, required=True, metavar="FILE", help="the witness key (created if missing)")
    parser.add_argument("--name", required=True, metavar="NAME", help="the witness key name, e.g. witness.example/w1")


def load_or_create_witness_key(path: Path) -> ServerKey:
    """Load the witness key from ``path`` (PKCS#8 PEM, 0600), generating it when missing.

    Raises:
        ConfigError: Unreadable, too permissive, or not an Ed25519 PEM key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
    return load_server_key(path)


def parse_log(value: str) -> WitnessKey:
    """Parse ``--log ORIGIN=PUBLIC_KEY`` into the log's trusted note key (name = origin).

    Raises:
        ConfigError: No ``=``, an invalid origin, or not exactly one Ed25519 key.
    """
    origin, sep, key_text = value.partition("=")
    if not sep or not is_valid_key_name(origin):
        raise ConfigError(f"--log {value!r}: expected ORIGIN=PUBLIC_KEY")
    path = Path(key_text)
    try:
        text = path.read_text() if len(key_text) < 4096 and path.is_file() else key_text
        keys = list(parse_server_public_keys(text).values())
    except (OSError, MalformedInputError) as exc:
        raise ConfigError(f"--log {origin}: {getattr(exc, 'message', exc)}") from None
    if len(keys) != 1:
        raise ConfigError(f"--log {origin}: expected exactly one public key")
    return WitnessKey(origin, keys[0])


def _check_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise ConfigError(f"--name {name!r}: a key name is non-empty, without spaces or '+'")


def run_key(args: argparse.Namespace) -> int:
    """Print ``NAME=BASE64`` and the vkey of the witness key."""
    _check_name(args.name)
    key = load_or_create_witness_key(args.key)
    print(f"{args.name}={b64encode(key.public_raw)}")
    print(witness_vkey(args.name, key.public_key()))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve the witness until SIGTERM/SIGINT."""
    import uvicorn

    from openexec_mcp.witness.app import Witness, build_witness_app
    from openexec_mcp.witness.state import WitnessState

    _check_name(args.name)
    key = load_or_create_witness_key(args.key)
    logs: dict[str, WitnessKey] = {}
    for value in args.logs:
        log = parse_log(value)
        logs[log.name] = log
    db = args.db if args.db is not None else args.key.parent / "witness.db"
    witness = Witness(args.name, key.private_key, logs, WitnessState(db))
    logger.info(
        "witness %s ready on http://%s:%d: %s; logs: %s; state %s",
        args.name, args.host, args.port, witness_vkey(args.name, key.public_key()), ", ".join(sorted(logs)), db,
    )  # fmt: skip
    config = uvicorn.Config(build_witness_app(witness), host=args.host, port=args.port, log_level="warning")
    uvicorn.Server(config).run()
    return 0
