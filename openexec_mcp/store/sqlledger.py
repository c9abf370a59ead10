"""The ledger, its RFC 9162 tree and its checkpoints in shared SQL (SPEC §7).

The receipt is built inside the append transaction by a
:data:`~openexec_mcp.store.base.ReceiptFactory` receiving ``(seq, prev)``, with the head read
under the ledger lock, so the hash chain stays linear whatever the concurrency; the same
transaction stores the tree nodes the append completes (:mod:`openexec_mcp.core.tlog.subtrees`:
O(log n) at worst, one on average), so any root or proof is read from O(log n) stored hashes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from openexec_mcp.core.tlog.merkle import EMPTY_ROOT
from openexec_mcp.core.tlog.subtrees import (
    Position,
    append_nodes,
    append_sibling_positions,
    backfill,
    range_hash,
    ranges_positions,
)
from openexec_mcp.store.base import LedgerEntry, ReceiptFactory, StoredCheckpoint
from openexec_mcp.store.sqlcore import Connection, SQLCore, ledger_size

__all__ = ["LedgerSQL"]

_LEDGER_COLUMNS = "seq, exec_id, receipt_hash, envelope, tenant_id, run_id, action, status"
_CHECKPOINT = "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1"
_PAGE = 1000


class LedgerSQL(SQLCore):
    """:class:`~openexec_mcp.store.base.LedgerLog` and :class:`~openexec_mcp.store.base.CheckpointLog`."""

    # -- ledger (SPEC §7) -----------------------------------------------------------------------

    def append(self, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str) -> LedgerEntry:
        """See :meth:`Store.append`."""
        return self._run(
            lambda conn: self._append(conn, make_receipt, tenant_id=tenant_id, run_id=run_id, action=action),
            write=True,
        )

    def ledger_size(self) -> int:
        """See :meth:`Store.ledger_size`."""
        return self._run(ledger_size, write=False)

    def get_entry(self, exec_id: str) -> LedgerEntry | None:
        """See :meth:`Store.get_entry`."""
        row = self._read_one(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE exec_id = ?", (exec_id,))
        return None if row is None else LedgerEntry(*row)

    def get_entry_at(self, seq: int) -> LedgerEntry | None:
        """See :meth:`Store.get_entry_at`."""
        row = self._read_one(f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq = ?", (seq,))
        return None if row is None else LedgerEntry(*row)

    def iter_entries(
        self, start_seq: int = 0, *, run_id: str | None = None, tenant_id: str | None = None
    ) -> Iterator[LedgerEntry]:
        """See :meth:`Store.iter_entries`."""
        filters = {"tenant_id": tenant_id, "run_id": run_id}
        params: list[object] = [value for value in filters.values() if value is not None]
        where = "".join(f" AND {column} = ?" for column, value in filters.items() if value is not None)
        query = f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE seq >= ?{where} ORDER BY seq LIMIT {_PAGE}"
        seq = start_seq
        while rows := self._read_all(query, [seq, *params]):
            yield from (LedgerEntry(*row) for row in rows)
            seq = int(rows[-1][0]) + 1

    # -- tree and checkpoints -------------------------------------------------------------------

    def subtree_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """See :meth:`Store.subtree_hashes`."""

        def read(conn: Connection) -> tuple[set[Position], dict[Position, bytes]]:
            needed = ranges_positions(ranges, ledger_size(conn))
            return needed, self._read_positions(conn, needed)

        needed, found = self._run(read, write=False)
        if len(found) < len(needed):
            # Rows were written around the store since it opened (e.g. a bulk import): complete the tree.
            self._run(self._backfill, write=True)
            needed, found = self._run(read, write=False)
        return [range_hash(start, end, found) for start, end in ranges]

    def tree_root(self, size: int) -> bytes:
        """See :meth:`Store.tree_root`."""
        return EMPTY_ROOT if size == 0 else self.subtree_hashes([(0, size)])[0]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """See :meth:`Store.latest_checkpoint`."""
        row = self._read_one(_CHECKPOINT)
        return None if row is None else StoredCheckpoint(int(row[0]), str(row[1]), str(row[2]))

    def save_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """See :meth:`Store.save_checkpoint`.

        Replicas may save concurrently: each insert is refused when a checkpoint at least as large
        is visible, so the largest stored size never goes down and is what every caller gets.
        """

        def work(conn: Connection) -> StoredCheckpoint:
            self._exec(
                conn,
                "INSERT INTO checkpoints (size, root, note) SELECT ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM checkpoints WHERE size >= ?) ON CONFLICT (size) DO NOTHING",
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.size),
            )
            row = self._one(conn, _CHECKPOINT)
            return StoredCheckpoint(int(row[0]), str(row[1]), str(row[2]))

        return self._run(work, write=True)

    def _append(
        self, conn: Connection, make_receipt: ReceiptFactory, *, tenant_id: str, run_id: str, action: str
    ) -> LedgerEntry:
        self._lock_ledger(conn)  # the head is read only once the lock is ours
        head = self._one(conn, "SELECT seq, receipt_hash FROM ledger ORDER BY seq DESC LIMIT 1")
        seq, prev = (0, None) if head is None else (int(head[0]) + 1, str(head[1]))
        receipt = make_receipt(seq, prev)
        entry = LedgerEntry(
            seq,
            str(receipt.body["exec_id"]),
            receipt.receipt_hash,
            receipt.canonical.decode("utf-8"),
            tenant_id,
            run_id,
            action,
            str(receipt.body["status"]),
        )
        self._exec(
            conn,
            f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.seq, entry.exec_id, entry.receipt_hash, entry.envelope, tenant_id, run_id, action, entry.status),
        )
        positions = append_sibling_positions(seq)
        siblings = self._read_positions(conn, positions) if positions else {}
        if len(siblings) < len(positions):
            self._backfill(conn, seq)  # rows were written around the store: complete the tree below seq first
            siblings = self._read_positions(conn, positions)
        nodes = append_nodes(seq, bytes.fromhex(entry.receipt_hash), bytes.fromhex(prev) if prev else None, siblings)
        self._insert_nodes(conn, nodes)
        return entry

    def _read_positions(self, conn: Connection, positions: Iterable[Position]) -> dict[Position, bytes]:
        """Read the hashes at ``positions`` (level 0: the ledger; others: merkle_nodes); absent ones are left out."""
        wanted = sorted(set(positions))
        found: dict[Position, bytes] = {}
        leaves = [idx for level, idx in wanted if level == 0]
        for start in range(0, len(leaves), 500):
            chunk = leaves[start : start + 500]
            rows = self._all(
                conn, f"SELECT seq, receipt_hash FROM ledger WHERE seq IN ({', '.join('?' * len(chunk))})", chunk
            )
            found.update(((0, int(seq)), bytes.fromhex(str(text))) for seq, text in rows)
        inner = [position for position in wanted if position[0] > 0]
        for start in range(0, len(inner), 200):  # an OR chain deeper than SQLite's expression limit (1000) fails
            chunk = inner[start : start + 200]
            # OR of primary-key equalities: each is an index lookup on SQLite and PostgreSQL, where
            # "(level, idx) IN (VALUES ...)" made SQLite scan the whole table (O(n) per append).
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            rows = self._all(
                conn,
                "SELECT level, idx, hash FROM merkle_nodes WHERE " + where,
                [value for position in chunk for value in position],
            )
            found.update(((int(level), int(idx)), bytes(value)) for level, idx, value in rows)
        return found

    def _insert_nodes(self, conn: Connection, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        if nodes:
            conn.cursor().executemany(
                self._sql("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"), nodes
            )

    def _backfill(self, conn: Connection, size: int | None = None) -> int:
        """Store every tree node missing for the first ``size`` leaves (default: the whole ledger)."""
        self._lock_ledger(conn)

        def stored_count(level: int) -> int:
            count, end = self._one(
                conn, "SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM merkle_nodes WHERE level = ?", (level,)
            )
            if count == end:
                return int(count)
            gap = self._one(
                conn,
                "SELECT COALESCE(MIN(idx) + 1, 0) FROM merkle_nodes m WHERE level = ? AND NOT EXISTS"
                " (SELECT 1 FROM merkle_nodes n WHERE n.level = m.level AND n.idx = m.idx + 1)"
                " AND EXISTS (SELECT 1 FROM merkle_nodes z WHERE z.level = ? AND z.idx = 0)",
                (level, level),
            )
            return int(gap[0]) if gap is not None else 0

        def read_level(level: int, lo: int, hi: int) -> list[bytes]:
            if level == 0:
                rows = self._all(
                    conn, "SELECT receipt_hash FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq", (lo, hi)
                )
                return [bytes.fromhex(str(text)) for (text,) in rows]
            rows = self._all(
                conn,
                "SELECT hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (level, lo, hi),
            )
            return [bytes(value) for (value,) in rows]

        def write_level(level: int, lo: int, hashes: Iterable[bytes]) -> None:
            self._insert_nodes(conn, [(level, lo + offset, value) for offset, value in enumerate(hashes)])

        return backfill(ledger_size(conn) if size is None else size, stored_count, read_level, write_level)
