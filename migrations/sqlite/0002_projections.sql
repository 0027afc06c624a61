-- Projections: state derived from the event log, rebuildable from position 0 at any time
-- (`tokenledger projections rebuild`). Unlike the log, these tables are rewritten.

-- The token table, updated inline in the append transaction, so revocation is immediate where
-- it is written. `hash` (SHA-256 of the token) is the only stored form of a token.
CREATE TABLE api_tokens (
    id             BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name           TEXT    NOT NULL,
    hash           BLOB    UNIQUE CHECK (hash IS NULL OR length(hash) = 32),
    environment    TEXT    NOT NULL CHECK (environment IN ('live', 'test')),
    scopes         TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_by     TEXT,
    revoke_reason  TEXT,
    rotated_from   BLOB,
    rotated_to     BLOB,
    rotated_at     INTEGER,
    last_used_at   INTEGER,
    last_used_ip   TEXT,
    last_used_path TEXT,
    use_count      INTEGER NOT NULL DEFAULT 0,
    denied_count   INTEGER NOT NULL DEFAULT 0,
    stream_version INTEGER NOT NULL,
    position       INTEGER NOT NULL
) WITHOUT ROWID;

-- The audit view: one row per event, never a hash, commitment or salt.
CREATE TABLE audit_logs (
    position    INTEGER NOT NULL PRIMARY KEY,
    event_id    BLOB    NOT NULL UNIQUE,
    action      TEXT    NOT NULL,
    token_id    BLOB    NOT NULL,
    actor       TEXT    NOT NULL,
    ip          TEXT,
    path        TEXT,
    scopes      TEXT    NOT NULL,
    occurred_at INTEGER NOT NULL,
    details     TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX audit_logs_by_token ON audit_logs (token_id, position);
CREATE INDEX audit_logs_by_action ON audit_logs (action, position);

-- How far each subscribed projection has folded the log; written in the same transaction as
-- its rows. (api_tokens is written inside the append transaction, so it is always at the head.)
CREATE TABLE projection_checkpoints (
    name     TEXT    NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL CHECK (position >= 0)
) WITHOUT ROWID;

INSERT INTO projection_checkpoints (name, position) VALUES ('audit_logs', 0);
