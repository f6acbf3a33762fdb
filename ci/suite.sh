#!/usr/bin/env bash
# Builds the harness and the bundled reaper shim, then runs the conformance suite against it.
# Extra arguments go to `harness run` (e.g. --format json, --filter 'lifecycle/*').
set -euo pipefail
cd "$(dirname "$0")/.."
ci/setup.sh
cargo build --release --workspace --bins
exec target/release/harness run "$@"
