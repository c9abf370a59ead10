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
    owner         TEXT NOT NULL,
    request       TEXT,
    PRIMARY KEY (tenant_id, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_started ON nonces (owner) WHERE state = 'started';
CREATE INDEX IF NOT EXISTS nonces_finished_at ON nonces (finished_at COLLATE "C");
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
    expires_unix   DOUBLE PRECISION NOT NULL,
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
    seq          BIGINT PRIMARY KEY CHECK (seq >= 0),
    exec_id      TEXT NOT NULL UNIQUE,
    receipt_hash TEXT NOT NULL,
    envelope     TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    action       TEXT NOT NULL,
    status       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_run ON ledger (run_id, seq);
CREATE OR REPLACE FUNCTION openexec_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% refused)', TG_OP;
END $$;
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level SMALLINT NOT NULL CHECK (level >= 1),
    idx   BIGINT NOT NULL CHECK (idx >= 0),
    hash  BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT PRIMARY KEY CHECK (size >= 0),
    root TEXT NOT NULL,
    note TEXT NOT NULL
);
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass AND tgname = 'ledger_append_only') THEN
        CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
            FOR EACH ROW EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'ledger'::regclass AND tgname = 'ledger_no_truncate') THEN
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'merkle_nodes'::regclass AND tgname = 'merkle_nodes_append_only') THEN
        CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON merkle_nodes
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'checkpoints'::regclass AND tgname = 'checkpoints_append_only') THEN
        CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON checkpoints
            FOR EACH STATEMENT EXECUTE FUNCTION openexec_ledger_append_only();
    END IF;
END $$;
