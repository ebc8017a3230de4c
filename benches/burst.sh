#!/usr/bin/env bash
# A burst after a quiet spell (issue 24): on PostgreSQL, run 5,000 tasks,
# let the table be analyzed (as autovacuum does on a deployment that sat
# idle), then create N tasks through the batch endpoint and time how fast
# they drain. Each binary named on the command line runs the same script,
# alternated ROUNDS times, in a schema of its own; the median of every
# round is reported with its spread.
#
#   benches/burst.sh [N] [ROUNDS] BIN...    e.g. benches/burst.sh 20000 3 old/courier target/release/courier
set -euo pipefail
n=${1:-20000}
rounds=${2:-3}
shift 2
bins=("$@")
pg=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port/api/v1"

. "$(dirname "$0")/http.sh.inc" # batch, left

declare -A rates=()
for r in $(seq 1 "$rounds"); do
  for bin in "${bins[@]}"; do
    schema="courier_bench_burst_$$_$r"
    psql "$pg" -qc "CREATE SCHEMA $schema"
    url="$pg?options=-c%20search_path%3D$schema"
    COURIER_LOG=warn "$bin" serve --demo --db "$url" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
    pid=$!
    up
    batch 5000
    while [ "$(left)" != 0 ]; do sleep 0.2; done
    psql "$url" -qc "ANALYZE tasks"
    sleep 1
    t0=$(date +%s.%N)
    batch "$n"
    while [ "$(left)" != 0 ]; do sleep 0.1; done
    t1=$(date +%s.%N)
    rate=$(python3 -c "print(round($n / ($t1 - $t0)))")
    echo "round $r $bin: $n tasks after a quiet ANALYZE in $(python3 -c "print(round($t1 - $t0, 2))") s: $rate tasks/s"
    rates[$bin]="${rates[$bin]:-} $rate"
    kill -TERM $pid; wait $pid 2>/dev/null || true
    psql "$pg" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null
  done
done
for bin in "${bins[@]}"; do
  python3 - "$bin" ${rates[$bin]} <<'EOF'
import statistics, sys
bin, xs = sys.argv[1], [int(x) for x in sys.argv[2:]]
print(f"{bin}: median {statistics.median(xs)} tasks/s, spread {min(xs)}-{max(xs)}, rounds {xs}")
EOF
done
