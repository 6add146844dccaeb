-- wrk script: POST the webhook body from $BENCH_BODY with the shared secret. A body holding @SEQ@ is a template:
-- each request replaces it with the next number from $BENCH_SEED (12 hex digits), so that its alerts are new; and
-- each @KNOWN@ with one of $BENCH_KNOWN keys pre-filled in a ledger (16 hex digits), the n-th of a body from the
-- n-th of $BENCH_STRIPES equal stripes of them, so that no key appears twice in a body.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_SECRET")

local template = wrk.body
local seq = tonumber(os.getenv("BENCH_SEED") or "0")
local known = tonumber(os.getenv("BENCH_KNOWN") or "0")
local stripe = math.floor(known / tonumber(os.getenv("BENCH_STRIPES") or "1"))
if template:find("@SEQ@", 1, true) or template:find("@KNOWN@", 1, true) then
  request = function()
    seq = seq + 1
    local body = template:gsub("@SEQ@", string.format("%012x", seq))
    local n = -1
    body = body:gsub("@KNOWN@", function()
      n = n + 1
      return string.format("%016x", n * stripe + math.random(0, stripe - 1))
    end)
    return wrk.format(nil, nil, nil, body)
  end
end

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors=%d non2xx_total=%d p99_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout + summary.errors.status, summary.errors.status, latency:percentile(99)))
end
