-- sweep's own tables (SPEC §4.2). Timestamps are RFC 3339 text in UTC, booleans 0/1.
CREATE TABLE IF NOT EXISTS cleanup_runs (
    id              TEXT PRIMARY KEY,
    command         TEXT NOT NULL,
    dry_run         INTEGER NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL,
    candidates      INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    retained        INTEGER NOT NULL DEFAULT 0,
    bytes_reclaimed INTEGER NOT NULL DEFAULT 0,
    details         TEXT
);
CREATE INDEX IF NOT EXISTS cleanup_runs_command_started ON cleanup_runs (command, started_at);

CREATE TABLE IF NOT EXISTS cleanup_audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL REFERENCES cleanup_runs (id),
    policy          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    target          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    bytes           INTEGER,
    outcome         TEXT NOT NULL,
    error           TEXT,
    backup_location TEXT,
    row_snapshot    TEXT,
    at              TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cleanup_audit_run ON cleanup_audit (run_id);

CREATE TABLE IF NOT EXISTS cleanup_policies (
    data_type      TEXT PRIMARY KEY,
    retention_days INTEGER NOT NULL CHECK (retention_days >= 0),
    enabled        INTEGER NOT NULL DEFAULT 1,
    pattern        TEXT NOT NULL,
    description    TEXT NOT NULL,
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now'))
);

INSERT OR IGNORE INTO cleanup_policies (data_type, retention_days, enabled, pattern, description) VALUES
    ('pipeline_operations', 30, 1, 'operation_*.json', 'Execution records and progress files'),
    ('dbt_logs', 7, 1, 'dbt/logs/**/*.log', 'Transformation logs and artifacts'),
    ('failed_operations', 14, 1, 'operation_*.json', 'Failed pipeline operations (kept longer for debugging)'),
    ('completed_operations', 90, 1, 'operation_*.json', 'Successfully completed operations'),
    ('system_logs', 30, 1, 'logs/**/*.log', 'Application and system logs'),
    ('temp_files', 1, 1, 'tmp/**/*', 'Temporary files and cache');
