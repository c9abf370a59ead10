"""Storage backends behind one protocol: the nonce table and the append-only ledger.

``open_store(url)`` picks the backend from the URL scheme (SPEC §9): ``sqlite:///relative/path``,
``sqlite:////absolute/path`` or ``postgresql://...``.
"""

from openexec_mcp.store.base import LedgerEntry, NonceClaim, Outcome, ReceiptFactory, Store, open_store

__all__ = ["LedgerEntry", "NonceClaim", "Outcome", "ReceiptFactory", "Store", "open_store"]
