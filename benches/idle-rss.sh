#!/usr/bin/env bash
# Idle RSS of a reaper server right after `start` (no task, no containerd), for each build
# profile given, alternating, ROUNDS rounds: VmRSS and its anonymous / file-backed split from
# /proc/<pid>/status. The server is found by the socket `start` printed (its listener) and ended
# by that pid once its executable is checked to be the binary under test.
# Usage: benches/idle-rss.sh [ROUNDS [PROFILE...]]   (default 3 rounds of `shim` and `release`;
#   build them first: cargo build --profile shim -p containerd-shim-reaper; cargo build --release -p containerd-shim-reaper)
set -euo pipefail
cd "$(dirname "$0")/.."
me=benches/idle-rss.sh
rounds=${1:-3}
shift || true
if [ $# -gt 0 ]; then profiles=("$@"); else profiles=(shim release); fi
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
command -v ss >/dev/null || { echo "$me: ss missing (apt-get install iproute2)" >&2; exit 2; }
for p in "${profiles[@]}"; do
  [ -x "$target_dir/$p/containerd-shim-reaper-v2" ] ||
    { echo "$me: $target_dir/$p/containerd-shim-reaper-v2 missing: cargo build --profile $p -p containerd-shim-reaper" >&2; exit 2; }
done
dir=$(mktemp -d /tmp/idle-rss-XXXXXX)
trap 'rm -rf "$dir"' EXIT

one() { # one PROFILE: prints "PROFILE VmRSS RssAnon RssFile" in kB
  local shim="$target_dir/$1/containerd-shim-reaper-v2" b="$dir/b$RANDOM" ns="idle-rss-$$" addr sock pid
  mkdir -p "$b"
  addr=$(cd "$b" && TTRPC_ADDRESS="$dir/none.ttrpc" GRPC_ADDRESS="$dir/none.sock" NAMESPACE="$ns" \
    timeout 10 "$shim" -namespace "$ns" -id "r$RANDOM" -address "$dir/none.sock" -publish-binary /bin/true start </dev/null)
  sock=${addr#unix://}
  pid=""
  for _ in $(seq 50); do
    pid=$(ss -xlpn 2>/dev/null | grep -F " $sock " | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || { echo "$me: no server listens on $sock" >&2; return 1; }
  [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$shim")" ] ||
    { echo "$me: pid $pid on $sock is not $shim" >&2; return 1; }
  sleep 1   # idle: what the server touched while starting, nothing after
  awk -v p="$1" '/^VmRSS|^RssAnon|^RssFile/ {v[$1]=$2} END {print p, v["VmRSS:"], v["RssAnon:"], v["RssFile:"]}' "/proc/$pid/status"
  kill "$pid"
  for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  rm -rf "$b"
}

echo "profile VmRSS_kB RssAnon_kB RssFile_kB"
for _ in $(seq "$rounds"); do
  for p in "${profiles[@]}"; do one "$p"; done
done
