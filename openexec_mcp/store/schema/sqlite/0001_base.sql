-- Version 1: the schema of every release before schema_version existed (each statement is a no-op
-- on such a database). The ledger, its tree nodes and its checkpoints are append-only.
CREATE TABLE IF NOT EXISTS nonces (
    tenant_id     TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    action        TEXT NOT NULL,
    action_hash   TEXT NOT NULL,
    exec_id       TEXT NOT NULL UNIQUE,
    run_id        TEXT NOT NULL,
    approval      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('started', 'finished', 'indeterminate')),
    status        TEXT,
    result        TEXT,
    result_hash   TEXT,
    error_code    TEXT,
    error_message TEXT,
    finished_at   TEXT,
    request       TEXT,
    owner         TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_state ON nonces (state);
CREATE INDEX IF NOT EXISTS nonces_finished_at ON nonces (finished_at);
CREATE TABLE IF NOT EXISTS consumed_approvals (
    approval_id TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    exec_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS approval_requests (
    request_id     TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    action_hash    TEXT NOT NULL,
    action_request TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    expires_unix   REAL NOT NULL,
    UNIQUE (tenant_id, action_hash)
);
CREATE TABLE IF NOT EXISTS approval_artifacts (
    action_hash  TEXT NOT NULL,
    approval_id  TEXT NOT NULL,
    artifact     TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    PRIMARY KEY (action_hash, approval_id)
);
CREATE TABLE IF NOT EXISTS ledger (
    seq          INTEGER PRIMARY KEY,
    exec_id      TEXT NOT NULL UNIQUE,
    receipt_hash TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run_id, seq);
CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level INTEGER NOT NULL CHECK (level >= 1),
    idx   INTEGER NOT NULL CHECK (idx >= 0),
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
