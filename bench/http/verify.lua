-- wrk script for bench/http.sh: POST /v1/verify with the caller's bearer token from
-- BENCH_TOKEN (a token with tokens:verify), checking the token in BENCH_TARGET_TOKEN for
-- registry:read; responses are counted by status as bench/http/console.lua does, so non-2xx
-- answers are never hidden inside a requests/s figure.
--
-- Prints one machine-readable line in done():
--   BENCH_STATUS 2xx=N non2xx=M statuses=200:N,404:M

local caller = os.getenv("BENCH_TOKEN") or ""
local target = os.getenv("BENCH_TARGET_TOKEN") or ""

wrk.method = "POST"
-- Tokens are base62 with `_` separators, so they need no JSON escaping.
wrk.body = '{"token":"' .. target .. '","scopes":["registry:read"]}'
wrk.headers["Content-Type"] = "application/json"
if caller ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. caller
end

-- setup() runs in the main Lua state once per thread; keep the threads to read their
-- counters in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Each thread has its own Lua state, so these are per-thread globals.
statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, n in pairs(counts) do
      totals[status] = (totals[status] or 0) + n
    end
  end
  local ok, other, keys = 0, 0, {}
  for status, n in pairs(totals) do
    if status >= 200 and status < 300 then
      ok = ok + n
    else
      other = other + n
    end
    table.insert(keys, status)
  end
  table.sort(keys)
  local parts = {}
  for _, status in ipairs(keys) do
    table.insert(parts, status .. ":" .. totals[status])
  end
  io.write(string.format("BENCH_STATUS 2xx=%d non2xx=%d statuses=%s\n",
    ok, other, table.concat(parts, ",")))
end
