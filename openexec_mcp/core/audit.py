"""Ledger audit: the hash chain and the Merkle tree of receipts, checked entry by entry (SPEC §7).

:class:`LedgerAuditor` is fed the stored rows in ``seq`` order and checks, for each, in this order:

  1. the index is the next one (no gap);
  2. the stored receipt_hash is the leaf hash of the stored envelope;
  3. the stored envelope is JSON in RFC 8785 form;
  4. the envelope is a DSSE receipt signed by a trusted server key, with a SPEC §7 v1 body
     (:func:`~openexec_mcp.core.receipt.verify_receipt`);
  5. the body names this ``seq``, this log, this ``exec_id``, and as ``prev`` the receipt_hash of
     the entry before it.

The first failure raises, naming the ``seq``. The auditor also keeps the RFC 9162 tree of the
leaves it accepted (:attr:`LedgerAuditor.frontier`), so its root can be compared with signed
checkpoints.

Speed. A full audit is bounded by Ed25519 verification. The common envelope shape (one
signature, the receipt payload type) and the common body shape are recognised by string checks
that only pass canonical text, which saves the JSON round trips; anything else takes the general
path of step 4, which decides alike.
:meth:`LedgerAuditor.check` runs every step but the signature and hands the signature back as a
:class:`SignatureJob`, so a caller may verify signatures in batches on other threads; it must then
report the first failure in ``seq`` order (see :mod:`openexec_mcp.ledger.checkpoints`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from openexec_mcp.core.canonical import MAX_SAFE_INTEGER, json_object, loads_canonical
from openexec_mcp.core.encoding import b64decode_strict, pae
from openexec_mcp.core.receipt import RECEIPT_PAYLOAD_TYPE, has_receipt_body_fields, verify_receipt
from openexec_mcp.core.tlog.merkle import MerkleFrontier
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = ["LedgerAuditor", "SignatureJob", "parse_body_fast"]

# The RFC 8785 text of {"payload", "payloadType": <receipt type>, "signatures": [one]}, cut at its
# three values. Valid base64 and a trusted kid hold no '"' or '\\', so text that splits this way and
# whose values pass those checks is exactly the canonical envelope.
_HEAD: Final = '{"payload":"'
_MIDDLE: Final = f'","payloadType":"{RECEIPT_PAYLOAD_TYPE}","signatures":[{{"keyid":"'
_SIG: Final = '","sig":"'
_TAIL: Final = '"}]}'

# Matches only the RFC 8785 text of a v1 body as the gate writes it: keys in sorted order, strings of
# printable ASCII that need no escaping (so a group holds the value itself), a non-negative integer
# seq (its range is checked after). Any other body, canonical or not, takes the exact path.
_S: Final = r'"([\x20\x21\x23-\x5b\x5d-\x7e]*)"'
_SN: Final = rf"(?:{_S}|null)"
_BODY: Final = re.compile(
    rf'\{{"action":{_S},"action_hash":{_S},"approval":(?:null|(\{{)"approval_id":{_SN},"artifact_hash":{_SN},'
    rf'"issued_by":{_SN},"kid":{_SN},"method":{_S}\}}),"error_code":{_SN},"exec_id":{_S},"finished_at":{_S},'
    rf'"log_id":{_S},"nonce":{_S},(?:"nonce_source":{_S},)?"original_exec_id":{_SN},"policy_hash":{_S},'
    rf'"prev":{_SN},"result_hash":{_SN},'
    rf'"run_id":{_S},"seq":(0|[1-9][0-9]{{0,15}}),"server":\{{"name":{_S},"version":{_S}\}},'
    rf'"started_at":{_S},"status":{_S},"tenant_id":{_S},"v":1\}}'
)


def parse_body_fast(payload: bytes) -> dict[str, Any] | None:
    """Return the body when ``payload`` is the canonical text of a usual v1 body, else ``None``.

    ``None`` decides nothing: the caller takes the exact path (:func:`loads_canonical`).
    """
    if not payload.isascii():
        return None
    match = _BODY.fullmatch(payload.decode("ascii"))
    if match is None or int(match[20]) > MAX_SAFE_INTEGER:
        return None
    g = match.groups()
    approval = (
        {"approval_id": g[3], "artifact_hash": g[4], "issued_by": g[5], "kid": g[6], "method": g[7]} if g[2] else None
    )
    body: dict[str, Any] = {
        "action": g[0], "action_hash": g[1], "approval": approval, "error_code": g[8], "exec_id": g[9],
        "finished_at": g[10], "log_id": g[11], "nonce": g[12], "original_exec_id": g[14], "policy_hash": g[15],
        "prev": g[16], "result_hash": g[17], "run_id": g[18], "seq": int(g[19]),
        "server": {"name": g[20], "version": g[21]}, "started_at": g[22], "status": g[23], "tenant_id": g[24], "v": 1,
    }  # fmt: skip
    if g[13] is not None:  # a receipt of SPEC v2 (every body written since carries nonce_source)
        body["nonce_source"] = g[13]
    return body


@dataclass(frozen=True, slots=True)
class SignatureJob:
    """A signature whose verification was deferred by :meth:`LedgerAuditor.check`.

    Attributes:
        seq: The entry it belongs to.
        public_key: The trusted key named by the envelope's ``keyid``.
        signature: The 64-byte signature.
        message: The signed bytes, ``PAE(payloadType, payload)``.
    """

    seq: int
    public_key: Ed25519PublicKey
    signature: bytes
    message: bytes

    def verify(self) -> None:
        """Raise ``VerificationError("bad_signature")`` unless the signature verifies."""
        try:
            self.public_key.verify(self.signature, self.message)
        except InvalidSignature:
            raise VerificationError("bad_signature", "receipt signature does not verify", seq=self.seq) from None


def _b64_canonical(text: str) -> bytes | None:
    # None sends the row to the general path, which names the problem.
    try:
        return b64decode_strict(text)
    except MalformedInputError:
        return None


class LedgerAuditor:
    """Checks a ledger's hash chain and tree incrementally.

    Args:
        public_keys: Trusted server keys by ``kid``.
        log_id: The expected ``log_id`` (the server_id), or ``None`` to accept the first entry's.

    Attributes:
        size: Entries accepted so far.
        head: The receipt_hash of the last accepted entry.
        frontier: The RFC 9162 tree of the accepted leaves.
    """

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey], log_id: str | None = None) -> None:
        self._public_keys = public_keys
        self._log_id = log_id
        self.size = 0
        self.head: str | None = None
        self.frontier = MerkleFrontier()

    def feed(self, seq: int, exec_id: str, stored_hash: str, envelope_text: str) -> dict[str, Any]:
        """Check the next stored entry, its signature included, and return its receipt body.

        Args:
            seq: The stored index.
            exec_id: The stored exec_id column.
            stored_hash: The stored receipt_hash column (64 hex).
            envelope_text: The stored envelope (its RFC 8785 text).

        Raises:
            VerificationError: ``seq`` is set; ``reason`` is ``gap``, ``hash_mismatch``,
                ``malformed``, ``not_canonical``, a :func:`verify_receipt` reason, ``seq_mismatch``,
                ``log_mismatch``, ``exec_id_mismatch`` or ``broken_chain``.
        """
        body, job = self.check(seq, exec_id, stored_hash, envelope_text)
        if job is not None:
            job.verify()
        return body

    def check(
        self, seq: int, exec_id: str, stored_hash: str, envelope_text: str
    ) -> tuple[dict[str, Any], SignatureJob | None]:
        """Like :meth:`feed`, but return the signature check instead of running it.

        The entry is accepted (``size``, ``head`` and ``frontier`` move on) before its signature
        is verified: the caller must run the job, and treat its failure as the failure of this
        ``seq`` unless an earlier job fails too. When a later step fails here, the signature is
        verified first, so the reason is the one :meth:`feed` would give.

        Returns:
            The body and the deferred signature, or ``None`` when it was already verified.

        Raises:
            VerificationError: As :meth:`feed`, for every step but a deferred signature.
        """
        # (1) No gap.
        if seq != self.size:
            raise VerificationError("gap", f"expected seq {self.size}, found {seq}", seq=self.size)
        # (2) The stored hash is the hash of the stored bytes.
        raw = envelope_text.encode("utf-8")
        hasher = hashlib.sha256(b"\x00")
        hasher.update(raw)
        leaf = hasher.digest()
        if leaf.hex() != stored_hash:
            raise VerificationError(
                "hash_mismatch", "stored receipt_hash is not the hash of the stored receipt", seq=seq
            )
        # (3) and (4): the fast path for the usual shape, else the general one.
        body, job = self._fast_path(seq, envelope_text) or (self._general_path(seq, raw), None)
        # (5) The body's place in this ledger.
        try:
            self._check_links(seq, exec_id, body)
        except VerificationError:
            if job is not None:
                job.verify()
            raise
        self.size += 1
        self.head = stored_hash
        self.frontier.append(leaf)
        return body, job

    def _fast_path(self, seq: int, text: str) -> tuple[dict[str, Any], SignatureJob] | None:
        if not (text.startswith(_HEAD) and text.endswith(_TAIL)):
            return None
        payload_text, found, rest = text[len(_HEAD) : -len(_TAIL)].partition(_MIDDLE)
        keyid, found_sig, signature_text = rest.partition(_SIG)
        if not (found and found_sig):
            return None
        public_key = self._public_keys.get(keyid)
        payload, signature = _b64_canonical(payload_text), _b64_canonical(signature_text)
        if payload is None or signature is None or public_key is None or '"' in keyid or "\\" in keyid:
            return None
        body = parse_body_fast(payload)
        if body is None:
            try:
                parsed, canonical = loads_canonical(payload)
            except MalformedInputError:
                return None
            body = json_object(parsed)
            if not canonical or body is None or not has_receipt_body_fields(body) or body["v"] != 1:
                return None
        return body, SignatureJob(seq, public_key, signature, pae(RECEIPT_PAYLOAD_TYPE, payload))

    def _general_path(self, seq: int, raw: bytes) -> dict[str, Any]:
        try:
            envelope, canonical = loads_canonical(raw)
        except MalformedInputError:
            raise VerificationError("malformed", "stored receipt is not JSON", seq=seq) from None
        if not canonical:
            raise VerificationError("not_canonical", "stored receipt is not in RFC 8785 form", seq=seq)
        try:
            return verify_receipt(envelope, self._public_keys)
        except VerificationError as exc:
            raise VerificationError(exc.reason, exc.message, seq=seq) from None

    def _check_links(self, seq: int, exec_id: str, body: Mapping[str, Any]) -> None:
        if type(body["seq"]) is not int or body["seq"] != seq:
            raise VerificationError("seq_mismatch", f"receipt body says seq {body['seq']!r}", seq=seq)
        if self._log_id is None:
            self._log_id = body["log_id"]
        if body["log_id"] != self._log_id:
            raise VerificationError("log_mismatch", "receipt belongs to another log", seq=seq)
        if body["exec_id"] != exec_id:
            raise VerificationError("exec_id_mismatch", "stored exec_id differs from the receipt's", seq=seq)
        if body["prev"] != self.head:
            raise VerificationError("broken_chain", "prev is not the receipt_hash of the entry before", seq=seq)
