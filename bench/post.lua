-- wrk script: POST the webhook body from $BENCH_BODY with the shared secret. A body holding @SEQ@ is a template:
-- each request replaces it with the next number from $BENCH_SEED (12 hex digits), so that its alerts are new.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_SECRET")

local template = wrk.body
local seq = tonumber(os.getenv("BENCH_SEED") or "0")
if template:find("@SEQ@", 1, true) then
  request = function()
    seq = seq + 1
    local body = template:gsub("@SEQ@", string.format("%012x", seq))
    return wrk.format(nil, nil, nil, body)
  end
end

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors=%d non2xx_total=%d p99_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout + summary.errors.status, summary.errors.status, latency:percentile(99)))
end
