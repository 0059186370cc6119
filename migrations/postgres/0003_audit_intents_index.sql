-- A run's in-flight intents (outcome 'intent') are found and replaced batch by batch: a partial
-- index holds just those (a handful at any time), so replacing them costs the same in the
-- millionth batch as in the first, and writing the other audit rows costs nothing more.
CREATE INDEX IF NOT EXISTS cleanup_audit_intents ON cleanup_audit (run_id) WHERE outcome = 'intent';
