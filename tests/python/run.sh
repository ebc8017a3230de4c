#!/usr/bin/env bash
# The Python SDK's tests: unit tests (no server) and the conformance cases
# against the debug `courier` binary on SQLite and PostgreSQL
# ($DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test).
#
#   bash tests/python/run.sh [PYTEST ARGS...]     (from anywhere)
#
# Installs what it needs itself: a virtualenv under the target directory
# ($CARGO_TARGET_DIR or ./target, `pyvenv`) with pytest and the SDK as
# `pip install ./sdk/python` installs it (rebuilt from the tree every run).
# Needs: `cargo build` done (or COURIER_BIN=/path/to/courier), python3
# (3.10 or later), psql. CI runs it in its stage `python_workers`, which
# counts pytest's closing line (`N passed, M failed in …`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
venv=$target/pyvenv
if [ ! -x "$venv/bin/pip" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    # Debian's python3 without ensurepip.
    echo "== installing python3-venv"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
fi
"$venv/bin/pip" install -q --disable-pip-version-check "pytest>=7"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$root/sdk/python"
export COURIER_BIN=${COURIER_BIN:-$target/debug/courier}
[ -x "$COURIER_BIN" ] || { echo "no $COURIER_BIN: run cargo build first" >&2; exit 1; }
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
cd "$root/sdk/python"
# -p no:cacheprovider: no .pytest_cache left in the tree.
exec "$venv/bin/pytest" -q -p no:cacheprovider "$@"
