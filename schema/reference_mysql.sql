-- The reference schema of SPEC §4.1 for MySQL 8 / MariaDB 10.11+, as Django creates it there:
-- DATETIME(6) in UTC, BOOLEAN (TINYINT(1)), JSON. UUIDs are CHAR(36), hyphenated (Django's
-- own UUIDField is CHAR(32) without hyphens; sweep reads either as text). Shipped for tests
-- and `demo`.
CREATE TABLE IF NOT EXISTS authoring_publishedmodule (
    id BIGINT PRIMARY KEY, module_id BIGINT NOT NULL, version INTEGER NOT NULL,
    payload JSON, published_at DATETIME(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS forum_attachment (
    id CHAR(36) PRIMARY KEY, image VARCHAR(255), original_filename VARCHAR(255), file_size BIGINT,
    is_active BOOLEAN NOT NULL DEFAULT TRUE, deleted_at DATETIME(6), created_at DATETIME(6) NOT NULL,
    INDEX forum_attachment_cleanup (is_active, deleted_at)
);
CREATE TABLE IF NOT EXISTS viral_clips_job (
    id BIGINT PRIMARY KEY, status VARCHAR(32) NOT NULL, original_file_key VARCHAR(512),
    extracted_audio_key VARCHAR(512), created_at DATETIME(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS viral_clips_clippedvideo (
    id BIGINT PRIMARY KEY, job_id BIGINT NOT NULL, s3_key VARCHAR(512), status VARCHAR(32) NOT NULL,
    created_at DATETIME(6) NOT NULL
);
CREATE TABLE IF NOT EXISTS preview_sessions (
    id VARCHAR(64) PRIMARY KEY, status VARCHAR(16) NOT NULL, created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL, expires_at DATETIME(6), bundle_path VARCHAR(512), bundle_key VARCHAR(512)
);
CREATE TABLE IF NOT EXISTS background_jobs (
    id VARCHAR(64) PRIMARY KEY, job_type VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL,
    created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, working_dir VARCHAR(512)
);
CREATE TABLE IF NOT EXISTS repos (
    id VARCHAR(64) PRIMARY KEY, active BOOLEAN NOT NULL, last_activity_at DATETIME(6) NOT NULL,
    filesystem_path VARCHAR(512)
);
