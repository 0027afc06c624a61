-- Per-token client allowlists and rotations whose overlap ends at the successor's first use.
-- Both are folded from the events (TokenCreated.allowed_ips, TokenRotated.until_successor_used),
-- so a rebuild fills them; rows written before this migration hold no such facts.

-- The networks a token may be used from, canonical CIDR blocks separated by spaces; '' is any.
ALTER TABLE api_tokens ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '';
-- 'until_successor_used' when this token's rotation overlap ends at its successor's first use.
ALTER TABLE api_tokens ADD COLUMN rotation_overlap TEXT;
