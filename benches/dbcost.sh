#!/usr/bin/env bash
# The database's cost per task (issue 24, point 7): what one PostgreSQL
# spends on each task courier runs, beside the raw batched limit
# (../shared/bench/limits, case pg/task-batch100stmt-c1: per 100 tasks one
# INSERT … FROM unnest and one UPDATE … = ANY, each its own transaction) in
# the same run, rounds alternated.
#
# Measured around each run, divided by its tasks:
#   cpu   PostgreSQL's CPU time: the postmaster's own and its reaped
#         children's (utime, stime, cutime, cstime in /proc/<pid>/stat),
#         plus every live child's; backends, WAL writer, checkpointer and
#         autovacuum included.
#   wal   bytes of WAL written (pg_stat_wal.wal_bytes).
#   stmts statements executed (pg_stat_statements, summed calls; trigger
#         bodies counted too, as their statements run).
#   xacts transactions committed or rolled back (pg_stat_database).
# courier's run: `courier serve --demo` on a schema of its own, N tasks of
# demo.echo created through the batch endpoint (1,000 a request) while the
# executor drains them, measured from before the first batch to the count
# that shows them all done. The limit's run: its tasks are the rows it
# inserted (pg_stat_database.tup_inserted).
#
# Needs root (it reads the postgres processes' /proc) and restarts
# PostgreSQL twice: once to load pg_stat_statements, once at the end to
# unload it (ALTER SYSTEM RESET), leaving the server as it found it.
#
#   benches/dbcost.sh [N] [ROUNDS]      e.g. benches/dbcost.sh 20000 3
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
rounds=${2:-3}
bin=${COURIER_BIN:-target/release/courier}
limits=${LIMITS_BIN:-../shared/bench/limits/target/release/limits}
pg=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port/api/v1"
restart_pg() {
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
  for _ in $(seq 1 100); do psql "$pg" -Atc 'select 1' >/dev/null 2>&1 && return; sleep 0.1; done
}
psql "$pg" -qc "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
restart_pg
trap 'psql "$pg" -qc "ALTER SYSTEM RESET shared_preload_libraries"; restart_pg' EXIT
psql "$pg" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"
psql "$pg" -qc "SET pg_stat_statements.track = 'all'" # per session; the default 'top' misses trigger bodies
psql "$pg" -qc "ALTER SYSTEM SET pg_stat_statements.track = 'all'"
psql "$pg" -qc "SELECT pg_reload_conf()" >/dev/null

snapshot() { # prints: cpu_us wal_bytes stmts xacts inserted
  python3 - "$pg" <<'EOF'
import os, subprocess, sys
pg = sys.argv[1]
def q(sql):
    return subprocess.check_output(["psql", pg, "-Atc", sql], text=True).strip()
datadir = q("show data_directory")
post = int(open(os.path.join(datadir, "postmaster.pid")).readline())
tick = os.sysconf("SC_CLK_TCK")
def fields(pid):
    s = open(f"/proc/{pid}/stat").read()
    return s[s.rindex(")") + 2:].split()
f = fields(post)
cpu = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            g = fields(int(d))
        except OSError:
            continue
        if int(g[1]) == post:  # ppid
            cpu += int(g[11]) + int(g[12])
stats = q("select (select wal_bytes from pg_stat_wal), (select coalesce(sum(calls),0) from pg_stat_statements), "
          "(select sum(xact_commit + xact_rollback) from pg_stat_database), (select sum(tup_inserted) from pg_stat_database)")
print(cpu * 1_000_000 // tick, *stats.split("|"))
EOF
}
. benches/http.sh.inc # batch, left
per_task() { # label tasks before after
  python3 - "$@" <<'EOF'
import sys
label, n = sys.argv[1], int(sys.argv[2])
a = [int(float(x)) for x in sys.argv[3].split()]
b = [int(float(x)) for x in sys.argv[4].split()]
cpu, wal, st, xa, _ = [(y - x) / n for x, y in zip(a, b)]
print(f"{label}: {n} tasks: cpu {cpu:.1f} us/task, wal {wal:.0f} B/task, {st:.2f} statements/task, {xa:.2f} transactions/task")
EOF
}

for r in $(seq 1 "$rounds"); do
  # courier
  schema="courier_bench_dbcost_$$_$r"
  psql "$pg" -qc "CREATE SCHEMA $schema"
  url="$pg?options=-c%20search_path%3D$schema"
  COURIER_LOG=warn "$bin" serve --demo --db "$url" --listen "127.0.0.1:$port" >/dev/null 2>&1 &
  pid=$!
  up
  batch 2000
  while [ "$(left)" != 0 ]; do sleep 0.1; done
  a=$(snapshot)
  batch "$n"
  while [ "$(left)" != 0 ]; do sleep 0.1; done
  b=$(snapshot)
  per_task "round $r courier" "$n" "$a" "$b"
  kill -TERM $pid; wait $pid 2>/dev/null || true
  psql "$pg" -qc "DROP SCHEMA $schema CASCADE" 2>/dev/null
  # the raw limit
  a=$(snapshot)
  DATABASE_URL="$pg" "$limits" --runs 1 --secs 5 --warmup 0 pg/task-batch100stmt-c1 >/dev/null 2>&1
  b=$(snapshot)
  inserted=$(python3 -c "print(int('$b'.split()[4]) - int('$a'.split()[4]))")
  per_task "round $r limit pg/task-batch100stmt-c1" "$inserted" "$a" "$b"
done
