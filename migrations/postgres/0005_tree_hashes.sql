-- The RFC 6962 Merkle tree over the events' canonical bytes, stored as Go sumdb's tlog stores
-- it: every hash that becomes final when a leaf is appended, addressed by its stored-hash index
-- (about two per event). Written in the append transaction, so the tree always covers the
-- head; a log written before this migration is filled in at start-up. Roots and inclusion and
-- consistency proofs for any size are read from here without reading an event body.
CREATE TABLE tree_hashes (
    idx  BIGINT NOT NULL PRIMARY KEY CHECK (idx >= 0),
    hash BYTEA  NOT NULL CHECK (octet_length(hash) = 32)
);

CREATE TRIGGER tree_hashes_reject_change BEFORE UPDATE OR DELETE ON tree_hashes
    FOR EACH ROW EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER tree_hashes_reject_truncate BEFORE TRUNCATE ON tree_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();

-- Signed checkpoints of the tree (C2SP tlog-checkpoint signed notes), one per size signed.
CREATE TABLE checkpoints (
    size      BIGINT NOT NULL PRIMARY KEY CHECK (size > 0),
    root      BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    note      TEXT   NOT NULL,
    signed_at BIGINT NOT NULL
);

CREATE TRIGGER checkpoints_reject_change BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION tokenledger_reject_change();
CREATE TRIGGER checkpoints_reject_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION tokenledger_reject_change();
