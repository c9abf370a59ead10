-- Version 2 (issue 9): inbox artifacts and runs are looked up per tenant; consumed approvals are
-- kept until their artifact's expiry (the columns are added by the runner before this script).
UPDATE approval_artifacts SET tenant_id = artifact::jsonb ->> 'tenant_id'
    WHERE tenant_id IS NULL AND jsonb_typeof(artifact::jsonb) = 'object';
CREATE INDEX IF NOT EXISTS approval_artifacts_tenant ON approval_artifacts (tenant_id, action_hash, submitted_at);
CREATE INDEX IF NOT EXISTS approval_requests_tenant ON approval_requests (tenant_id, created_at, request_id);
CREATE INDEX IF NOT EXISTS approval_requests_created ON approval_requests (created_at, request_id);
CREATE INDEX IF NOT EXISTS consumed_approvals_keep_until ON consumed_approvals (keep_until COLLATE "C");
CREATE INDEX IF NOT EXISTS ledger_tenant_run ON ledger (tenant_id, run_id, seq);
