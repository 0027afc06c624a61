-- wrk script for bench/http.sh: POST a cheap console command, with the bearer token from
-- BENCH_TOKEN when it is set, and count responses by status so non-2xx answers are never
-- hidden inside a requests/s figure.
--
-- Prints one machine-readable line in done():
--   BENCH_STATUS 2xx=N non2xx=M statuses=200:N,404:M

wrk.method = "POST"
wrk.body = '{"cmd":"ping","args":{}}'
wrk.headers["Content-Type"] = "application/json"

local token = os.getenv("BENCH_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
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
