-- The audit is written only by sweep, after the run row it belongs to. Its foreign key to
-- cleanup_runs ran a trigger and a lookup for every audit row (two per deleted attachment),
-- a third of the cost of writing the audit: it goes. run_id stays indexed.
ALTER TABLE cleanup_audit DROP CONSTRAINT IF EXISTS cleanup_audit_run_id_fkey;
