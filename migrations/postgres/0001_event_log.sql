-- The event log: append-only, dense positions in commit order, one row of head state.
-- The log_head row, locked FOR UPDATE, is the append lock: positions are assigned under it and
-- become visible at commit, so there is no sequence (a sequence hands out numbers at insert,
-- not at commit, and a reader polling by position could skip an event forever).

CREATE TABLE log_head (
    singleton BOOLEAN NOT NULL PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    log_id    UUID    NOT NULL,
    position  BIGINT  NOT NULL CHECK (position >= 0),
    hash      BYTEA   NOT NULL CHECK (octet_length(hash) = 32)
);

INSERT INTO log_head (log_id, position, hash) VALUES (gen_random_uuid(), 0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION tokenledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP;
END
$$;

CREATE FUNCTION tokenledger_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.log_id <> OLD.log_id OR NEW.position < OLD.position THEN
        RAISE EXCEPTION 'log_head only moves forward and keeps its log_id';
    END IF;
    RETURN NEW;
END
$$;

-- Every head movement wakes other nodes' tails (a hint only: they read by position).
CREATE FUNCTION tokenledger_notify_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tokenledger_log', NEW.position::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER log_head_notify AFTER UPDATE ON log_head
    FOR EACH ROW EXECUTE FUNCTION tokenledger_notify_head();
CREATE TRIGGER log_head_no_delete BEFORE DELETE OR TRUNCATE ON log_head
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER log_head_forward_only BEFORE UPDATE ON log_head
    FOR EACH ROW EXECUTE FUNCTION tokenledger_head_forward_only();

CREATE TABLE events (
    position       BIGINT  NOT NULL PRIMARY KEY CHECK (position > 0),
    event_id       UUID    NOT NULL UNIQUE,
    stream_id      TEXT    NOT NULL,
    stream_version BIGINT  NOT NULL CHECK (stream_version > 0),
    recorded_at    BIGINT  NOT NULL,
    actor          TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    body           BYTEA   NOT NULL,
    hash           BYTEA   NOT NULL CHECK (octet_length(hash) = 32),
    UNIQUE (stream_id, stream_version)
);

CREATE FUNCTION tokenledger_dense_positions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.position <> (SELECT COALESCE(MAX(position), 0) + 1 FROM events) THEN
        RAISE EXCEPTION 'events positions are dense: the next position must be the last plus one';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_dense_positions BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION tokenledger_dense_positions();
CREATE TRIGGER events_reject_change BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER events_reject_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();

-- Openings of the secret commitments events carry, written in the same transaction.
CREATE TABLE event_openings (
    position BIGINT NOT NULL REFERENCES events (position),
    field    TEXT   NOT NULL,
    salt     BYTEA  NOT NULL,
    value    BYTEA  NOT NULL,
    PRIMARY KEY (position, field)
);

CREATE TRIGGER event_openings_reject_change BEFORE UPDATE OR DELETE ON event_openings
    FOR EACH ROW EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER event_openings_reject_truncate BEFORE TRUNCATE ON event_openings
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();
