-- `sweep serve`: API tokens (only an argon2 hash of each is kept), the settings an operator
-- changes from the dashboard (seed 004's dry-run toggle), and who did what through the web.
CREATE TABLE IF NOT EXISTS sweep_tokens (
    name         VARCHAR(128) NOT NULL PRIMARY KEY,
    token_id     VARCHAR(64) NOT NULL UNIQUE,
    role         VARCHAR(16) NOT NULL,
    hash         VARCHAR(255) NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    last_used_at DATETIME(6) NULL,
    revoked_at   DATETIME(6) NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sweep_settings (
    name       VARCHAR(128) NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    updated_by VARCHAR(128) NOT NULL
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;

CREATE TABLE IF NOT EXISTS sweep_actions (
    id     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at     DATETIME(6) NOT NULL,
    actor  VARCHAR(128) NOT NULL,
    action VARCHAR(64) NOT NULL,
    target TEXT NOT NULL,
    detail LONGTEXT NULL,
    INDEX sweep_actions_at (at)
) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
