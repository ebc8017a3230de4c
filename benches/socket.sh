#!/usr/bin/env bash
# The socket transport beside the raw Unix-socket limits of this machine, in
# one run: first ../shared/bench/limits' `uds` cases (ping-pong and one-way
# JSON frames with a child process), then `cargo bench --bench socket`.
# Run from the repository root with nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
limits=../shared/bench/limits
echo "## raw Unix socket (${limits}, uds group, median of 3 runs)"
echo
cargo run --quiet --release --manifest-path "$limits/Cargo.toml" --target-dir target/limits -- \
  --runs 3 --markdown uds 2>/dev/null | sed -n '/^|/p'
echo
echo "## courier over the socket transport"
echo
cargo bench --quiet --bench socket 2>/dev/null
