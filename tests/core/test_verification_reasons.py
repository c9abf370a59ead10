"""The ``reason`` of a verification failure is a pinned ``Literal`` (issue 10): stable wire tokens."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import openexec_mcp
from openexec_mcp.errors import VerificationReason

PACKAGE = Path(openexec_mcp.__file__).parent

PINNED = frozenset(
    {
        "malformed",
        "wrong_payload_type",
        "unknown_key",
        "bad_signature",
        "bad_body",
        "not_canonical",
        "seq_mismatch",
        "log_mismatch",
        "exec_id_mismatch",
        "broken_chain",
        "broken_prev",
        "gap",
        "hash_mismatch",
        "tree_mismatch",
        "size_mismatch",
        "checkpoint_ahead",
        "inconsistent_checkpoint",
        "malformed_hash",
        "index_out_of_range",
        "wrong_proof_length",
        "root_mismatch",
        "size_regression",
        "empty_tree",
        "malformed_proof",
        "index_mismatch",
        "malformed_note",
        "missing_signature",
        "malformed_checkpoint",
        "origin_mismatch",
        "bad_cosignature",
        "quorum_not_met",
        "malformed_bundle",
        "untrusted_server_key",
        "not_in_ledger",
        "unknown_exec_id",
        "receipt_mismatch",
        "result_mismatch",
    }
)
"""Changing this set changes the wire contract: say so in docs and the changelog."""


def raised_reasons() -> set[str]:
    reasons: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == (
                "VerificationError"
            ):
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    reasons.add(str(first.value))
    return reasons


def test_verification_reasons_are_pinned_and_unique() -> None:
    values = get_args(VerificationReason)
    assert len(values) == len(set(values))
    assert set(values) == PINNED


def test_every_reason_the_package_raises_is_in_the_literal() -> None:
    raised = raised_reasons()
    assert raised, "the scan found no VerificationError at all"
    assert raised <= PINNED, sorted(raised - PINNED)
