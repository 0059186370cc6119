-- sweep's own tables (SPEC §4.2). Nothing else in the database is created or changed.
CREATE TABLE IF NOT EXISTS cleanup_runs (
    id              text PRIMARY KEY,
    command         text NOT NULL,
    dry_run         boolean NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text NOT NULL,
    candidates      bigint NOT NULL DEFAULT 0,
    deleted         bigint NOT NULL DEFAULT 0,
    failed          bigint NOT NULL DEFAULT 0,
    retained        bigint NOT NULL DEFAULT 0,
    bytes_reclaimed bigint NOT NULL DEFAULT 0,
    details         json
);
CREATE INDEX IF NOT EXISTS cleanup_runs_command_started ON cleanup_runs (command, started_at);

CREATE TABLE IF NOT EXISTS cleanup_audit (
    id              bigserial PRIMARY KEY,
    run_id          text NOT NULL REFERENCES cleanup_runs (id),
    policy          text NOT NULL,
    kind            text NOT NULL,
    target          text NOT NULL,
    reason          text NOT NULL,
    bytes           bigint,
    outcome         text NOT NULL,
    error           text,
    backup_location text,
    row_snapshot    json,
    at              timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS cleanup_audit_run ON cleanup_audit (run_id);

CREATE TABLE IF NOT EXISTS cleanup_policies (
    data_type      text PRIMARY KEY,
    retention_days integer NOT NULL CHECK (retention_days >= 0),
    enabled        boolean NOT NULL DEFAULT true,
    pattern        text NOT NULL,
    description    text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

INSERT INTO cleanup_policies (data_type, retention_days, enabled, pattern, description) VALUES
    ('pipeline_operations', 30, true, 'operation_*.json', 'Execution records and progress files'),
    ('dbt_logs', 7, true, 'dbt/logs/**/*.log', 'Transformation logs and artifacts'),
    ('failed_operations', 14, true, 'operation_*.json', 'Failed pipeline operations (kept longer for debugging)'),
    ('completed_operations', 90, true, 'operation_*.json', 'Successfully completed operations'),
    ('system_logs', 30, true, 'logs/**/*.log', 'Application and system logs'),
    ('temp_files', 1, true, 'tmp/**/*', 'Temporary files and cache')
ON CONFLICT (data_type) DO NOTHING;
