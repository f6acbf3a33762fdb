#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every test, clippy and fmt.
# Usage: ci/test.sh            (from anywhere inside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh
# The tests drive the built binaries (shim and harness), so build them first.
cargo build --workspace --bins
# The harness with its `containerd` feature (`harness cri`, the differential mode): the Kubernetes
# guide's test installs it, and the feature tests below use it; built here, both reuse it.
cargo build -p harness --features containerd --bins
cargo test --workspace --no-fail-fast
ci/differential.sh  # fidelity: the mock against private containerds 1.6.20, 1.7.24 and 2.1.9 (reaper and runc shims)
cargo test -p harness --features containerd --lib --test differential --test cri  # the differential code's unit tests (it catches a differing mock) and `harness cri` under real 1.7.24 and 2.1.9 with their CRI plugins
# Smoke check of the criterion benches: each runs once (no timing is judged).
cargo test -p reaper-benches --benches
cargo clippy --workspace --all-targets --features harness/containerd -- -D warnings  # the differential code too
cargo fmt --all --check
echo "ci/test.sh: all green"
