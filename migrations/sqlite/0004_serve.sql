-- `sweep serve`: API tokens (only an argon2 hash of each is kept), the settings an operator
-- changes from the dashboard (seed 004's dry-run toggle), and who did what through the web.
CREATE TABLE IF NOT EXISTS sweep_tokens (
    name         TEXT PRIMARY KEY,
    token_id     TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    hash         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);

CREATE TABLE IF NOT EXISTS sweep_settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sweep_actions (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS sweep_actions_at ON sweep_actions (at);
