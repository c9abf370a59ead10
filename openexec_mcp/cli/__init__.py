"""The ``openexec-mcp`` command line (SPEC §9).

Exit codes: 0 success, 1 verification failed, 2 usage or config error. Errors are one line on
stderr, never a traceback; stdout carries only command output (and, for ``serve`` over stdio,
only the MCP protocol).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from openexec_mcp import __version__
from openexec_mcp.cli import bundle, governance, governance_serve, keys, ledger, receipt, serve
from openexec_mcp.errors import ConfigError, OpenExecError
from openexec_mcp.witness import cli as witness

__all__ = ["EXIT_EXCEPTION", "EXIT_OK", "EXIT_USAGE", "EXIT_VERIFY_FAILED", "main"]

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_EXCEPTION = 70  # EX_SOFTWARE (sysexits.h): a bug, not a verdict


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="openexec-mcp",
        description="An MCP server that exposes registered actions as guarded tools with signed receipts.",
    )
    parser.add_argument("--version", action="version", version=f"openexec-mcp {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML config file (default: $OPENEXEC_CONFIG)")
    common.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, keys, receipt, ledger, bundle, witness):
        module.register(commands, common)
    governance.register_approvals(commands, common)
    governance.register_approve(commands, common)
    governance_serve.register_governance(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise in a CLI
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"openexec-mcp: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except OpenExecError as exc:
        print(f"openexec-mcp: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback to the user; details at --log-level DEBUG
        logging.getLogger("openexec_mcp").debug("unexpected error", exc_info=True)
        print(
            f"openexec-mcp: internal error: {type(exc).__name__} (run with --log-level DEBUG for details)",
            file=sys.stderr,
        )
        return EXIT_EXCEPTION
