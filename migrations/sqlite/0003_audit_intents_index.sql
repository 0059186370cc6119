-- A run's in-flight intents are found and replaced batch by batch: a partial index holds just
-- those (see the PostgreSQL migration).
CREATE INDEX IF NOT EXISTS cleanup_audit_intents ON cleanup_audit (run_id) WHERE outcome = 'intent';
