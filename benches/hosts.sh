#!/usr/bin/env bash
# Scale-out across simulated hosts (benches/hosts.rs): brings the hosts of
# tests/hosts/net.sh up, then runs the benchmark inside the web host's
# network namespace, so that it reaches PostgreSQL, RabbitMQ and the
# executors over the bridge like every other host. Needs root. Run from the
# repository root with nothing else running. `BENCH_IDLE=1 benches/hosts.sh`
# measures instead what the hosts cost with nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/hosts/net.sh up
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="ip netns exec courier-web"
cargo bench --quiet --bench hosts 2>/dev/null
