-- The event log: append-only, dense positions in commit order, one row of head state.
-- Positions are always supplied by the writer under BEGIN IMMEDIATE; there is no rowid alias
-- and no autoincrement (tables are WITHOUT ROWID), so nothing hands out numbers at insert.

CREATE TABLE log_head (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    log_id    BLOB    NOT NULL CHECK (length(log_id) = 16),
    position  INTEGER NOT NULL CHECK (position >= 0),
    hash      BLOB    NOT NULL CHECK (length(hash) = 32)
) WITHOUT ROWID;

INSERT INTO log_head (singleton, log_id, position, hash) VALUES (1, randomblob(16), 0, zeroblob(32));

CREATE TRIGGER log_head_no_delete BEFORE DELETE ON log_head
BEGIN SELECT RAISE(ABORT, 'log_head is permanent: DELETE is not allowed'); END;

CREATE TRIGGER log_head_forward_only BEFORE UPDATE ON log_head
WHEN NEW.log_id IS NOT OLD.log_id OR NEW.position < OLD.position
BEGIN SELECT RAISE(ABORT, 'log_head only moves forward and keeps its log_id'); END;

CREATE TABLE events (
    position       INTEGER NOT NULL PRIMARY KEY CHECK (position > 0),
    event_id       BLOB    NOT NULL UNIQUE CHECK (length(event_id) = 16),
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    recorded_at    INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    body           BLOB    NOT NULL,
    hash           BLOB    NOT NULL CHECK (length(hash) = 32),
    UNIQUE (stream_id, stream_version)
) WITHOUT ROWID;

CREATE TRIGGER events_dense_positions BEFORE INSERT ON events
WHEN NEW.position <> (SELECT COALESCE(MAX(position), 0) + 1 FROM events)
BEGIN SELECT RAISE(ABORT, 'events positions are dense: the next position must be the last plus one'); END;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed'); END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END;

-- Openings of the secret commitments events carry, written in the same transaction.
CREATE TABLE event_openings (
    position INTEGER NOT NULL REFERENCES events (position),
    field    TEXT    NOT NULL,
    salt     BLOB    NOT NULL,
    value    BLOB    NOT NULL,
    PRIMARY KEY (position, field)
) WITHOUT ROWID;

CREATE TRIGGER event_openings_no_update BEFORE UPDATE ON event_openings
BEGIN SELECT RAISE(ABORT, 'event_openings are append-only: UPDATE is not allowed'); END;

CREATE TRIGGER event_openings_no_delete BEFORE DELETE ON event_openings
BEGIN SELECT RAISE(ABORT, 'event_openings are append-only: DELETE is not allowed'); END;
