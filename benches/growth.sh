#!/usr/bin/env bash
# Backlog growth (issue 24, point 2): how fast a backlog drains as it grows.
#
# For each database and each size N: a fresh database runs 5,000 tasks and
# is analysed with nothing pending (a deployment that sat idle: autovacuum
# did this); on PostgreSQL, autovacuum then keeps vacuuming `tasks` but
# never analyses it again (`autovacuum_analyze_threshold` out of reach), so
# the statistics stay those of the quiet spell, the worst case. N tasks of
# demo.echo are queued through the batch endpoint of a `courier serve
# --demo` whose executor serves another queue, and then `courier serve
# --demo` (one executor of the default capacity, serving the backlog's
# queue) starts. The
# drain rate is measured from the first count that shows the backlog
# shrinking to the count that shows it gone, counts read from
# /api/v1/queues every 0.1 s. Rounds alternate the sizes; the median of
# every round is reported with its spread.
#
#   benches/growth.sh [ROUNDS] [SIZES] [DBS]
#   e.g. benches/growth.sh 3 "10000 100000 1000000" "sqlite postgres"
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
sizes=${2:-"10000 100000 1000000"}
dbs=${3:-"sqlite postgres"}
bin=${COURIER_BIN:-target/release/courier}
pg=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
# A production PostgreSQL runs autovacuum (its default); this machine's CI
# configuration turns it off. On for the run, as it was after.
if [[ " $dbs " == *" postgres "* ]] && [ "$(psql "$pg" -Atc 'show autovacuum')" = off ]; then
  psql "$pg" -qc "ALTER SYSTEM SET autovacuum = on" -c "SELECT pg_reload_conf()" >/dev/null
  restore_autovacuum=1
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port/api/v1"
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
  if [ -n "${restore_autovacuum:-}" ]; then
    psql "$pg" -qc "ALTER SYSTEM RESET autovacuum" -c "SELECT pg_reload_conf()" >/dev/null
  fi
}
trap cleanup EXIT

. benches/http.sh.inc # batch, left
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }
sql() { # db url statement
  if [ "$1" = postgres ]; then psql "$2" -qc "$3"; else python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()' "${2#sqlite://}" "$3"; fi
}

declare -A rates=()
for r in $(seq 1 "$rounds"); do
  for db in $dbs; do
    for n in $sizes; do
      if [ "$db" = postgres ]; then
        schema="courier_bench_growth_$$_${r}_$n"
        psql "$pg" -qc "CREATE SCHEMA $schema"
        url="$pg?options=-c%20search_path%3D$schema"
      else
        url="sqlite://$tmp/growth-$r-$n.db"
      fi
      # The quiet spell.
      COURIER_LOG=warn "$bin" serve --demo --db "$url" --listen "127.0.0.1:$port" >>"$tmp/log" 2>&1 &
      pid=$!; pids+=("$pid"); up
      batch 5000
      while [ "$(left)" != 0 ]; do sleep 0.2; done
      stop "$pid"
      sql "$db" "$url" "ANALYZE"
      [ "$db" = postgres ] && sql "$db" "$url" "ALTER TABLE tasks SET (autovacuum_analyze_threshold = 2000000000)"
      # The backlog, queued while the only executor serves another queue.
      COURIER_LOG=warn "$bin" serve --demo --queues idle --db "$url" --listen "127.0.0.1:$port" >>"$tmp/log" 2>&1 &
      pid=$!; pids+=("$pid"); up
      tq=$(date +%s.%N)
      batch "$n"
      tq=$(python3 -c "print(round($(date +%s.%N) - $tq, 1))")
      stop "$pid"
      # The drain.
      COURIER_LOG=warn "$bin" serve --demo --db "$url" --listen "127.0.0.1:$port" >>"$tmp/log" 2>&1 &
      pid=$!; pids+=("$pid"); up
      while :; do c=$(left); [ "$c" -lt "$n" ] && break; sleep 0.05; done
      t0=$(date +%s.%N); c0=$c
      while [ "$(left)" != 0 ]; do sleep 0.1; done
      t1=$(date +%s.%N)
      rate=$(python3 -c "print(round($c0 / ($t1 - $t0)))")
      echo "round $r $db N=$n: queued in $tq s; $c0 drained in $(python3 -c "print(round($t1 - $t0, 2))") s: $rate tasks/s"
      rates[$db-$n]="${rates[$db-$n]:-} $rate"
      stop "$pid"
      if [ "$db" = postgres ]; then psql "$pg" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null; else rm -f "$tmp"/growth-$r-$n.db*; fi
    done
  done
done
echo
for db in $dbs; do
  for n in $sizes; do
    python3 - "$db" "$n" ${rates[$db-$n]} <<'EOF'
import statistics, sys
db, n, xs = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
print(f"{db} N={n}: median {statistics.median(xs):.0f} tasks/s, spread {min(xs)}-{max(xs)}, rounds {xs}")
EOF
  done
done
