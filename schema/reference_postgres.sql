-- The reference schema of SPEC §4.1: the defaults sweep reads. Shipped for tests and `demo`;
-- sweep never creates it in a user's database.
CREATE TABLE IF NOT EXISTS authoring_publishedmodule (
    id bigint PRIMARY KEY, module_id bigint NOT NULL, version integer NOT NULL,
    payload jsonb, published_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS forum_attachment (
    id uuid PRIMARY KEY, image varchar(255), original_filename varchar(255), file_size bigint,
    is_active boolean NOT NULL DEFAULT true, deleted_at timestamptz, created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS forum_attachment_cleanup ON forum_attachment (is_active, deleted_at) WHERE is_active = false;
CREATE TABLE IF NOT EXISTS viral_clips_job (
    id bigint PRIMARY KEY, status varchar(32) NOT NULL, original_file_key varchar(512),
    extracted_audio_key varchar(512), created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS viral_clips_clippedvideo (
    id bigint PRIMARY KEY, job_id bigint NOT NULL, s3_key varchar(512), status varchar(32) NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS preview_sessions (
    id varchar(64) PRIMARY KEY, status varchar(16) NOT NULL, created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL, expires_at timestamptz, bundle_path varchar(512), bundle_key varchar(512)
);
CREATE TABLE IF NOT EXISTS background_jobs (
    id varchar(64) PRIMARY KEY, job_type varchar(64) NOT NULL, status varchar(16) NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, working_dir varchar(512)
);
CREATE TABLE IF NOT EXISTS repos (
    id varchar(64) PRIMARY KEY, active boolean NOT NULL, last_activity_at timestamptz NOT NULL,
    filesystem_path varchar(512)
);
