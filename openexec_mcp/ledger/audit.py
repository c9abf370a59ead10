"""A full ledger audit at the speed of Ed25519 verification (SPEC §7, ``ledger verify``).

:func:`audit_entries` feeds stored rows to a :class:`~openexec_mcp.core.audit.LedgerAuditor`.
With ``workers > 0`` the signatures are verified in batches on worker threads (``cryptography``
releases the GIL while it verifies) while this thread parses, hashes and links the next rows; the
first failure is still the one of the smallest ``seq``, exactly as a one-row-at-a-time audit
would report it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from openexec_mcp.core.audit import LedgerAuditor, SignatureJob
from openexec_mcp.errors import VerificationError
from openexec_mcp.store.base import LedgerEntry

__all__ = ["AuditReport", "audit_entries"]

BATCH_SIZE: Final = 512
"""Signatures per worker task."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of a clean audit.

    Attributes:
        size: Receipts verified.
        head: The receipt_hash of the last one (``None`` for an empty ledger).
        root: The RFC 9162 root of all of them, recomputed from the receipts.
        roots: The root at each size asked for in ``root_sizes`` that the ledger reached.
    """

    size: int
    head: str | None
    root: bytes
    roots: dict[int, bytes] = field(default_factory=dict[int, bytes])


def _verify_batch(jobs: list[SignatureJob]) -> VerificationError | None:
    for job in jobs:
        try:
            job.verify()
        except VerificationError as exc:
            return exc
    return None


def audit_entries(
    entries: Iterable[LedgerEntry],
    auditor: LedgerAuditor,
    *,
    root_sizes: Collection[int] = (),
    workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Audit ``entries`` (in ``seq`` order, from 0) and return the report.

    Args:
        entries: The stored rows.
        auditor: A fresh auditor holding the trusted keys.
        root_sizes: Tree sizes whose root to report (e.g. the checkpoints to compare with).
        workers: Threads verifying signatures; 0 verifies each row in line.
        progress: Called with the number of rows checked so far, every few hundred rows.

    Raises:
        VerificationError: The first failure, with its ``seq``.
    """
    roots: dict[int, bytes] = {}
    wanted = set(root_sizes)
    if 0 in wanted:
        roots[0] = auditor.frontier.root()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openexec-audit") if workers > 0 else None
    in_flight: deque[Future[VerificationError | None]] = deque()
    batch: list[SignatureJob] = []

    def settle(limit: int) -> None:
        # Oldest first, so the first failure found is the one of the smallest seq.
        while len(in_flight) > limit:
            failure = in_flight.popleft().result()
            if failure is not None:
                raise failure

    try:
        for entry in entries:
            try:
                _body, job = auditor.check(entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope)
            except VerificationError:
                settle(0)
                if (failure := _verify_batch(batch)) is not None:
                    raise failure from None
                raise
            if job is not None:
                if pool is None:
                    job.verify()
                else:
                    batch.append(job)
                    if len(batch) >= BATCH_SIZE:
                        in_flight.append(pool.submit(_verify_batch, batch))
                        batch = []
                        settle(2 * workers)
            if auditor.size in wanted:
                roots[auditor.size] = auditor.frontier.root()
            if progress is not None and auditor.size % 256 == 0:
                progress(auditor.size)
        settle(0)
        if (failure := _verify_batch(batch)) is not None:
            raise failure
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if progress is not None:
        progress(auditor.size)
    return AuditReport(auditor.size, auditor.head, auditor.frontier.root(), roots)
