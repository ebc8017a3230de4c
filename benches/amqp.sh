#!/usr/bin/env bash
# The network transports beside the raw lapin and LISTEN/NOTIFY limits of this machine, in one run:
# first ../shared/bench/limits' persistent-with-confirms AMQP cases and its
# LISTEN/NOTIFY round trip, then `cargo bench --bench amqp` (AMQP and the
# PostgreSQL transport with 1-3 executor processes, the socket transport and
# the in-process flow). Run from the repository root with
# nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
limits=../shared/bench/limits
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
echo "## raw lapin and LISTEN/NOTIFY (${limits}, median of 3 runs)"
echo
for case in amqp/rtt-persistent-confirm amqp/oneway-persistent-confirm-prefetch1000 pg/listen-notify-rtt; do
  cargo run --quiet --release --manifest-path "$limits/Cargo.toml" --target-dir target/limits -- \
    --runs 3 --markdown "$case" 2>/dev/null | sed -n '/^| `\(amqp\|pg\)/p'
done
echo
echo "## courier"
echo
cargo bench --quiet --bench amqp 2>/dev/null
