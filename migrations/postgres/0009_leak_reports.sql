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
       substr(e.stream_id, 7)::uuid AS token_id,
       e.actor AS actor,
       d.data ->> 'ip' AS ip,
       d.data ->> 'path' AS path,
       t.scopes AS scopes,
       e.recorded_at AS occurred_at,
       (d.data - 'secret_commitment')::text AS details
FROM events e
CROSS JOIN LATERAL (
    SELECT CASE WHEN e.schema_version >= 2 THEN convert_from(e.body, 'UTF8')::jsonb
                ELSE convert_from(e.body, 'UTF8')::jsonb -> 'data' END AS data
) d
LEFT JOIN api_tokens t ON t.id = substr(e.stream_id, 7)::uuid
WHERE e.stream_id LIKE 'token-%';
