-- Projections: state derived from the event log, rebuildable from position 0 at any time
-- (`tokenledger projections rebuild`). Unlike the log, these tables are rewritten.

-- The token table, updated inline in the append transaction, so revocation is immediate where
-- it is written. `hash` (SHA-256 of the token) is the only stored form of a token.
CREATE TABLE api_tokens (
    id             UUID    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    hash           BYTEA   UNIQUE CHECK (hash IS NULL OR octet_length(hash) = 32),
    environment    TEXT    NOT NULL CHECK (environment IN ('live', 'test')),
    scopes         TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    created_by     TEXT    NOT NULL,
    expires_at     BIGINT  NOT NULL,
    revoked_at     BIGINT,
    revoked_by     TEXT,
    revoke_reason  TEXT,
    rotated_from   UUID,
    rotated_to     UUID,
    rotated_at     BIGINT,
    last_used_at   BIGINT,
    last_used_ip   TEXT,
    last_used_path TEXT,
    use_count      BIGINT  NOT NULL DEFAULT 0,
    denied_count   BIGINT  NOT NULL DEFAULT 0,
    stream_version BIGINT  NOT NULL,
    position       BIGINT  NOT NULL
);

-- The audit view: one row per event, never a hash, commitment or salt.
CREATE TABLE audit_logs (
    position    BIGINT  NOT NULL PRIMARY KEY,
    event_id    UUID    NOT NULL UNIQUE,
    action      TEXT    NOT NULL,
    token_id    UUID    NOT NULL,
    actor       TEXT    NOT NULL,
    ip          TEXT,
    path        TEXT,
    scopes      TEXT    NOT NULL,
    occurred_at BIGINT  NOT NULL,
    details     TEXT    NOT NULL
);

CREATE INDEX audit_logs_by_token ON audit_logs (token_id, position);
CREATE INDEX audit_logs_by_action ON audit_logs (action, position);

-- How far each subscribed projection has folded the log; written in the same transaction as
-- its rows. (api_tokens is written inside the append transaction, so it is always at the head.)
CREATE TABLE projection_checkpoints (
    name     TEXT   NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL CHECK (position >= 0)
);

INSERT INTO projection_checkpoints (name, position) VALUES ('audit_logs', 0);
