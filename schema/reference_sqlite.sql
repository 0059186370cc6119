-- The reference schema of SPEC §4.1 for SQLite: timestamps RFC 3339 text in UTC, booleans 0/1,
-- UUIDs hyphenated text, JSON text. Shipped for tests and `demo`.
CREATE TABLE IF NOT EXISTS authoring_publishedmodule (
    id INTEGER PRIMARY KEY, module_id INTEGER NOT NULL, version INTEGER NOT NULL,
    payload TEXT, published_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forum_attachment (
    id TEXT PRIMARY KEY, image TEXT, original_filename TEXT, file_size INTEGER,
    is_active INTEGER NOT NULL DEFAULT 1, deleted_at TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS forum_attachment_cleanup ON forum_attachment (is_active, deleted_at) WHERE is_active = 0;
CREATE TABLE IF NOT EXISTS viral_clips_job (
    id INTEGER PRIMARY KEY, status TEXT NOT NULL, original_file_key TEXT,
    extracted_audio_key TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS viral_clips_clippedvideo (
    id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL, s3_key TEXT, status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS preview_sessions (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, expires_at TEXT, bundle_path TEXT, bundle_key TEXT
);
CREATE TABLE IF NOT EXISTS background_jobs (
    id TEXT PRIMARY KEY, job_type TEXT NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, working_dir TEXT
);
CREATE TABLE IF NOT EXISTS repos (
    id TEXT PRIMARY KEY, active INTEGER NOT NULL, last_activity_at TEXT NOT NULL,
    filesystem_path TEXT
);
