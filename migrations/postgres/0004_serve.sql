-- `sweep serve`: API tokens (only an argon2 hash of each is kept), the settings an operator
-- changes from the dashboard (seed 004's dry-run toggle), and who did what through the web.
CREATE TABLE IF NOT EXISTS sweep_tokens (
    name         text PRIMARY KEY,
    token_id     text NOT NULL UNIQUE,
    role         text NOT NULL,
    hash         text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE IF NOT EXISTS sweep_settings (
    name       text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);

CREATE TABLE IF NOT EXISTS sweep_actions (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail json
);
CREATE INDEX IF NOT EXISTS sweep_actions_at ON sweep_actions (at);
