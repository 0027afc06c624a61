-- The RFC 6962 Merkle tree over the events' canonical bytes, stored as Go sumdb's tlog stores
-- it: every hash that becomes final when a leaf is appended, addressed by its stored-hash index
-- (about two per event). Written in the append transaction, so the tree always covers the
-- head; a log written before this migration is filled in at start-up. Roots and inclusion and
-- consistency proofs for any size are read from here without reading an event body.
CREATE TABLE tree_hashes (
    idx  INTEGER NOT NULL PRIMARY KEY CHECK (idx >= 0),
    hash BLOB    NOT NULL CHECK (length(hash) = 32)
) WITHOUT ROWID;

CREATE TRIGGER tree_hashes_no_update BEFORE UPDATE ON tree_hashes
BEGIN SELECT RAISE(ABORT, 'tree_hashes are append-only: UPDATE is not allowed'); END;

CREATE TRIGGER tree_hashes_no_delete BEFORE DELETE ON tree_hashes
BEGIN SELECT RAISE(ABORT, 'tree_hashes are append-only: DELETE is not allowed'); END;

-- Signed checkpoints of the tree (C2SP tlog-checkpoint signed notes), one per size signed.
CREATE TABLE checkpoints (
    size      INTEGER NOT NULL PRIMARY KEY CHECK (size > 0),
    root      BLOB    NOT NULL CHECK (length(root) = 32),
    note      TEXT    NOT NULL,
    signed_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only: UPDATE is not allowed'); END;

CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only: DELETE is not allowed'); END;
