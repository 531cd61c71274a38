-- wrk script for scripts/http_load.sh: keep-alive POST /call/counter/add
-- with body "1", the instance key cycling over HOTSWAP_KEYS keys (default 16)
-- per thread. Prints one machine-readable RESULT line at the end.

local keys = tonumber(os.getenv("HOTSWAP_KEYS") or "16")
local counter = 0

wrk.method = "POST"
wrk.body = "1"
wrk.headers["Content-Type"] = "text/plain"

request = function()
  counter = counter + 1
  return wrk.format(nil, "/call/counter/add?instance=k" .. (counter % keys))
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_s=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
