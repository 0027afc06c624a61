-- The compact event format (schema version 2): an event's row body holds only its payload, and
-- the canonical bytes are rebuilt from the row's columns around it. Rows written before keep
-- their version 1 bodies (the whole canonical JSON) and verify as they did.
--
-- The audit view is no longer a second copy of every event: `audit_logs` becomes a view over
-- the log, answering the same columns. The service reads audit pages from `events` directly
-- (by stream, by type, by position) and builds rows with the same fold the view mirrors.

DROP TABLE audit_logs;
DELETE FROM projection_checkpoints WHERE name = 'audit_logs';

-- Audit pages filtered by action read this; by token, the (stream_id, stream_version) key.
-- Uses, nearly every event, are left out: a page of uses is found by reading the log in order
-- (almost every event is one), so the index costs a use nothing.
CREATE INDEX events_by_type ON events (event_type, position) WHERE event_type <> 'TokenUsed';

-- Per token, every address it was used from: first and last use and how many. Written in the
-- append transaction with api_tokens; the monitoring list's "new IP" reads it, so a page costs
-- what it shows, not every use.
CREATE TABLE token_addresses (
    token_id   BLOB    NOT NULL CHECK (length(token_id) = 16),
    ip         TEXT    NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    uses       INTEGER NOT NULL CHECK (uses > 0),
    PRIMARY KEY (token_id, ip)
) WITHOUT ROWID;

CREATE INDEX token_addresses_by_first_seen ON token_addresses (first_seen);

INSERT INTO token_addresses (token_id, ip, first_seen, last_seen, uses)
SELECT unhex(replace(substr(stream_id, 7), '-', '')), ip, MIN(recorded_at), MAX(recorded_at), COUNT(*)
FROM (
    SELECT stream_id, recorded_at,
           json_extract(CAST(body AS TEXT),
                        CASE WHEN schema_version >= 2 THEN '$.ip' ELSE '$.data.ip' END) AS ip
    FROM events
    WHERE event_type = 'TokenUsed' AND stream_id LIKE 'token-%'
)
WHERE ip IS NOT NULL
GROUP BY stream_id, ip;

-- The guide's audit table, as a view: one row per token event in its vocabulary. `details` is
-- the event's payload without the secret commitment, so no hash, commitment or salt appears.
CREATE VIEW audit_logs AS
SELECT e.position AS position,
       e.event_id AS event_id,
       CASE e.event_type
           WHEN 'TokenCreated' THEN 'API_TOKEN_CREATED'
           WHEN 'TokenUsed' THEN 'API_TOKEN_USED'
           WHEN 'TokenUseDenied' THEN 'API_TOKEN_DENIED'
           WHEN 'TokenUseDeniedSummary' THEN 'API_TOKEN_DENIED'
           WHEN 'TokenRevoked' THEN 'API_TOKEN_REVOKED'
           WHEN 'TokenRotated' THEN 'API_TOKEN_ROTATED'
       END AS action,
       unhex(replace(substr(e.stream_id, 7), '-', '')) AS token_id,
       e.actor AS actor,
       json_extract(d.data, '$.ip') AS ip,
       json_extract(d.data, '$.path') AS path,
       t.scopes AS scopes,
       e.recorded_at AS occurred_at,
       json_remove(d.data, '$.secret_commitment') AS details
FROM events e
JOIN (SELECT position,
             CASE WHEN schema_version >= 2 THEN CAST(body AS TEXT)
                  ELSE json_extract(CAST(body AS TEXT), '$.data') END AS data
      FROM events) d ON d.position = e.position
LEFT JOIN api_tokens t ON t.id = unhex(replace(substr(e.stream_id, 7), '-', ''))
WHERE e.stream_id LIKE 'token-%';
