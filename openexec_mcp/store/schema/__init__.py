"""The versioned schema of both backends, and the steps that bring any older database up to date.

Each version is a list of steps: a per-dialect SQL script (``<dialect>/<NNNN>_<name>.sql``) or a
column to add when the table lacks it (read from the catalogue, never guessed from an error
message). The runner in :mod:`openexec_mcp.store.sql` applies the versions a database lacks,
inside one transaction that holds the schema lock, and records each in ``schema_version``. A
database made before ``schema_version`` existed is version 0: version 1 is written so that it is
a no-op on such a database, apart from the columns those releases lacked.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

__all__ = ["LATEST", "MIGRATIONS", "AddColumn", "Migration", "Script", "script_text"]


@dataclass(frozen=True, slots=True)
class Script:
    """Run the dialect's ``<name>.sql``."""

    name: str


@dataclass(frozen=True, slots=True)
class AddColumn:
    """Add ``column`` (with its SQL ``declaration``) to ``table`` unless the table has it."""

    table: str
    column: str
    declaration: str


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: what it is for, and its steps in order."""

    version: int
    description: str
    steps: tuple[Script | AddColumn, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "nonces, approvals, ledger, tree nodes, checkpoints",
        (
            Script("0001_base"),
            AddColumn("nonces", "request", "TEXT"),
            AddColumn("nonces", "owner", "TEXT NOT NULL DEFAULT ''"),
        ),
    ),
    Migration(
        2,
        "tenant-scoped inbox and runs; consumed approvals kept until expiry",
        (
            AddColumn("approval_artifacts", "tenant_id", "TEXT"),
            AddColumn("consumed_approvals", "keep_until", "TEXT"),
            Script("0002_tenant_scoping"),
        ),
    ),
    Migration(
        3,
        "nonce_source and upstream of each call, for the receipts written after it (SPEC §11)",
        (AddColumn("nonces", "extra", "TEXT"),),
    ),
    Migration(
        4,
        "signed grants with their use counts and revocations (SPEC §13)",
        (Script("0004_grants"),),
    ),
)
LATEST = MIGRATIONS[-1].version


def script_text(dialect: str, name: str) -> str:
    """Return the SQL text of ``<dialect>/<name>.sql`` (shipped in the package)."""
    return files(__name__).joinpath(dialect, f"{name}.sql").read_text(encoding="utf-8")
