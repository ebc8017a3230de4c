#!/usr/bin/env bash
# courier beside Celery, in one run on this machine (issue 14's AMQP goal):
# Celery's own peer benchmark (../shared/bench/peers/celery, copied to
# target/celery) with one prefork worker (c=2) on RabbitMQ with the rpc
# result backend, then `cargo bench --bench peers`: courier with two
# executor processes on the same RabbitMQ and a PostgreSQL store. Prints
# both throughput tables and the ratio to Celery's persistent+acks_late.
#
#   benches/celery.sh              # N=10000 tasks each (about 8 minutes)
#   N=2000 benches/celery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}

rm -rf target/celery
cp -r ../shared/bench/peers/celery target/celery
rm -rf target/celery/results
# (FAILOVERS is a space: run.sh takes an empty value for its default.)
(cd target/celery && RUNS=1 SUITES="rpc:prefork:$N:200:all" FAILOVERS=" " ./run.sh >/dev/null)
summary=$(ls -d target/celery/results/*/ | tail -n 1)summary.md

courier=$(BENCH_TASKS=$N cargo bench --bench peers 2>/dev/null | grep '^|')

python3 - "$summary" "$courier" <<'PY'
import re, sys
summary, courier = open(sys.argv[1]).read(), sys.argv[2]
print("### Celery, same run: throughput (end-to-end tasks/s, publish rate in parentheses)\n")
lines = summary.splitlines()
head = next(i for i, l in enumerate(lines) if l.startswith("| backend | pool | N | transient"))
print("\n".join(lines[head:head + 2]))
row = next(l for l in lines[head + 2:] if l.startswith("| rpc | prefork"))
print(row + "\n")
cells = [c.strip() for c in row.strip("|").split("|")]
celery = float(re.match(r"[\d.]+", cells[5]).group())  # persistent+acks_late
print(courier + "\n")
for l in courier.splitlines()[2:]:
    c = [x.strip() for x in l.strip("|").split("|")]
    print(f"- {c[0]}: {float(c[1]):.0f} ÷ Celery's persistent+acks_late {celery:.0f} = **{float(c[1]) / celery:.1f}×**")
PY
