#!/usr/bin/env bash
# The OpenAPI document against a real server: schemathesis (every check,
# the stateful phase included) runs the document `courier serve --demo`
# serves against that same server, and fails on any disagreement.
#
#   bash tests/api/schemathesis.sh [SEED]
#
# Installs schemathesis into a virtualenv of its own (./target/schemathesis)
# on first use. CI passes a fixed seed so that a run is reproducible; run
# it without one to explore new cases.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/schemathesis
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis>=4.3,<5"
fi
bin=${COURIER_BIN:-target/debug/courier}
[ -x "$bin" ] || cargo build --quiet --bin courier
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A wait of at most 2 s (the document's `wait_ms` maximum follows the
# server's cap), so that no request outlasts schemathesis's 10 s timeout.
"$bin" serve --demo --db "sqlite://$dir/api.db" --listen "127.0.0.1:$port" --max-wait-ms 2000 \
  >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
seed=()
[ $# -ge 1 ] && seed=(--seed "$1")
cd "$dir"
"$OLDPWD/$venv/bin/st" run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --checks all --max-examples 20 --no-color "${seed[@]}"
