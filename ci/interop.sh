#!/usr/bin/env bash
# Interop check with the Rust runc shim (crates.io `containerd-runc-shim`, binary
# containerd-shim-runc-v2-rs): under containerd dialect 2.0 it must pass the full lifecycle,
# under 1.6 it must be reported incompatible (JSON bootstrap) with its leaked server ended.
# Installs the shim into /opt/runc-rs when missing (about 6 minutes to build).
# Usage: ci/interop.sh            (set RUNC_RS_ROOT to install elsewhere; root needed for runc)
set -euo pipefail
cd "$(dirname "$0")/.."

root="${RUNC_RS_ROOT:-/opt/runc-rs}"
bin="$root/bin/containerd-shim-runc-v2-rs"

ci/setup.sh
if [ ! -x "$bin" ]; then
  echo "ci/interop.sh: $bin missing; installing containerd-runc-shim (about 6 minutes)" >&2
  cargo install --locked containerd-runc-shim --root "$root" \
    || cargo install containerd-runc-shim --root "$root"
fi
if [ "$root" != /opt/runc-rs ]; then
  echo "ci/interop.sh: the tests look for /opt/runc-rs/bin/containerd-shim-runc-v2-rs; linking it" >&2
  mkdir -p /opt/runc-rs/bin
  ln -sf "$bin" /opt/runc-rs/bin/containerd-shim-runc-v2-rs
fi
cargo build -p containerd-shim-reaper -p harness --bins
cargo test -p harness --test core -- --ignored --exact \
  interop::interop_runc_rs_lifecycle_dialect_2_0 interop::interop_runc_rs_is_incompatible_with_1_6 \
  interop::interop_runc_rs_is_unsupported_under_1_7
echo "ci/interop.sh: containerd-shim-runc-v2-rs passes under 2.0, is refused under 1.6 and 1.7"
