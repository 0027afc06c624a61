-- Forensic reads without rescanning the log.
--
-- As of a position, a token's row is the fold of its lifecycle events (everything but uses) up
-- to there, plus its last use up to there, which a binary search over its stream versions
-- finds. This index lists each stream's lifecycle events in order; uses, nearly every event,
-- are left out, so it costs a use nothing.
CREATE INDEX events_lifecycle_by_stream ON events (stream_id, position) WHERE event_type <> 'TokenUsed';

-- The incident report's related tokens: those created by the same actor, and those used from
-- the same addresses.
CREATE INDEX api_tokens_by_creator ON api_tokens (created_by, id);
CREATE INDEX token_addresses_by_ip ON token_addresses (ip, last_seen);
