#!/usr/bin/env bash
# p50 and p90 of 1,000 sequential sync waits (POST /api/v1/tasks with wait_ms, demo.echo, after 100 warm-up) through one release binary on one database: for before/after comparisons of two builds, alternated (BENCHMARKS.md, "Sync-wait latency, before and after").
#   benches/syncwait-ab.sh BIN DB_URL [N]
set -euo pipefail
bin=$1; db=$2; n=${3:-1000}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
COURIER_LOG=error $bin serve --demo --db "$db" --listen 127.0.0.1:$port >/dev/null 2>&1 & pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
python3 - $port $n <<'P'
import json, sys, http.client, time
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"kind": "demo.echo", "input": {"a": 1}, "wait_ms": 5000})
ts = []
for i in range(n + 100):
    t = time.perf_counter(); c.request("POST", "/api/v1/tasks", body, {"content-type": "application/json"}); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
    if i >= 100: ts.append(time.perf_counter() - t)
ts.sort(); print(f"p50 {ts[n//2]*1000:.3f} ms p90 {ts[n*9//10]*1000:.3f} ms")
P
kill $pid; wait $pid 2>/dev/null || true
