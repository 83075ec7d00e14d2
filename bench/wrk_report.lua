-- Owned by bench/load.py: prints wrk's totals as one JSON line after its usual
-- report, so the benchmark never has to parse wrk's human-readable units.
-- Defines only done(): wrk keeps its fast path (a static request, no Lua per request).

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '\nBENCH_WRK_JSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeout_errors": %d, ' ..
    '"latency_p50_us": %d, "latency_p90_us": %d, "latency_p99_us": %d, ' ..
    '"latency_max_us": %d, "latency_mean_us": %.1f}\n',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
