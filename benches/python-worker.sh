#!/usr/bin/env bash
# The figures of issue 26, point 4: one Python worker process (sdk/python)
# beside courier's Rust executor and beside Celery, rounds alternated in one
# run on this machine. Each round, on each database (a fresh SQLite file
# under target/, or a fresh PostgreSQL schema):
#
#   1. no-op throughput: N tasks created through POST /api/v1/tasks/batch
#      (1,000 a request), timed from the first create until GET
#      /api/v1/stats counts all N succeeded in their queue:
#        Python  `py.noop` (a plain `def`), ONE worker process
#                (`python -m courier_worker`, capacity PY_CAPACITY threads)
#                serving queue PY_QUEUE;
#        Rust    `demo.echo` (input null) on the executor of the same
#                `courier serve --demo`, queue `default`;
#      and once a round, Celery: the peer benchmark (../shared/bench/peers/
#      celery, copied to target/celery) with its own worker start and
#      measurement code: one prefork worker (c=2), rpc result backend,
#      CELERY_N `bench.noop_late` tasks (acks_late=True) published in a loop
#      and all results awaited (its variant `persistent+acks_late`).
#      Ratios: Python/Celery (goal >= 1), Python/Rust (goal >= 0.1).
#   2. create -> result latency: LAT_N sequential POST /api/v1/tasks with
#      wait_ms (after LAT_WARMUP), one keep-alive connection, `py.noop` vs
#      `demo.echo`: p50, p90. Ratio Python/Rust p50 (goal <= 2).
#   3. one `ctx.step` in Python: `py.steps` with K=0 and K=STEP_K no-op
#      steps, STEP_M tasks each through the batch endpoint as in 1 (the
#      worker runs PY_CAPACITY at once): (time(K) - time(0)) / (K * M), the
#      worker's cost per step at full load; and STEP_SEQ tasks of each, one
#      at a time with wait_ms: (p50(K) - p50(0)) / K, what one step adds to
#      a task's latency.
#
# Also, from /proc: CPU time a no-op task costs the worker process and
# `courier serve` (Python run) and `courier serve` (Rust run).
#
# Prints each round's figures, then for every figure the median over the
# rounds with its spread (min-max) and the rounds' values.
#
#   benches/python-worker.sh                      (from anywhere)
#   COURIER=target/debug/courier ROUNDS=1 N=300 LAT_N=100 STEP_M=50 benches/python-worker.sh
#
# Knobs (environment): COURIER (target/release/courier; not built here),
# ROUNDS (3), DB (sqlite | postgres | both; sqlite), N (5000), CELERY_N (N),
# CELERY (1; 0 skips it), LAT_N (500), LAT_WARMUP (50), STEP_M (200),
# STEP_K (100), STEP_SEQ (20; 0 skips the sequential step figure),
# PY_CAPACITY (16), PY_QUEUE (py: a queue only the worker serves; `default`
# shares the executor's queue: a start hint then reaches the worker or the
# executor, and the one that does not run the kind picks its task up at
# its next 2 s look at the store, PROTOCOL.md 7 -- seen here as a p90 of
# about 2 s for Python AND Rust tasks), PHASE_TIMEOUT (600 s a
# measurement), DATABASE_URL (postgres://postgres@127.0.0.1:5432/test).
# Needs python3 (the helper speaks HTTP itself), psql for DB=postgres,
# RabbitMQ on 127.0.0.1:5672 and pip access (first run) for Celery.
# Logs and databases: target/pyw-bench/<pid>/.
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
courier=${COURIER:-target/release/courier}
rounds=${ROUNDS:-3}
dbs=${DB:-sqlite}
[ "$dbs" = both ] && dbs="sqlite postgres"
n=${N:-5000}
celery_n=${CELERY_N:-$n}
celery=${CELERY:-1}
lat_n=${LAT_N:-500}
lat_warm=${LAT_WARMUP:-50}
step_m=${STEP_M:-200}
step_k=${STEP_K:-100}
step_seq=${STEP_SEQ:-20}
cap=${PY_CAPACITY:-16}
pyq=${PY_QUEUE:-py}
tmo=${PHASE_TIMEOUT:-600}
pg=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
helper="$root/benches/python_worker_bench.py"
say() { echo "[python-worker.sh] $*" >&2; }
[ -x "$courier" ] || { say "no courier binary at $courier (set COURIER=path; this script builds nothing)"; exit 1; }
courier=$(cd "$(dirname "$courier")" && pwd)/$(basename "$courier")
work="$root/target/pyw-bench/$$"
mkdir -p "$work"
results="$work/results.tsv"
: >"$results"

# ---------------------------------------------------------------- cleanup
server_pid=""
worker_pid=""
celery_pid=""
schemas=()
stop_pid() { # stop_pid PID NAME: TERM, up to 10 s, then KILL
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (pid $pid) ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$helper_pid" "the helper"
  stop_pid "$celery_pid" "the Celery driver"
  stop_pid "$worker_pid" "the Python worker"
  stop_pid "$server_pid" "courier serve"
  for s in "${schemas[@]}"; do psql "$pg" -qc "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  [ "$rc" = 0 ] || say "failed (exit $rc); logs in $work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_helper OUT CMD ARGS...: the Python helper, its JSON line into the
# file OUT; run in the background and waited for, never inside $(...), so
# that INT/TERM stop the script at once (bash defers a trap until a command
# substitution ends) and the cleanup stops the helper too. Every helper
# command has a deadline of its own (--timeout). A failure ends the script.
helper_pid=""
run_helper() {
  local out=$1; shift
  python3 "$helper" "$@" >"$out" &
  helper_pid=$!
  local rc=0
  wait "$helper_pid" || rc=$?
  helper_pid=""
  return "$rc"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
record() { printf '%s\t%s\n' "$1" "$2" >>"$results"; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]])' "$1" "$2"; }
calc() { python3 -c "print($1)"; }
# cpu_s PID: the process's CPU seconds so far (user + system, all threads).
cpu_s() { python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }

# ---------------------------------------------------------------- Celery setup
if [ "$celery" = 1 ]; then
  mkdir -p target/celery
  cp ../shared/bench/peers/celery/{bench.py,tasks.py,run.sh,requirements.txt} target/celery/
  if [ ! -x target/celery/.venv/bin/python ] || ! target/celery/.venv/bin/python -c 'import celery' 2>/dev/null; then
    say "creating target/celery/.venv (pip install -r requirements.txt)"
    rm -rf target/celery/.venv
    python3 -m venv target/celery/.venv
    timeout 600 target/celery/.venv/bin/pip install -q --disable-pip-version-check -r target/celery/requirements.txt
  fi
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || { say "RabbitMQ is not listening on 127.0.0.1:5672 (CELERY=0 skips Celery)"; exit 1; }
  # As the peer's run.sh does: a clean vhost of its own.
  say "recreating RabbitMQ vhost celerybench"
  timeout 60 rabbitmqctl -q delete_vhost celerybench >/dev/null 2>&1 || true
  timeout 60 rabbitmqctl -q add_vhost celerybench >/dev/null
  timeout 60 rabbitmqctl -q set_permissions -p celerybench guest '.*' '.*' '.*' >/dev/null
fi

# ---------------------------------------------------------------- one server
# start_server ROUND DB: `courier serve --demo` on a fresh database, plus the
# Python worker, both waited for; sets url.
start_server() {
  local r=$1 db=$2 dburl port
  if [ "$db" = sqlite ]; then
    rm -f "$work/r$r.db"*
    dburl="sqlite://$work/r$r.db"
  else
    local schema="courier_bench_pyw_$$_$r"
    psql "$pg" -qc "CREATE SCHEMA $schema"
    schemas+=("$schema")
    dburl="$pg?options=-c%20search_path%3D$schema"
  fi
  port=$(free_port)
  url="http://127.0.0.1:$port"
  say "round $r $db: starting courier serve --demo on $url"
  COURIER_LOG=warn "$courier" serve --demo --db "$dburl" --listen "127.0.0.1:$port" \
    >"$work/serve-r$r-$db.log" 2>&1 &
  server_pid=$!
  if ! run_helper /dev/null up "$url" --timeout 60; then tail -n 20 "$work/serve-r$r-$db.log" >&2; exit 1; fi
  say "round $r $db: starting one Python worker (capacity $cap, queue $pyq)"
  PYTHONPATH="$root/sdk/python:$root/benches" PYW_QUEUES="$pyq" PYW_CAPACITY="$cap" \
    python3 -m courier_worker --url "$url" --queues "$pyq" --capacity "$cap" --log-level WARNING \
    python_worker_bench:w >"$work/worker-r$r-$db.log" 2>&1 &
  worker_pid=$!
  if ! run_helper /dev/null kinds "$url" py.noop py.steps demo.echo --pid "$worker_pid" --timeout 30; then
    tail -n 20 "$work/worker-r$r-$db.log" >&2
    exit 1
  fi
}
stop_server() {
  stop_pid "$worker_pid" "the Python worker"; worker_pid=""
  stop_pid "$server_pid" "courier serve"; server_pid=""
  rm -f "$work"/r*.db*
}


# ---------------------------------------------------------------- rounds
say "$(date -u '+%F %T UTC'): $rounds round(s) on $dbs; N=$n, Celery N=$celery_n, latency $lat_n after $lat_warm," \
  "steps K=$step_k M=$step_m (sequential $step_seq), Python capacity $cap on queue $pyq; courier $courier"
for r in $(seq 1 "$rounds"); do
  if [ "$celery" = 1 ]; then
    say "round $r: Celery prefork c=2, rpc backend, acks_late, $celery_n tasks"
    target/celery/.venv/bin/python "$helper" celery target/celery "$celery_n" --timeout "$tmo" \
      >"$work/celery-r$r.json" 2>"$work/celery-r$r.log" &
    celery_pid=$!
    if ! wait "$celery_pid"; then celery_pid=""; tail -n 20 "$work/celery-r$r.log" >&2; exit 1; fi
    celery_pid=""
    c=$(field "$work/celery-r$r.json" per_s)
    record "celery" "$c"
    echo "round $r: Celery prefork c=2 rpc acks_late: $c tasks/s ($celery_n tasks)"
  fi
  for db in $dbs; do
    start_server "$r" "$db"
    # 1. throughput; Rust and Python in turn, the first alternating by round.
    if [ $((r % 2)) = 1 ]; then order="rust py"; else order="py rust"; fi
    for who in $order; do
      if [ "$who" = rust ]; then
        say "round $r $db: Rust executor, $n demo.echo"
        rs0=$(cpu_s "$server_pid")
        run_helper "$work/o.json" throughput "$url" demo.echo "$n" --timeout "$tmo"
        rt=$(field "$work/o.json" per_s)
        rs1=$(cpu_s "$server_pid")
      else
        say "round $r $db: Python worker, $n py.noop"
        w0=$(cpu_s "$worker_pid"); s0=$(cpu_s "$server_pid")
        run_helper "$work/o.json" throughput "$url" py.noop "$n" --queue "$pyq" --timeout "$tmo"
        pt=$(field "$work/o.json" per_s)
        w1=$(cpu_s "$worker_pid"); s1=$(cpu_s "$server_pid")
      fi
    done
    record "$db py_tput" "$pt"; record "$db rust_tput" "$rt"
    line="round $r $db: no-op throughput Python $pt tasks/s, Rust $rt tasks/s, Python/Rust $(calc "round($pt / $rt, 3)")"
    if [ "$celery" = 1 ]; then
      line="$line, Python/Celery $(calc "round($pt / $c, 2)")"
      record "$db py/celery" "$(calc "$pt / $c")"
    fi
    record "$db py/rust" "$(calc "$pt / $rt")"
    echo "$line"
    wus=$(calc "round(($w1 - $w0) / $n * 1e6)"); sus=$(calc "round(($s1 - $s0) / $n * 1e6)")
    rus=$(calc "round(($rs1 - $rs0) / $n * 1e6)")
    record "$db py_worker_cpu_us" "$wus"; record "$db py_server_cpu_us" "$sus"; record "$db rust_server_cpu_us" "$rus"
    echo "round $r $db: CPU a no-op task: Python: worker process $wus us + courier serve $sus us (wall $(calc "round(1e6 / $pt)") us a task); Rust: courier serve $rus us (wall $(calc "round(1e6 / $rt)") us)"
    # 2. latency, alternating the first likewise.
    for who in $order; do
      if [ "$who" = rust ]; then
        say "round $r $db: sync-wait latency demo.echo, $lat_n after $lat_warm"
        run_helper "$work/rl.json" latency "$url" demo.echo "$lat_n" --warmup "$lat_warm" --timeout "$tmo"
      else
        say "round $r $db: sync-wait latency py.noop, $lat_n after $lat_warm"
        run_helper "$work/pl.json" latency "$url" py.noop "$lat_n" --warmup "$lat_warm" --queue "$pyq" --timeout "$tmo"
      fi
    done
    p50=$(field "$work/pl.json" p50_ms); p90=$(field "$work/pl.json" p90_ms)
    r50=$(field "$work/rl.json" p50_ms); r90=$(field "$work/rl.json" p90_ms)
    record "$db py_p50_ms" "$p50"; record "$db py_p90_ms" "$p90"
    record "$db rust_p50_ms" "$r50"; record "$db rust_p90_ms" "$r90"
    record "$db py/rust_p50" "$(calc "$p50 / $r50")"
    echo "round $r $db: create->result p50 Python $p50 ms (p90 $p90), Rust $r50 ms (p90 $r90), Python/Rust p50 $(calc "round($p50 / $r50, 2)")"
    # 3. ctx.step: batch at full load, then (optionally) one at a time.
    say "round $r $db: py.steps K=0, $step_m tasks"
    run_helper "$work/o0.json" throughput "$url" py.steps "$step_m" --queue "$pyq" --input '{"k": 0}' --timeout "$tmo"
    say "round $r $db: py.steps K=$step_k, $step_m tasks"
    run_helper "$work/ok.json" throughput "$url" py.steps "$step_m" --queue "$pyq" --input "{\"k\": $step_k}" --timeout "$tmo"
    t0=$(field "$work/o0.json" s); tk=$(field "$work/ok.json" s)
    us=$(calc "round(($tk - $t0) / ($step_k * $step_m) * 1e6, 1)")
    record "$db step_batch_us" "$us"
    echo "round $r $db: ctx.step at full load (batch of $step_m, $cap at once): ($tk s - $t0 s) / ($step_k x $step_m) = $us us a step (worker throughput $(calc "round($step_k * $step_m / ($tk - $t0))") steps/s)"
    if [ "$step_seq" -gt 0 ]; then
      say "round $r $db: py.steps one at a time, K=0 and K=$step_k, $step_seq each"
      run_helper "$work/s0.json" latency "$url" py.steps "$step_seq" --warmup 2 --queue "$pyq" --input '{"k": 0}' --timeout "$tmo"
      run_helper "$work/sk.json" latency "$url" py.steps "$step_seq" --warmup 2 --queue "$pyq" --input "{\"k\": $step_k}" --timeout "$tmo"
      a0=$(field "$work/s0.json" p50_ms); ak=$(field "$work/sk.json" p50_ms)
      ms=$(calc "round(($ak - $a0) / $step_k, 3)")
      record "$db step_seq_ms" "$ms"
      echo "round $r $db: ctx.step one task at a time (sync wait, p50 of $step_seq): ($ak ms - $a0 ms) / $step_k = $ms ms a step"
    fi
    stop_server
  done
done

# ---------------------------------------------------------------- medians
echo "== medians of $rounds round(s) (spread min-max; rounds in order)"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for l in open(sys.argv[1]):
    k, v = l.rstrip("\n").split("\t")
    rows.setdefault(k, []).append(float(v))
names = {
    "celery": ("Celery prefork c=2 rpc acks_late throughput", "tasks/s", 0),
    "py_tput": ("Python worker no-op throughput", "tasks/s", 0),
    "rust_tput": ("Rust executor no-op throughput", "tasks/s", 0),
    "py/celery": ("Python/Celery throughput (goal >= 1)", "x", 2),
    "py/rust": ("Python/Rust throughput (goal >= 0.1)", "x", 3),
    "py_p50_ms": ("Python create->result p50", "ms", 2),
    "py_p90_ms": ("Python create->result p90", "ms", 2),
    "rust_p50_ms": ("Rust create->result p50", "ms", 2),
    "rust_p90_ms": ("Rust create->result p90", "ms", 2),
    "py/rust_p50": ("Python/Rust p50 (goal <= 2)", "x", 2),
    "py_worker_cpu_us": ("CPU a Python no-op task, the worker process", "us", 0),
    "py_server_cpu_us": ("CPU a Python no-op task, courier serve", "us", 0),
    "rust_server_cpu_us": ("CPU a Rust no-op task, courier serve", "us", 0),
    "step_batch_us": ("ctx.step at full load, (T(K)-T(0))/(K*M)", "us", 1),
    "step_seq_ms": ("ctx.step one task at a time, (p50(K)-p50(0))/K", "ms", 3),
}
for key, xs in rows.items():
    db, _, m = key.rpartition(" ")
    label, unit, nd = names[m]
    f = lambda x: f"{x:.{nd}f}"
    where = f"{db}: " if db else ""
    print(f"{where}{label}: median {f(statistics.median(xs))} {unit}, spread {f(min(xs))}-{f(max(xs))}, rounds {[float(f(x)) for x in xs]}")
EOF
