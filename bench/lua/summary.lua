-- wrk's end-of-run figures as one machine-readable line ("BENCH_JSON {...}"), which bench/benchlib/load.py
-- reads. Other scripts load this file first (dofile) and may add fields through `extra_fields`.
-- wrk's latencies are closed-loop (coordinated omission): the open-loop figures come from vegeta.
function bench_summary_json(summary, latency, extra)
  local e = summary.errors
  local line = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean)
  if extra ~= nil and extra ~= "" then line = line .. "," .. extra end
  io.write("BENCH_JSON " .. line .. "}\n")
end

function done(summary, latency, requests)
  bench_summary_json(summary, latency, extra_fields and extra_fields() or nil)
end
