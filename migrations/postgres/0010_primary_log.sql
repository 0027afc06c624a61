-- A projection database of a log kept elsewhere (KurrentDB; DATABASE_URL=kurrentdb://...).
-- Its events table is a verified copy of that log, so every projection, view and tree works as
-- on a log kept here; these tables hold what only that arrangement needs.

-- The openings of that log, kept here before the append is sent (they never go to the log),
-- by event id: a retried append keeps the same rows again.
CREATE TABLE log_openings (
    event_id UUID  NOT NULL,
    field    TEXT  NOT NULL,
    salt     BYTEA NOT NULL CHECK (octet_length(salt) = 32),
    value    BYTEA NOT NULL,
    PRIMARY KEY (event_id, field)
);

CREATE TRIGGER log_openings_reject_change BEFORE UPDATE OR DELETE ON log_openings
    FOR EACH ROW EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER log_openings_reject_truncate BEFORE TRUNCATE ON log_openings
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();

-- Which log this database follows, once it follows one: appends straight to it are refused.
CREATE TABLE log_primary (
    singleton BOOLEAN NOT NULL PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    name      TEXT    NOT NULL
);

CREATE TRIGGER log_primary_reject_delete BEFORE DELETE OR TRUNCATE ON log_primary
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();

-- An empty database takes the log id of the log it follows; once it holds an event the id is
-- fixed, as before.
CREATE OR REPLACE FUNCTION tokenledger_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.log_id <> OLD.log_id AND (OLD.position <> 0 OR NEW.position <> 0))
       OR NEW.position < OLD.position THEN
        RAISE EXCEPTION 'log_head only moves forward and keeps its log_id';
    END IF;
    RETURN NEW;
END
$$;
