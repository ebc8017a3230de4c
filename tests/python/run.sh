#!/usr/bin/env bash
# The Python SDK's tests: unit tests (no server) and integration tests
# against the debug `courier` binary on SQLite and PostgreSQL
# ($DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).
# Needs: `cargo build` done, python3 with venv, psql.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/pyvenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -e "$root/sdk/python[test]"
export COURIER_BIN=${COURIER_BIN:-$target/debug/courier}
[ -x "$COURIER_BIN" ] || { echo "no $COURIER_BIN: run cargo build first" >&2; exit 1; }
cd "$root/sdk/python"
exec "$venv/bin/pytest" -q "$@"
