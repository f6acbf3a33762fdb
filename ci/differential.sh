#!/usr/bin/env bash
# Differential check: the mock containerd against a real one. Starts a PRIVATE Debian
# containerd 1.6 (own root, state, sockets and config in a temp dir; target/debug first on its
# PATH), builds the harness with `--features containerd`, and runs the lifecycle and exec groups
# (the signal scenarios live in them: lifecycle/sig*, lifecycle/kill-all, exec/sigterm) through
# both, with the reaper shim and with Debian's runc shim. Fails on any fidelity difference.
# Usage: ci/differential.sh [extra `harness run` args, e.g. --skip exec/output]
#   DIFF_SHIMS="reaper runc" (default) selects the shims; DIFF_FILTERS="lifecycle/* exec/*"
#   (default) the scenarios; the JSON reports are written to target/differential/<shim>.json.
# Needs root (containerd, runc, shim sockets under /run/containerd/s).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in containerd containerd-shim-runc-v2 runc protoc; do
  command -v "$tool" >/dev/null || { echo "ci/differential.sh: $tool missing: run ci/setup.sh" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "ci/differential.sh: needs root (containerd, runc)" >&2; exit 2; }

cargo build -p containerd-shim-reaper --bins
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"

reports="$target/../differential"
mkdir -p "$reports"
dir="$(mktemp -d /tmp/harness-diff-XXXXXX)"
# Our own copy: other builds in the shared target dir may replace target/debug/harness meanwhile
# with one built without the feature.
for attempt in 1 2 3; do
  cargo build -p harness --features containerd --bins
  cp "$target/harness" "$dir/harness"
  grep -qa "harness was built without the" "$dir/harness" || break
  [ "$attempt" = 3 ] && { echo "ci/differential.sh: target/debug/harness keeps being rebuilt without the feature" >&2; exit 2; }
done
ctd_pid=""
cleanup() {
  if [ -n "$ctd_pid" ] && kill -0 "$ctd_pid" 2>/dev/null; then
    kill -TERM "$ctd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ctd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ctd_pid" 2>/dev/null || true
    wait "$ctd_pid" 2>/dev/null || true
  fi
  # Mounts of the state dir (none expected: root.path is absolute) would make removal fail.
  { grep -o " $dir[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$dir/c.sock"

[ttrpc]
  address = "$dir/c.sock.ttrpc"
EOF

PATH="$target:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
ctd_pid=$!
for _ in $(seq 200); do
  [ -S "$dir/c.sock" ] && ctr --address "$dir/c.sock" version >/dev/null 2>&1 && break
  kill -0 "$ctd_pid" 2>/dev/null || { echo "ci/differential.sh: containerd exited:" >&2; tail -20 "$dir/containerd.log" >&2; exit 2; }
  sleep 0.1
done
ctr --address "$dir/c.sock" version >/dev/null || { echo "ci/differential.sh: containerd not ready" >&2; exit 2; }

filters=()
set -f  # the filters are harness globs, not file names
for f in ${DIFF_FILTERS:-lifecycle/* exec/*}; do filters+=(--filter "$f"); done
set +f
status=0
run() { # run NAME SHIM RUNTIME
  echo "== differential: $1 ($3) against containerd 1.6 at $dir/c.sock" >&2
  "$dir/harness" run --containerd "$dir/c.sock" --shim "$2" --runtime "$3" \
    --containerd-version 1.6 "${filters[@]}" \
    --report "$reports/$1.json" --format json "${@:4}" || status=1
}
for shim in ${DIFF_SHIMS:-reaper runc}; do
  case "$shim" in
    reaper) run reaper "$target/containerd-shim-reaper-v2" io.containerd.reaper.v2 "$@" ;;
    runc) run runc "$(command -v containerd-shim-runc-v2)" io.containerd.runc.v2 "$@" ;;
    *) echo "ci/differential.sh: DIFF_SHIMS: unknown shim $shim (reaper, runc)" >&2; exit 2 ;;
  esac
done
if [ "$status" != 0 ]; then
  echo "ci/differential.sh: fidelity differences (reports: see above); containerd log tail:" >&2
  tail -20 "$dir/containerd.log" >&2
  exit 1
fi
echo "ci/differential.sh: the mock matches containerd 1.6 for the reaper and the runc shim"
