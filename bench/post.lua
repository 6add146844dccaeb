-- wrk script: POST the webhook body from $BENCH_BODY with the shared secret.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_SECRET")

done = function(summary, latency, requests)
  io.write(string.format("BENCH requests=%d errors=%d non2xx_total=%d p99_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout + summary.errors.status, summary.errors.status, latency:percentile(99)))
end
