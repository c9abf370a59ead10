"""``openexec-mcp witness serve | key``: run an independent C2SP witness (SPEC §14).

- ``witness serve --key FILE --name NAME --log ORIGIN=PUBLIC_KEY [...] [--db FILE] [--host H --port P]``:
  serve ``POST /add-checkpoint``. ``--key`` is the witness's own Ed25519 key (PKCS#8 PEM, mode
  0600), generated on first start. ``--log`` names each log it follows: the origin line of its
  checkpoints and its public key (base64 of the raw 32 bytes, a PEM file, or the log's
  ``GET /keys`` JSON saved to a file); the log's note key name is its origin. ``--db`` is the state
  file (default: ``witness.db`` beside the key).
- ``witness serve --config witness.toml``: the same from a TOML file (keys ``name``, ``key``, ``db``,
  ``host``, ``port`` and ``[[logs]] origin, public_key``; paths relative to the file); flags given
  as well win, and ``--log`` adds to its logs.
- ``witness key --key FILE --name NAME``: print the witness's public key as the execution server and
  auditors configure it: ``NAME=BASE64`` and the signed-note vkey (generated if missing).
"""

from __future__ import annotations

import argparse
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from openexec_mcp.core.encoding import b64encode
from openexec_mcp.core.receipt import ServerKey, parse_server_public_keys
from openexec_mcp.core.tlog.checkpoint import is_valid_key_name
from openexec_mcp.core.tlog.cosignature import WitnessKey, witness_vkey
from openexec_mcp.errors import ConfigError, MalformedInputError
from openexec_mcp.keystore import load_server_key

__all__ = ["load_or_create_witness_key", "parse_log", "register"]

logger = logging.getLogger("openexec_mcp.witness")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``witness`` command group (``common`` is unused: a witness has its own config)."""
    del common
    parser = commands.add_parser("witness", help="an independent C2SP witness that cosigns ledger checkpoints")
    sub = parser.add_subparsers(dest="witness_command", required=True, metavar="SUBCOMMAND")
    # Not the server's --config ($OPENEXEC_CONFIG): a witness has its own file.
    only_logs = argparse.ArgumentParser(add_help=False)
    only_logs.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level"
    )
    serve = sub.add_parser("serve", parents=[only_logs], help="serve POST /add-checkpoint (c2sp.org/tlog-witness)")
    serve.add_argument("--config", type=Path, metavar="FILE", help="the witness's TOML file (see the flags)")
    _key_arguments(serve, required=False)
    serve.add_argument(
        "--log",
        action="append",
        default=[],
        metavar="ORIGIN=PUBLIC_KEY",
        dest="logs",
        help="a log to follow: its origin and public key (base64 raw 32 bytes, or a PEM / GET /keys file)",
    )
    serve.add_argument("--db", type=Path, metavar="FILE", help="state file (default: witness.db beside --key)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8100)")
    serve.set_defaults(run=run_serve)
    key = sub.add_parser("key", parents=[only_logs], help="print the witness public key (NAME=BASE64 and vkey)")
    _key_arguments(key)
    key.set_defaults(run=run_key)


def _key_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument(
        "--key", type=Path, required=required, metavar="FILE", help="the witness key (created if missing)"
    )
    parser.add_argument("--name", required=required, metavar="NAME", help="the witness key name (e.g. w.example/w)")


class _LogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    origin: str
    public_key: str


class _WitnessFile(BaseModel):
    """The ``witness serve --config`` TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = None
    key: Path | None = None
    db: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=1, le=65535)
    logs: list[_LogEntry] = Field(default_factory=list[_LogEntry])


def _read_config(path: Path | None) -> _WitnessFile:
    if path is None:
        return _WitnessFile()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        config = _WitnessFile.model_validate(document)
    except OSError as exc:
        raise ConfigError(f"cannot read witness config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(f"invalid witness config {path}: {str(exc).splitlines()[0]}") from None
    here = path.parent
    return config.model_copy(
        update={
            "key": here / config.key if config.key is not None else None,
            "db": here / config.db if config.db is not None else None,
        }
    )


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

    file = _read_config(args.config)
    name, key_path = args.name or file.name, args.key or file.key
    if name is None or key_path is None:
        raise ConfigError("witness serve needs --name and --key (or name and key in --config)")
    _check_name(name)
    key = load_or_create_witness_key(key_path)
    logs: dict[str, WitnessKey] = {}
    for value in [f"{entry.origin}={entry.public_key}" for entry in file.logs] + list(args.logs):
        log = parse_log(value)
        logs[log.name] = log
    if not logs:
        raise ConfigError("witness serve needs at least one --log ORIGIN=PUBLIC_KEY (or [[logs]] in --config)")
    db = args.db or file.db or key_path.parent / "witness.db"
    host, port = args.host or file.host, args.port or file.port
    witness = Witness(name, key.private_key, logs, WitnessState(db))
    logger.info(
        "witness %s ready on http://%s:%d: %s; logs: %s; state %s",
        name,
        host,
        port,
        witness_vkey(name, key.public_key()),
        ", ".join(sorted(logs)),
        db,
    )
    config = uvicorn.Config(build_witness_app(witness), host=host, port=port, log_level="warning")
    uvicorn.Server(config).run()
    return 0
