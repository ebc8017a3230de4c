#!/usr/bin/env bash
# The dashboard's browser test: headless Debian Chromium, driven by
# playwright-core, against a real `courier serve --demo` on a free loopback port.
#
# Needs the courier binary: target/debug/courier (run `cargo build` first) or
# COURIER_BIN=/path/to/courier. CHROMIUM_BIN overrides /usr/bin/chromium.
# Exits non-zero on any failure; the screenshot lands in target/dashboard.png.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "== installing Debian's chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq chromium >/dev/null
fi

cd "$here"
echo "== npm ci"
# playwright-core downloads no browser; the variable only makes sure of it.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

echo "== node --test"
exec node --test --test-concurrency=1 dashboard.test.mjs
