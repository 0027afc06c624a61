-- A projection database of a log kept elsewhere (KurrentDB; DATABASE_URL=kurrentdb://...).
-- Its events table is a verified copy of that log, so every projection, view and tree works as
-- on a log kept here; these tables hold what only that arrangement needs.

-- The openings of that log, kept here before the append is sent (they never go to the log),
-- by event id: a retried append keeps the same rows again.
CREATE TABLE log_openings (
    event_id BLOB NOT NULL CHECK (length(event_id) = 16),
    field    TEXT NOT NULL,
    salt     BLOB NOT NULL CHECK (length(salt) = 32),
    value    BLOB NOT NULL,
    PRIMARY KEY (event_id, field)
) WITHOUT ROWID;

CREATE TRIGGER log_openings_no_update BEFORE UPDATE ON log_openings
BEGIN SELECT RAISE(ABORT, 'log_openings are append-only: UPDATE is not allowed'); END;

CREATE TRIGGER log_openings_no_delete BEFORE DELETE ON log_openings
BEGIN SELECT RAISE(ABORT, 'log_openings are append-only: DELETE is not allowed'); END;

-- Which log this database follows, once it follows one: appends straight to it are refused.
CREATE TABLE log_primary (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    name      TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER log_primary_permanent BEFORE DELETE ON log_primary
BEGIN SELECT RAISE(ABORT, 'log_primary is permanent: DELETE is not allowed'); END;

-- An empty database takes the log id of the log it follows; once it holds an event the id is
-- fixed, as before.
DROP TRIGGER log_head_forward_only;

CREATE TRIGGER log_head_forward_only BEFORE UPDATE ON log_head
WHEN (NEW.log_id IS NOT OLD.log_id AND (OLD.position <> 0 OR NEW.position <> 0))
  OR NEW.position < OLD.position
BEGIN SELECT RAISE(ABORT, 'log_head only moves forward and keeps its log_id'); END;
