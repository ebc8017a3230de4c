#!/usr/bin/env bash
# Where one fan-out's time goes on PostgreSQL (issue 24, point 3): every
# statement the server ran for one `demo.fanout` of N `demo.echo`, with its
# count and its server time, from PostgreSQL's own log
# (`log_min_duration_statement = 0`, set for courier's sessions only through
# the URL's options; nothing else on the server changes). Run as a user
# that can read the server log.
#
#   benches/fanout-statements.sh [BIN] [N]   e.g. benches/fanout-statements.sh target/release/courier 10000
set -euo pipefail
bin=${1:-target/release/courier}; n=${2:-10000}
pg=postgres://postgres@127.0.0.1:5432/test
port=18082
schema="courier_bench_fan_$$"
psql "$pg" -qc "CREATE SCHEMA $schema"
url="$pg?options=-c%20search_path%3D$schema%20-c%20log_min_duration_statement%3D0"
COURIER_LOG=warn $bin serve --demo --db "$url" --listen 127.0.0.1:$port --max-wait-ms 600000 >/dev/null 2>&1 & pid=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
log=$(ls -t /var/log/postgresql/postgresql-*-main.log | head -1)
L=$(wc -l < $log)
t0=$(date +%s.%N)
curl -s -XPOST http://127.0.0.1:$port/api/v1/tasks -H 'content-type: application/json' -d "{\"kind\":\"demo.fanout\",\"input\":{\"n\":$n,\"kind\":\"demo.echo\",\"input\":1},\"wait_ms\":600000}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'
t1=$(date +%s.%N)
echo "fanout $n: $(python3 -c "print(round($t1-$t0,2))") s"
kill $pid; wait $pid || true
tail -n +$L $log > /tmp/fanout-statements.log
N=$n python3 - /tmp/fanout-statements.log <<'PY'
import sys,re,collections,os
d=collections.defaultdict(lambda:[0,0.0]); n=int(os.environ["N"])
for l in open(sys.argv[1]):
    m=re.search(r"duration: ([\d.]+) ms  (parse|bind|execute|statement)[^:]*: (.*)",l)
    if not m: continue
    ms,kind,q=float(m.group(1)),m.group(2),m.group(3)
    key=(kind, q[:110])
    d[key][0]+=1; d[key][1]+=ms
tot=sum(v[1] for v in d.values())
st=sum(v[0] for k,v in d.items() if k[0] in ("execute","statement"))
print(f"server ms total: {tot:.0f}; statements (execute+statement): {st}")
for (kind,q),(c,ms) in sorted(d.items(), key=lambda kv:-kv[1][1])[:22]:
    print(f"{c:7d} {ms:9.1f} ms  {kind:9} {q}")
PY
psql "$pg" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null
