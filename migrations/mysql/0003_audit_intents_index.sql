-- A run's in-flight intents are found and replaced batch by batch. MySQL has no partial index:
-- (run_id, outcome) finds a run's intents without reading its other audit rows.
CREATE INDEX cleanup_audit_run_outcome ON cleanup_audit (run_id, outcome);
