-- Webhook deliveries: an outbox and its subscriber's checkpoint.
--
-- Not a projection: rows are filled from the log (revocations, leak reports) and from the
-- clock (expiry warnings), and they hold delivery state (attempts, outcome) that the log does
-- not. `projections rebuild` never touches these tables, so a rebuild neither loses a pending
-- delivery nor sends a delivered one again.
--
-- `id` is the idempotency key a receiver sees: the event id for log events, a name-based UUID
-- of (token, threshold, expiry) for expiry warnings; inserts are ON CONFLICT DO NOTHING.
CREATE TABLE webhook_outbox (
    id              UUID    NOT NULL PRIMARY KEY,
    event_type      TEXT    NOT NULL,
    token_id        UUID,
    position        BIGINT  CHECK (position IS NULL OR position > 0),
    body            TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at BIGINT  NOT NULL,
    -- A sender's claim: no other sender takes the row before lease_until.
    lease_id        UUID,
    lease_until     BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    BIGINT
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (status, next_attempt_at);

-- The expiry scan's read: active tokens by expiry.
CREATE INDEX api_tokens_active_by_expiry ON api_tokens (expires_at)
    WHERE revoked_at IS NULL AND rotated_to IS NULL;

-- How far the webhook subscriber has read the log; moved in the same transaction as the
-- outbox rows it inserts. No row until webhooks are first enabled: they start at the head.
CREATE TABLE webhook_checkpoints (
    name     TEXT   NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL CHECK (position >= 0)
);
