#!/usr/bin/env bash
# Fan-out of N demo.echo beside a flat batch of N drained, through HTTP, on one
# binary and one database (issue 24, point 3). Used for BENCHMARKS.md, "At the
# edges"; run it for each binary, alternated:
#   benches/fanout-http.sh BIN DB_URL N...   e.g. benches/fanout-http.sh target/debug/courier sqlite:///tmp/f.db 100 1000 10000
set -u
bin=$1; db=$2; shift 2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
COURIER_LOG=error $bin serve --demo --db "$db" --listen 127.0.0.1:$port --max-wait-ms 600000 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
for n in "$@"; do
  t0=$(date +%s.%N)
  out=$(curl -s -XPOST http://127.0.0.1:$port/api/v1/tasks -H 'content-type: application/json' -d "{\"kind\":\"demo.fanout\",\"input\":{\"n\":$n,\"kind\":\"demo.echo\",\"input\":1},\"wait_ms\":600000}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["state"])')
  t1=$(date +%s.%N)
  # a flat batch of n, drained
  python3 - $port $n <<'PY'
import json, sys, urllib.request, time
port, n = sys.argv[1], int(sys.argv[2])
api = f"http://127.0.0.1:{port}/api/v1"
t0 = time.time()
left = n
while left > 0:
    k = min(1000, left); left -= k
    body = json.dumps({"tasks": [{"kind": "demo.echo", "input": 1, "queue": "default"} for _ in range(k)]}).encode()
    urllib.request.urlopen(urllib.request.Request(api + "/tasks/batch", data=body, headers={"content-type": "application/json"})).read()
while True:
    q = [q for q in json.load(urllib.request.urlopen(api + "/queues"))["queues"] if q["name"] == "default"][0]
    if q["pending"] + q["running"] == 0: break
    time.sleep(0.05)
open("/tmp/flat.txt", "w").write(f"{time.time() - t0:.2f}")
PY
  printf '%s %s n=%s fanout %.2f s (%s), flat batch %s s\n' "$(basename $bin)" "${db%%\?*}" $n "$(python3 -c "print($t1-$t0)")" "$out" "$(cat /tmp/flat.txt)"
done
kill -TERM $pid; wait $pid 2>/dev/null
