#!/usr/bin/env bash
# The recording proxy's cost per RPC: `harness stress` of the release reaper, alternately direct
# and with containerd-shim-record-v2 in front of it (recording to a temp dir), ROUNDS times each;
# prints each round's p50 per operation and the median difference (the proxy relays each of
# create, start, wait and delete once). Needs root and release builds
# (cargo build --release -p harness -p containerd-shim-reaper).
# Usage: benches/record-overhead.sh [TASKS [ROUNDS]]      (default 2000 tasks, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
me=benches/record-overhead.sh
tasks=${1:-2000}
rounds=${2:-3}
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
rel=$target_dir/release
for b in harness containerd-shim-reaper-v2 containerd-shim-record-v2; do
  [ -x "$rel/$b" ] || { echo "$me: $rel/$b missing: cargo build --release -p harness -p containerd-shim-reaper" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "$me: needs root (shim sockets, cgroups)" >&2; exit 2; }
command -v jq >/dev/null || { echo "$me: jq missing: run ci/setup.sh" >&2; exit 2; }

dir=$(mktemp -d /tmp/record-overhead-XXXXXX)
trap 'rm -rf "$dir"' EXIT
proxy=$dir/containerd-shim-record-v2
cat >"$proxy" <<EOF
#!/bin/sh
RECORD_SHIM=$rel/containerd-shim-reaper-v2 RECORD_DIR=$dir/rec exec $rel/containerd-shim-record-v2 "\$@"
EOF
chmod +x "$proxy"

p50s() { # shim -> "create start wait delete lifecycle" p50 in µs
  "$rel/harness" stress --shim "$1" -n "$tasks" -p 1 --format json |
    jq -r '[.latency.create, .latency.start, .latency.wait, .latency.delete, .latency.lifecycle] | map(."p50-us") | @tsv'
}

echo "round  shim     create  start  wait  delete  lifecycle   (p50, µs; $tasks tasks, -p 1)"
: >"$dir/diffs"
for r in $(seq "$rounds"); do
  direct=$(p50s "$rel/containerd-shim-reaper-v2")
  proxied=$(p50s "$proxy")
  printf '%-6s %-8s %s\n' "$r" direct "$direct" "$r" proxied "$proxied" | tr '\t' ' '
  paste <(tr '\t' '\n' <<<"$direct") <(tr '\t' '\n' <<<"$proxied") | awk '{printf "%d ", $2 - $1} END {print ""}' >>"$dir/diffs"
done
echo "median difference (proxied - direct), µs: create start wait delete lifecycle"
for col in 1 2 3 4 5; do
  awk -v c="$col" '{print $c}' "$dir/diffs" | sort -n | awk '{a[NR]=$1} END {printf "%s ", a[int((NR+1)/2)]}'
done
echo
echo "recorded: $(cat "$dir"/rec/*/*/session.jsonl | wc -l) entries"
