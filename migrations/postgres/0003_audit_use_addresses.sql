-- The monitoring list's "new IP": per token, the first use of each address. A partial index
-- over uses only, so the query reads (token, address, time) triples and never the use rows.
CREATE INDEX audit_logs_uses_by_address ON audit_logs (token_id, ip, occurred_at)
    WHERE action = 'API_TOKEN_USED';
