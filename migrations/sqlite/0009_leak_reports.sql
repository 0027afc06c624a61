-- Leaked-token reports (`TokenLeakReported`): the audit view names them
-- API_TOKEN_LEAK_REPORTED, as the service's audit rows do. The view is the one of 0004 with
-- that one line added; no table changes.

DROP VIEW audit_logs;

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
           WHEN 'TokenLeakReported' THEN 'API_TOKEN_LEAK_REPORTED'
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
