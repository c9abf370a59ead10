-- Version 4 (issue 14, SPEC §13): signed grants, their use counts and revocations.
CREATE TABLE IF NOT EXISTS grants (
    grant_id     TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    artifact     TEXT NOT NULL,
    max_uses     INTEGER NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    expires_at   TEXT NOT NULL,
    keep_until   TEXT,
    submitted_at TEXT NOT NULL,
    revoked_at   TEXT
);
CREATE INDEX IF NOT EXISTS grants_tenant ON grants (tenant_id, expires_at);
CREATE INDEX IF NOT EXISTS grants_keep_until ON grants (keep_until);
