"""Replay check: re-run a run's deterministic calls and compare result hashes (``ledger replay``).

A receipt holds the ``action_hash`` and the ``result_hash`` of a call, not its payload; the payload
is the action request (SPEC §3) kept with the call's nonce record. For each receipt of the run,
in ``seq`` order, the first step that decides gives the verdict:

  1. the receipt verifies under a trusted server key, else ``bad_receipt``;
  2. it recorded a result (``executed`` or ``replayed``), else ``skipped``: nothing ran;
  3. its action is loaded and declared ``read_only`` (side-effect free, deterministic), else
     ``side_effects`` (listed, never re-run) or ``skipped``;
  4. the recorded request exists (it is pruned with its nonce, SPEC §4 retention), else ``skipped``;
  5. the recorded request hashes to the receipt's ``action_hash``, else ``payload_mismatch``;
  6. the handler, called directly with the validated payload (no gate: no approval, nonce or
     receipt), returns a result whose hash is the receipt's ``result_hash``: ``match``, else
     ``differs``; an exception or a timeout is ``error``.

``bad_receipt``, ``payload_mismatch``, ``differs`` and ``error`` fail the check.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio
import anyio.to_thread
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from openexec_mcp.core.canonical import canonicalize, json_object, parse_json, sha256_hex
from openexec_mcp.core.encoding import b64decode_strict
from openexec_mcp.core.receipt import verify_receipt
from openexec_mcp.errors import MalformedInputError, VerificationError
from openexec_mcp.registry import Registry
from openexec_mcp.store.base import Store

__all__ = ["FAILING_VERDICTS", "ReplayLine", "ReplayReport", "decode_body", "replay_run"]

FAILING_VERDICTS: Final = frozenset({"bad_receipt", "payload_mismatch", "differs", "error"})


@dataclass(frozen=True, slots=True)
class ReplayLine:
    """The verdict on one receipt of the run."""

    seq: int
    action: str
    status: str
    verdict: str
    detail: str
    tenant_id: str = ""

    def row(self) -> list[str]:
        """Return the table row: seq, action, status, verdict, detail."""
        return [str(self.seq), self.action, self.status, self.verdict, self.detail]


@dataclass(slots=True)
class ReplayReport:
    """Every verdict of a run, in ``seq`` order."""

    lines: list[ReplayLine] = field(default_factory=list[ReplayLine])

    def count(self, verdict: str) -> int:
        """How many receipts got ``verdict``."""
        return sum(line.verdict == verdict for line in self.lines)

    @property
    def failed(self) -> bool:
        """Whether any verdict fails the check."""
        return any(line.verdict in FAILING_VERDICTS for line in self.lines)


def decode_body(envelope_text: str) -> dict[str, Any]:
    """Return a stored receipt's body without verifying it (for display; ``{}`` if unreadable)."""
    try:
        envelope = json_object(json.loads(envelope_text)) or {}
        return json_object(json.loads(b64decode_strict(envelope.get("payload", "")))) or {}
    except (ValueError, MalformedInputError):
        return {}


def replay_run(
    store: Store,
    registry: Registry,
    public_keys: Mapping[str, Ed25519PublicKey],
    run_id: str,
    *,
    tenant_id: str | None = None,
    timeout_seconds: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Check every receipt of ``run_id`` (steps in the module docstring).

    Args:
        store: The store of the ledger and the nonce records.
        registry: The actions, as the server loads them.
        public_keys: Trusted server keys by ``kid``.
        run_id: The run.
        tenant_id: Only this tenant's calls of the run (run ids are chosen by clients, so two
            tenants can share one); ``None``: every tenant's, each line naming its tenant.
        timeout_seconds: Longest a re-run handler may take.
        progress: Called with the number of receipts checked so far.
    """
    report = ReplayReport()
    for entry in store.iter_entries(run_id=run_id, tenant_id=tenant_id):
        line = _check(store, registry, public_keys, entry.seq, entry.envelope, timeout_seconds)
        report.lines.append(replace(line, tenant_id=entry.tenant_id))
        if progress is not None:
            progress(len(report.lines))
    return report


def _check(
    store: Store,
    registry: Registry,
    public_keys: Mapping[str, Ed25519PublicKey],
    seq: int,
    envelope: str,
    timeout_seconds: float,
) -> ReplayLine:
    # (1) A receipt we can trust.
    try:
        body = verify_receipt(json.loads(envelope), public_keys)
    except (ValueError, VerificationError) as exc:
        reason = exc.reason if isinstance(exc, VerificationError) else "malformed"
        return ReplayLine(seq, "?", "?", "bad_receipt", reason)
    name, status = str(body["action"]), str(body["status"])

    def line(verdict: str, detail: str) -> ReplayLine:
        return ReplayLine(seq, name, status, verdict, detail)

    # (2) Something ran and was recorded.
    if status not in ("executed", "replayed") or body["result_hash"] is None:
        return line("skipped", f"no result recorded ({status})")
    # (3) Only side-effect-free actions are re-run.
    action = registry.get(name)
    if action is None:
        return line("skipped", "action not loaded")
    if not action.read_only:
        return line("side_effects", "not read_only: listed, not re-run")
    # (4) and (5): the recorded request, exactly the one the receipt names.
    request_text = store.get_action_request(str(body["tenant_id"]), str(body["nonce"]))
    if request_text is None:
        return line("skipped", "payload not recorded (pruned with its nonce, or an older row)")
    if sha256_hex(request_text.encode("utf-8")) != body["action_hash"]:
        return line("payload_mismatch", "the recorded request does not hash to the receipt's action_hash")
    # (6) Re-run and compare.
    try:
        request = json_object(parse_json(request_text, max_bytes=len(request_text) + 1)) or {}
        payload = json_object(request.get("payload"))
        if payload is None:
            raise MalformedInputError("the recorded request has no payload object")
        model = action.parse_payload(payload, canonicalize(payload))
        result = anyio.run(_run_handler, action.handler, action.is_async, model, timeout_seconds)
        result_hash = sha256_hex(canonicalize(result))
    except TimeoutError:
        return line("error", f"the handler ran longer than {timeout_seconds} s")
    except Exception as exc:
        return line("error", f"{type(exc).__name__} while re-running")
    if result_hash != body["result_hash"]:
        return line("differs", f"result_hash {result_hash[:16]}… is not the receipt's {str(body['result_hash'])[:16]}…")
    return line("match", "same result_hash")


async def _run_handler(handler: Callable[[Any], Any], is_async: bool, model: BaseModel, timeout_seconds: float) -> Any:
    with anyio.fail_after(timeout_seconds):
        if is_async:
            output = await handler(model)
        else:
            output = await anyio.to_thread.run_sync(handler, model, abandon_on_cancel=True)
    return output.model_dump(mode="json") if isinstance(output, BaseModel) else output
