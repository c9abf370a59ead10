"""Storage behind small role protocols: the nonce table, the ledger, the approval inbox, checkpoints.

``open_store(url)`` picks the backend from the URL scheme (SPEC §9): ``sqlite:///relative/path``,
``sqlite:////absolute/path`` or ``postgresql://...``. Both backends share one SQL implementation
(:mod:`openexec_mcp.store.sql`) and one versioned schema (:mod:`openexec_mcp.store.schema`); each
adds only what its database does differently. The backends are imported on demand, so this
package imports none of them (and no driver) until a store is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from openexec_mcp.core.clock import utc_now
from openexec_mcp.errors import ConfigError
from openexec_mcp.store.base import LedgerEntry, NonceClaim, Outcome, ReceiptFactory, Store

__all__ = ["LedgerEntry", "NonceClaim", "Outcome", "ReceiptFactory", "Store", "open_store"]


def open_store(url: str, *, sqlite_synchronous: str = "full", clock: Callable[[], datetime] = utc_now) -> Store:
    """Open the backend named by ``url`` (SPEC §9), migrating its schema to the current version.

    Args:
        url: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``postgresql://...``.
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` (``full`` or ``normal``).
        clock: Returns now (aware UTC); the only time source the store reads.

    Raises:
        ConfigError: The URL scheme is not supported, or its backend's driver is not installed.
        StoreUnavailableError: The database cannot be opened.
    """
    if url.startswith("sqlite:///"):
        from openexec_mcp.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url.removeprefix("sqlite:///")), synchronous=sqlite_synchronous, clock=clock)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from openexec_mcp.store.postgres import PostgresStore
        except ImportError:
            raise ConfigError(
                "storage.url: the PostgreSQL backend needs `pip install openexec-mcp[postgres]`"
            ) from None
        return PostgresStore(url, clock=clock)
    raise ConfigError("storage.url must start with sqlite:/// or postgresql://")
