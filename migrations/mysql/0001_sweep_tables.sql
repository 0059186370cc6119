-- sweep's own tables (SPEC §4.2) on MySQL 8 / MariaDB 10.11+. Instants are DATETIME(6) in UTC
-- (sweep's sessions use time_zone '+00:00'), booleans TINYINT(1). Nothing else in the
-- database is created or changed. The audit has no foreign key to cleanup_runs (see
-- migration 2 on PostgreSQL: it cost a third of the audit's write time).
CREATE TABLE IF NOT EXISTS cleanup_runs (
    id              VARCHAR(64) NOT NULL PRIMARY KEY,
    command         VARCHAR(128) NOT NULL,
    dry_run         BOOLEAN NOT NULL,
    started_at      DATETIME(6) NOT NULL,
    finished_at     DATETIME(6) NULL,
    status          VARCHAR(32) NOT NULL,
    candidates      BIGINT NOT NULL DEFAULT 0,
    deleted         BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    retained        BIGINT NOT NULL DEFAULT 0,
    bytes_reclaimed BIGINT NOT NULL DEFAULT 0,
    details         LONGTEXT NULL,
    INDEX cleanup_runs_command_started (command, started_at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS cleanup_audit (
    id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id          VARCHAR(64) NOT NULL,
    policy          VARCHAR(255) NOT NULL,
    kind            VARCHAR(16) NOT NULL,
    target          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    bytes           BIGINT NULL,
    outcome         VARCHAR(32) NOT NULL,
    error           TEXT NULL,
    backup_location TEXT NULL,
    row_snapshot    LONGTEXT NULL,
    at              DATETIME(6) NOT NULL,
    INDEX cleanup_audit_run (run_id)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS cleanup_policies (
    data_type      VARCHAR(64) NOT NULL PRIMARY KEY,
    retention_days INTEGER NOT NULL CHECK (retention_days >= 0),
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    pattern        VARCHAR(255) NOT NULL,
    description    VARCHAR(255) NOT NULL,
    updated_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

INSERT IGNORE INTO cleanup_policies (data_type, retention_days, enabled, pattern, description) VALUES
    ('pipeline_operations', 30, TRUE, 'operation_*.json', 'Execution records and progress files'),
    ('dbt_logs', 7, TRUE, 'dbt/logs/**/*.log', 'Transformation logs and artifacts'),
    ('failed_operations', 14, TRUE, 'operation_*.json', 'Failed pipeline operations (kept longer for debugging)'),
    ('completed_operations', 90, TRUE, 'operation_*.json', 'Successfully completed operations'),
    ('system_logs', 30, TRUE, 'logs/**/*.log', 'Application and system logs'),
    ('temp_files', 1, TRUE, 'tmp/**/*', 'Temporary files and cache');
