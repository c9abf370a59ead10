"""The receipt body of SPEC §7 (v1, with the v2 fields of §11) as types: the one list of its fields.

:class:`ReceiptBody` is what the gate signs (:func:`openexec_mcp.core.receipt.sign_receipt`);
:class:`ReceiptApproval` is its ``approval`` object, :class:`ServerInfo` its ``server`` and
:class:`ReceiptUpstream` its ``upstream``. Verifiers check a received body's members against
:data:`RECEIPT_BODY_FIELDS` and :data:`RECEIPT_BODY_OPTIONAL_FIELDS` with :func:`has_receipt_body_fields`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

__all__ = [
    "RECEIPT_BODY_FIELDS",
    "RECEIPT_BODY_OPTIONAL_FIELDS",
    "RECEIPT_STATUSES",
    "ApprovalMethod",
    "NonceSource",
    "ReceiptApproval",
    "ReceiptBody",
    "ReceiptStatus",
    "ReceiptUpstream",
    "ServerInfo",
    "has_receipt_body_fields",
]

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

RECEIPT_BODY_OPTIONAL_FIELDS: Final = frozenset({"nonce_source", "upstream"})
"""Fields of SPEC v2 (§11): ``nonce_source`` on every body written since, ``upstream`` on calls of
an upstream tool. A body without ``nonce_source`` is a receipt written before v2 and stays valid."""


def has_receipt_body_fields(body: Mapping[str, Any]) -> bool:
    """Return whether ``body`` has every v1 field and nothing but the optional v2 ones."""
    keys = body.keys()
    return keys >= RECEIPT_BODY_FIELDS and keys <= RECEIPT_BODY_FIELDS | RECEIPT_BODY_OPTIONAL_FIELDS


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
            difference = (RECEIPT_BODY_FIELDS ^ obj.keys()) - RECEIPT_BODY_OPTIONAL_FIELDS
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
