"""Receipts: DSSE envelopes signed with the server's Ed25519 key (SPEC §7).

A receipt body is the JSON object of SPEC §7; the envelope is
``{"payloadType": RECEIPT_PAYLOAD_TYPE, "payload": base64(JCS(body)),
"signatures": [{"keyid": kid, "sig": base64(Ed25519(PAE(type, JCS(body))))}]}``.
The **receipt_hash** is the RFC 6962 leaf hash of the envelope:
``SHA-256(0x00 || JCS(envelope))``, 64 lowercase hex.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from openexec_mcp.core.canonical import canonicalize, json_object, loads_canonical
from openexec_mcp.core.encoding import b64decode_strict, b64encode, pae
from openexec_mcp.errors import MalformedInputError, VerificationError

__all__ = [
    "OPTIONAL_BODY_FIELDS",
    "RECEIPT_BODY_FIELDS",
    "RECEIPT_PAYLOAD_TYPE",
    "RECEIPT_STATUSES",
    "ApprovalMethod",
    "NonceSource",
    "ReceiptApproval",
    "ReceiptBody",
    "ReceiptStatus",
    "ReceiptUpstream",
    "ServerInfo",
    "ServerKey",
    "SignedReceipt",
    "has_receipt_body_fields",
    "kid_for_public_key",
    "parse_server_public_keys",
    "receipt_hash",
    "sign_receipt",
    "verify_receipt",
]

RECEIPT_PAYLOAD_TYPE: Final = "application/vnd.openexec.receipt+json"

ReceiptStatus = Literal["executed", "failed", "denied", "replayed", "indeterminate"]
NonceSource = Literal["client", "server"]
ApprovalMethod = Literal["auto", "signed", "elicitation", "grant"]

RECEIPT_STATUSES: Final[frozenset[str]] = frozenset(get_args(ReceiptStatus))

RECEIPT_BODY_FIELDS: Final = frozenset(
    {
        "v", "exec_id", "seq", "prev", "log_id", "tenant_id", "action", "action_hash", "nonce",
        "run_id", "status", "error_code", "approval", "result_hash", "original_exec_id",
        "policy_hash", "started_at", "finished_at", "server",
    }
)  # fmt: skip
"""The body fields every v1 receipt has (SPEC §7), written or not before SPEC v2."""

OPTIONAL_BODY_FIELDS: Final = frozenset({"nonce_source", "upstream"})
"""Fields of SPEC v2 (§11): ``nonce_source`` on every body written since, ``upstream`` on calls of
an upstream tool. A body without ``nonce_source`` is a receipt written before v2 and stays valid."""


def has_receipt_body_fields(body: Mapping[str, Any]) -> bool:
    """Return whether ``body`` has every v1 field and nothing but the optional v2 ones."""
    keys = body.keys()
    return keys >= RECEIPT_BODY_FIELDS and keys <= RECEIPT_BODY_FIELDS | OPTIONAL_BODY_FIELDS


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """``{name, version}`` of a server: this one (``server``) or an upstream's (SPEC §7, §11)."""

    name: str
    version: str

    def to_json(self) -> dict[str, str]:
        """Return ``{"name", "version"}``."""
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True, slots=True)
class ReceiptUpstream:
    """The receipt's ``upstream`` object of a call forwarded to an upstream MCP server (SPEC §11).

    Attributes:
        name: The ``[[upstreams]] name`` (the tool prefix).
        server: The upstream's ``serverInfo`` from its ``initialize`` answer.
    """

    name: str
    server: ServerInfo

    def to_json(self) -> dict[str, Any]:
        """Return ``{"name", "server": {"name", "version"}}``."""
        return {"name": self.name, "server": self.server.to_json()}


@dataclass(frozen=True, slots=True)
class ReceiptApproval:
    """The receipt's ``approval`` object (SPEC §7, §10, §13): always an object.

    Attributes:
        method: How the call was approved, or which method was required when it was refused.
        approval_id: The artifact's ``approval_id`` (a grant's ``grant_id``), else ``None``.
        kid: The keyring entry that verified it, else ``None``.
        issued_by: The artifact's issuer, else ``None``.
        artifact_hash: SHA-256 hex of the JCS of the artifact (of the elicitation evidence for
            ``elicitation``), else ``None``.
        use: For ``grant`` only: which use of the grant this call consumed (1-based).
    """

    method: ApprovalMethod
    approval_id: str | None = None
    kid: str | None = None
    issued_by: str | None = None
    artifact_hash: str | None = None
    use: int | None = None

    def __post_init__(self) -> None:
        if self.method not in get_args(ApprovalMethod):
            raise ValueError(f"unknown approval method {self.method!r}")
        if self.use is not None and self.method != "grant":
            raise ValueError("only a grant approval has a use count")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ReceiptApproval:
        """Build from the JSON object (trusted: written by the gate, e.g. a nonce record's copy).

        Raises:
            ValueError: An unknown method or member.
        """
        unknown = obj.keys() - {"method", "approval_id", "kid", "issued_by", "artifact_hash", "use"}
        if unknown:
            raise ValueError(f"unknown approval members {sorted(unknown)}")
        return cls(
            method=obj["method"], approval_id=obj.get("approval_id"), kid=obj.get("kid"),
            issued_by=obj.get("issued_by"), artifact_hash=obj.get("artifact_hash"), use=obj.get("use"),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object; ``use`` appears only for grants."""
        result: dict[str, Any] = {
            "method": self.method, "approval_id": self.approval_id, "kid": self.kid,
            "issued_by": self.issued_by, "artifact_hash": self.artifact_hash,
        }  # fmt: skip
        if self.use is not None:
            result["use"] = self.use
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptBody:
    """A receipt body of SPEC §7 (v1, with the v2 fields of §11): the one place its fields are listed.

    Build it with every field and sign it with :func:`sign_receipt`; the ledger position
    (``seq``, ``prev``) is known only when the receipt is appended: build with any values and
    call :meth:`at` then.

    Attributes:
        exec_id: 32 hex, new for every attempt (replays included).
        seq: 0-based ledger index.
        prev: ``receipt_hash`` of ``seq - 1``; ``None`` for ``seq`` 0.
        log_id: The server_id.
        tenant_id: The caller's tenant.
        action: The tool name (``<upstream>.<tool>`` for upstream tools).
        action_hash: SPEC §3, 64 hex.
        nonce: The call's nonce (the server's, when ``nonce_source`` is ``server``).
        run_id: SPEC §7.
        status: The outcome.
        error_code: The stable error code, or ``None``.
        approval: The approval object (always an object).
        result_hash: SHA-256 hex of JCS(result), or ``None``.
        original_exec_id: For replays and operator decisions: the call they answer for.
        policy_hash: The frozen policy hash (SPEC §5).
        started_at: RFC 3339 UTC, ms (:func:`openexec_mcp.core.clock.format_timestamp`).
        finished_at: RFC 3339 UTC, ms.
        server: This server's name and version.
        nonce_source: ``client``, or ``server`` when the gate made the nonce (SPEC §11).
            ``None`` only for bodies written before SPEC v2 (see :meth:`from_json`).
        upstream: The upstream of a forwarded call, else ``None`` (then absent from the JSON).
    """

    v: Literal[1] = 1
    exec_id: str
    seq: int
    prev: str | None
    log_id: str
    tenant_id: str
    action: str
    action_hash: str
    nonce: str
    run_id: str
    status: ReceiptStatus
    error_code: str | None
    approval: ReceiptApproval
    result_hash: str | None
    original_exec_id: str | None
    policy_hash: str
    started_at: str
    finished_at: str
    server: ServerInfo
    nonce_source: NonceSource | None = "client"
    upstream: ReceiptUpstream | None = None

    def __post_init__(self) -> None:
        if self.v != 1:
            raise ValueError("receipt body version must be 1")
        if self.status not in RECEIPT_STATUSES:
            raise ValueError(f"unknown receipt status {self.status!r}")
        if self.nonce_source not in (*get_args(NonceSource), None):
            raise ValueError(f"unknown nonce_source {self.nonce_source!r}")

    def at(self, seq: int, prev: str | None) -> ReceiptBody:
        """Return this body at ledger position ``seq`` after the receipt whose hash is ``prev``."""
        return dataclasses.replace(self, seq=seq, prev=prev)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object that is signed (SPEC §7): ``upstream`` only when set."""
        body: dict[str, Any] = {
            "v": self.v, "exec_id": self.exec_id, "seq": self.seq, "prev": self.prev, "log_id": self.log_id,
            "tenant_id": self.tenant_id, "action": self.action, "action_hash": self.action_hash,
            "nonce": self.nonce, "run_id": self.run_id, "status": self.status, "error_code": self.error_code,
            "approval": self.approval.to_json(), "result_hash": self.result_hash,
            "original_exec_id": self.original_exec_id, "policy_hash": self.policy_hash,
            "started_at": self.started_at, "finished_at": self.finished_at, "server": self.server.to_json(),
        }  # fmt: skip
        if self.nonce_source is not None:
            body["nonce_source"] = self.nonce_source
        if self.upstream is not None:
            body["upstream"] = self.upstream.to_json()
        return body

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ReceiptBody:
        """Build from a body's JSON object (trusted: built by the gate, or read from a verified receipt).

        Raises:
            ValueError: The fields are not those of SPEC §7, or a value has the wrong kind.
        """
        if not has_receipt_body_fields(obj):
            difference = (RECEIPT_BODY_FIELDS ^ obj.keys()) - OPTIONAL_BODY_FIELDS
            raise ValueError(f"receipt body fields differ from SPEC §7: {sorted(difference)}")
        try:
            server, upstream = obj["server"], obj.get("upstream")
            return cls(
                v=obj["v"], exec_id=obj["exec_id"], seq=obj["seq"], prev=obj["prev"], log_id=obj["log_id"],
                tenant_id=obj["tenant_id"], action=obj["action"], action_hash=obj["action_hash"],
                nonce=obj["nonce"], run_id=obj["run_id"], status=obj["status"], error_code=obj["error_code"],
                approval=ReceiptApproval.from_json(obj["approval"]), result_hash=obj["result_hash"],
                original_exec_id=obj["original_exec_id"], policy_hash=obj["policy_hash"],
                started_at=obj["started_at"], finished_at=obj["finished_at"],
                server=ServerInfo(server["name"], server["version"]), nonce_source=obj.get("nonce_source"),
                upstream=None if upstream is None else ReceiptUpstream(
                    upstream["name"], ServerInfo(upstream["server"]["name"], upstream["server"]["version"])
                ),
            )  # fmt: skip
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"receipt body has a malformed member: {exc}") from None


def kid_for_public_key(public_raw: bytes) -> str:
    """Return the server key id: the first 16 hex characters of SHA-256(raw 32-byte key) (SPEC §7)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ServerKey:
    """The server's Ed25519 signing key and its derived identifiers.

    Attributes:
        private_key: The Ed25519 private key (never leaves the server).
        public_raw: The raw 32-byte public key.
        kid: :func:`kid_for_public_key` of ``public_raw``.
    """

    private_key: Ed25519PrivateKey
    public_raw: bytes
    kid: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> ServerKey:
        """Derive ``public_raw`` and ``kid`` from an Ed25519 private key."""
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(private_key=private_key, public_raw=raw, kid=kid_for_public_key(raw))

    def public_key(self) -> Ed25519PublicKey:
        """Return the public key object."""
        return self.private_key.public_key()


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A signed receipt as stored in the ledger.

    Attributes:
        body: The receipt body that was signed.
        envelope: The DSSE envelope (a JSON object).
        canonical: ``JCS(envelope)``, the exact bytes the ledger stores and hashes.
        receipt_hash: 64 lowercase hex, ``SHA-256(0x00 || canonical)``.
    """

    body: Mapping[str, Any]
    envelope: dict[str, Any]
    canonical: bytes
    receipt_hash: str


def receipt_hash(envelope: Mapping[str, Any]) -> str:
    """Return the receipt_hash of a DSSE envelope: RFC 6962 leaf hash of its JCS bytes, hex.

    Raises:
        MalformedInputError: ``envelope`` is not canonicalizable JSON.
    """
    return hashlib.sha256(b"\x00" + canonicalize(dict(envelope))).hexdigest()


def sign_receipt(body: ReceiptBody | Mapping[str, Any], key: ServerKey) -> SignedReceipt:
    """Sign a receipt body into a DSSE envelope (SPEC §7).

    Args:
        body: The receipt body (trusted: built by the gate), preferably typed. A mapping must have
            the fields of SPEC §7 (checked, so a programming error never yields a malformed
            receipt) and is signed as it is.
        key: The server key.

    Returns:
        The signed receipt with its canonical bytes and receipt_hash; ``body`` is its JSON object.

    Raises:
        ValueError: ``body`` does not have the SPEC §7 fields or has an unknown status.
    """
    if isinstance(body, ReceiptBody):
        json_body = body.to_json()
    else:
        if not has_receipt_body_fields(body):
            difference = (RECEIPT_BODY_FIELDS ^ body.keys()) - OPTIONAL_BODY_FIELDS
            raise ValueError(f"receipt body fields differ from SPEC §7: {sorted(difference)}")
        if body["status"] not in RECEIPT_STATUSES:
            raise ValueError(f"unknown receipt status {body['status']!r}")
        json_body = dict(body)
    payload = canonicalize(json_body)
    signature = key.private_key.sign(pae(RECEIPT_PAYLOAD_TYPE, payload))
    envelope: dict[str, Any] = {
        "payloadType": RECEIPT_PAYLOAD_TYPE,
        "payload": b64encode(payload),
        "signatures": [{"keyid": key.kid, "sig": b64encode(signature)}],
    }
    canonical = canonicalize(envelope)
    return SignedReceipt(json_body, envelope, canonical, hashlib.sha256(b"\x00" + canonical).hexdigest())


def verify_receipt(envelope: Any, public_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Verify a DSSE receipt envelope offline and return its body.

    Steps, first failure wins:
      1. the envelope is an object with ``payloadType``, ``payload`` and ``signatures``;
      2. ``payloadType`` is :data:`RECEIPT_PAYLOAD_TYPE`;
      3. one signature's ``keyid`` names a key in ``public_keys`` and its Ed25519 signature over
         ``PAE(payloadType, payload)`` verifies;
      4. the payload is a JSON object with the SPEC §7 body fields (the v2 ``nonce_source`` and
         ``upstream`` optional), ``v == 1``, and it is in canonical (RFC 8785) form.

    Args:
        envelope: The untrusted envelope (parsed JSON).
        public_keys: Trusted server public keys by ``kid``.

    Returns:
        The receipt body (a dict).

    Raises:
        VerificationError: ``reason`` is one of ``malformed``, ``wrong_payload_type``,
            ``unknown_key``, ``bad_signature``, ``bad_body``; ``seq`` is set when the body was read.
    """
    # (1): the envelope's shape.
    env = json_object(envelope)
    if env is None or set(env) != {"payloadType", "payload", "signatures"}:
        raise VerificationError("malformed", "receipt must be a DSSE envelope {payloadType, payload, signatures}")
    raw_signatures: Any = env["signatures"]
    signatures = (
        [json_object(item) for item in cast("list[Any]", raw_signatures)] if isinstance(raw_signatures, list) else []
    )
    if not signatures or not isinstance(env["payload"], str):
        raise VerificationError("malformed", "receipt envelope needs a base64 payload and a signature list")
    try:
        payload = b64decode_strict(env["payload"])
    except MalformedInputError:
        raise VerificationError("malformed", "receipt payload is not valid base64") from None
    # (2): the payload type, which is also bound into the signed bytes.
    if env["payloadType"] != RECEIPT_PAYLOAD_TYPE:
        raise VerificationError("wrong_payload_type", f"payloadType must be {RECEIPT_PAYLOAD_TYPE}")
    # (3): a signature by a trusted key.
    signed = pae(RECEIPT_PAYLOAD_TYPE, payload)
    known = False
    for entry in signatures:
        keyid, sig = (entry.get("keyid"), entry.get("sig")) if entry is not None else (None, None)
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise VerificationError("malformed", "each signature must be {keyid, sig} strings")
        public_key = public_keys.get(keyid)
        if public_key is None:
            continue
        known = True
        try:
            public_key.verify(b64decode_strict(sig), signed)
        except (InvalidSignature, MalformedInputError):
            continue
        break
    else:
        if not known:
            raise VerificationError("unknown_key", "no signature by a trusted server key")
        raise VerificationError("bad_signature", "receipt signature does not verify")
    # (4): the body.
    try:
        parsed, canonical = loads_canonical(payload)
    except MalformedInputError:
        raise VerificationError("bad_body", "receipt payload is not JSON") from None
    body = json_object(parsed)
    if body is None or not has_receipt_body_fields(body) or body.get("v") != 1:
        raise VerificationError("bad_body", "receipt body does not have the SPEC §7 v1 fields")
    seq = body["seq"] if isinstance(body["seq"], int) else None
    if not canonical:
        raise VerificationError("bad_body", "receipt payload is not RFC 8785 canonical", seq=seq)
    return body


def parse_server_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Parse trusted server public keys as an auditor holds them, keyed by ``kid``.

    Args:
        text: The ``GET /keys`` JSON document, a PEM ``PUBLIC KEY``, or base64 of the raw 32 bytes.

    Returns:
        ``{kid: public key}``; ``kid`` is recomputed from the key bytes, never taken on trust.

    Raises:
        MalformedInputError: ``text`` is none of the accepted forms.
    """
    stripped = text.strip()
    raws: list[bytes] = []
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
            raws = [b64decode_strict(entry["public_key"]) for entry in document["keys"]]
        except (ValueError, KeyError, TypeError):
            raise MalformedInputError('keys document must be {"keys": [{"public_key": base64}]}') from None
    elif stripped.startswith("-----BEGIN"):
        try:
            key = load_pem_public_key(stripped.encode("ascii"))
        except ValueError:
            raise MalformedInputError("not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise MalformedInputError("PEM key is not Ed25519")
        raws = [key.public_bytes(Encoding.Raw, PublicFormat.Raw)]
    else:
        raws = [b64decode_strict(stripped)]
    if not raws or any(len(raw) != 32 for raw in raws):
        raise MalformedInputError("an Ed25519 public key is 32 raw bytes")
    return {kid_for_public_key(raw): Ed25519PublicKey.from_public_bytes(raw) for raw in raws}
