#!/usr/bin/env bash
# A client generated from the served OpenAPI document: openapi-python-client
# generates a Python client from the document `courier serve --demo`
# serves, and tests/api/python_client.py checks that every operation of the
# document made it into the client, then runs the README's four flows and a
# batch through it against that same server. Its last line is
# `python client: N passed, M failed`; it exits non-zero on any failure.
#
#   bash tests/api/python_client.sh
#
# Installs openapi-python-client into a virtualenv of its own
# (./target/openapi-python-client) on first use, pinned to one release
# series: before 1.0 a minor release may change what it generates.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/openapi-python-client
if [ ! -x "$venv/bin/openapi-python-client" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "openapi-python-client>=0.29,<0.30"
fi
bin=${COURIER_BIN:-target/debug/courier}
[ -x "$bin" ] || cargo build --quiet --bin courier
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
"$bin" serve --demo --db "sqlite://$dir/api.db" --listen "127.0.0.1:$port" >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
fail() {
  echo "$*" >&2
  echo "--- courier serve's log:" >&2
  tail -n 20 "$dir/serve.log" >&2
  echo "python client: 0 passed, 1 failed"
  exit 1
}
# Up, and its executor registered: the document then lists the kinds it
# runs, and the client knows them.
for _ in $(seq 1 200); do
  curl -sf "$base/api/v1/kinds" 2>/dev/null | grep '"demo.echo"' >/dev/null && break
  sleep 0.1
done
curl -sf "$base/api/v1/kinds" | grep '"demo.echo"' >/dev/null || fail "courier serve --demo did not come up at $base"
curl -sf "$base/api/v1/openapi.json" -o "$dir/openapi.json" || fail "no document at $base/api/v1/openapi.json"
# No formatter run after generating (ruff is not installed); the metrics'
# content type read as text, which the generator knows.
cat >"$dir/config.json" <<'EOF'
{
  "post_hooks": [],
  "content_type_overrides": {"application/openmetrics-text; version=1.0.0; charset=utf-8": "text/plain"}
}
EOF
if ! "$venv/bin/openapi-python-client" generate --path "$dir/openapi.json" --config "$dir/config.json" \
  --meta none --output-path "$dir/courier_client" >"$dir/generate.log" 2>&1; then
  cat "$dir/generate.log"
  fail "openapi-python-client could not generate a client"
fi
# What the generator could not take, shown (the operations are checked below).
grep -iE 'warning|unable|error' -A 8 "$dir/generate.log" || true
"$venv/bin/python" tests/api/python_client.py "$base" "$dir/openapi.json" "$dir/courier_client"
