#!/usr/bin/env bash
# Sync-wait latency beside Celery (issue 24, point 6), rounds alternated in
# one run on this machine:
#
#   Celery  ../shared/bench/peers/celery (copied to target/celery): one
#           prefork worker (c=2) on RabbitMQ with the rpc result backend,
#           `noop.apply_async().get()` 1,000 times after 100 warm-up calls,
#           p50 (its suite also runs a small throughput, fan-out and cancel
#           part, not reported here).
#   courier `cargo bench --bench http`: the release `courier serve --demo`
#           in its own process, `POST /api/v1/tasks` with `wait_ms` for
#           `demo.echo` answered 200 with the finished task, 1,000
#           sequential requests, p50; on SQLite and on PostgreSQL. The
#           bench's client interleaves each request with an in-process
#           `Client` round trip of its own runtime (its baseline), so a
#           second courier runtime shares the two cores.
#   courier, alone: `benches/syncwait-ab.sh` on the same release binary,
#           a Python `http.client` sending 1,000 sequential requests
#           after 100 warm-up, nothing else running: the way Celery's
#           figure is taken (one Python client, alone).
#
# Prints each round's three p50s and the ratios within the round, then the
# median of every round with its spread.
#
#   benches/latency.sh [ROUNDS]       e.g. benches/latency.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cargo build --release --bins --bench http >/dev/null 2>&1
declare -a celery=() sqlite=() postgres=() sqlite1=() postgres1=()
for r in $(seq 1 "$rounds"); do
  rm -rf target/celery
  cp -r ../shared/bench/peers/celery target/celery
  rm -rf target/celery/results
  (cd target/celery && RUNS=1 SUITES="rpc:prefork:1000:1000:1" FAILOVERS=" " FANOUT_REPS=1 CANCEL_REPS=1 ./run.sh >/dev/null 2>&1)
  summary=$(ls -d target/celery/results/*/ | tail -n 1)summary.md
  c=$(python3 - "$summary" <<'EOF'
import sys
for l in open(sys.argv[1]):
    cells = [c.strip() for c in l.strip().strip("|").split("|")]
    if len(cells) > 4 and cells[0] == "rpc" and cells[1].startswith("prefork") and "push" in cells[2]:
        print(cells[4].rstrip("*")); break
EOF
)
  out=$(BENCH_SAMPLES=1000 BENCH_TASKS=320 BENCH_CREATES=2000 cargo bench --bench http 2>/dev/null)
  p50s=$(printf '%s\n' "$out" | python3 -c '
import re, sys
vals = []
for l in sys.stdin:
    if l.startswith("| p50 |"):
        vals.append(re.findall(r"[\d.]+", l.split("|")[2])[0])
print(" ".join(vals[:2]))')
  read -r s p <<<"$p50s"
  s=$(python3 -c "print(round($s / 1000, 3))"); p=$(python3 -c "print(round($p / 1000, 3))")
  echo "round $r: p50 Celery rpc $c ms; courier HTTP sync-wait SQLite $s ms ($(python3 -c "print(round($s / $c, 2))")×), PostgreSQL $p ms ($(python3 -c "print(round($p / $c, 2))")×)"
  celery+=("$c"); sqlite+=("$s"); postgres+=("$p")
  rm -f "target/latency-$r.db"*
  s1=$(benches/syncwait-ab.sh target/release/courier "sqlite://target/latency-$r.db" 1000 | awk '{print $2}')
  schema=courier_bench_latency_$r
  psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS $schema CASCADE" -c "CREATE SCHEMA $schema" >/dev/null 2>&1
  p1=$(benches/syncwait-ab.sh target/release/courier "${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}?options=-c%20search_path%3D$schema" 1000 | awk '{print $2}')
  psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1
  rm -f "target/latency-$r.db"*
  echo "round $r, alone: courier SQLite $s1 ms ($(python3 -c "print(round($s1 / $c, 2))")×), PostgreSQL $p1 ms ($(python3 -c "print(round($p1 / $c, 2))")×)"
  sqlite1+=("$s1"); postgres1+=("$p1")
done
python3 - "${celery[*]}" "${sqlite[*]}" "${postgres[*]}" "${sqlite1[*]}" "${postgres1[*]}" <<'EOF'
import statistics, sys
names = ["Celery rpc", "courier SQLite", "courier PostgreSQL", "courier SQLite, alone", "courier PostgreSQL, alone"]
cols = [[float(x) for x in a.split()] for a in sys.argv[1:]]
for n, xs in zip(names, cols):
    print(f"{n}: p50 median {statistics.median(xs):.3f} ms, spread {min(xs):.3f}-{max(xs):.3f}, rounds {xs}")
for n, xs in zip(names[1:], cols[1:]):
    rs = [x / c for x, c in zip(xs, cols[0])]
    print(f"{n} / Celery, per round: median {statistics.median(rs):.2f}x, spread {min(rs):.2f}-{max(rs):.2f}")
EOF
