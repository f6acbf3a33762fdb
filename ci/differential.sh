#!/usr/bin/env bash
# Differential check: the mock containerd against real ones. For each containerd release (1.6.20
# from Debian's package, 1.7.24 and 2.1.9 unpacked by ci/containerd-versions.sh into
# target/containerd/, 2.3.4 from the project's shared/containerd/) it starts a PRIVATE daemon (own root, state, sockets and config in a temp
# dir; target/debug first on its PATH), and runs the lifecycle and exec groups (the signal
# scenarios live in them: lifecycle/sig*, lifecycle/kill-all, exec/sigterm) through the daemon and
# through the mock in the matching dialect, with the reaper shim and with that release's own runc
# shim. Fails on any fidelity difference. The harness is built with `--features containerd`.
# Usage: ci/differential.sh [extra `harness run` args, e.g. --skip exec/output]
#   DIFF_VERSIONS="1.6 1.7 2.1 2.3" (default) selects the releases (2.3.4 is the project's
#   shared/containerd/2.3.4 beside the checkout); DIFF_SHIMS="reaper runc"
#   (default) the shims; DIFF_FILTERS="lifecycle/* exec/* sandbox/*" (default) the scenarios; the
#   JSON reports are written to target/differential/<release>-<shim>.json. The sandbox scenarios
#   go through the daemon's sandbox controller (sandboxer `shim`) from 2.0 on: with the reaper on
#   2.1 and 2.3 at least SANDBOX_SAME (8) of them must compare `same`, not be skipped.
# Needs root (containerd, runc, shim sockets under /run/containerd/s).
set -euo pipefail
cd "$(dirname "$0")/.."
me=ci/differential.sh

for tool in containerd containerd-shim-runc-v2 runc protoc; do
  command -v "$tool" >/dev/null || { echo "$me: $tool missing: run ci/setup.sh" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "$me: needs root (containerd, runc)" >&2; exit 2; }

cargo build -p containerd-shim-reaper --bins
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"
cache="$target/../containerd"

. ci/private-containerd.sh
dialect() { case "$1" in 2.1) echo 2.0 ;; *) echo "$1" ;; esac; }
for v in ${DIFF_VERSIONS:-1.6 1.7 2.1 2.3}; do
  b="$(containerd_bindir "$v")"
  [ -x "$b/containerd" ] && [ -x "$b/ctr" ] && [ -x "$b/containerd-shim-runc-v2" ] ||
    { echo "$me: containerd $v is missing in $b: run ci/setup.sh (2.3: the project's shared/containerd/2.3.4)" >&2; exit 2; }
done

reports="$target/../differential"
mkdir -p "$reports"
dir="$(mktemp -d /tmp/harness-diff-XXXXXX)"
# Our own copy: other builds in the shared target dir may replace target/debug/harness meanwhile
# with one built without the feature.
for attempt in 1 2 3; do
  cargo build -p harness --features containerd --bins
  cp "$target/harness" "$dir/harness"
  grep -qa "harness was built without the" "$dir/harness" || break
  [ "$attempt" = 3 ] && { echo "$me: target/debug/harness keeps being rebuilt without the feature" >&2; exit 2; }
done
cleanup() {
  containerd_stop
  # Mounts of the state dirs (none expected: root.path is absolute) would make removal fail.
  { grep -o " $dir[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

filters=()
set -f  # the filters are harness globs, not file names
for f in ${DIFF_FILTERS:-lifecycle/* exec/* sandbox/*}; do filters+=(--filter "$f"); done
set +f
status=0
# The namespace level of runc's cgroups (`/<ns>`, one per scenario) must not outlive a run.
ns_cgroups() { ls /sys/fs/cgroup/memory 2>/dev/null | grep '^harness-diff-' || true; }
cgroups_before=$(ns_cgroups)
for v in ${DIFF_VERSIONS:-1.6 1.7 2.1 2.3}; do
  b="$(containerd_bindir "$v")"
  d="$dir/$v"
  # The release's own runc shim next to ours, first on the daemon's PATH.
  containerd_start "$d" "$b" "$v" "$target:$b"
  run() { # run NAME SHIM RUNTIME
    echo "== differential: $1 ($3) against containerd $v at $d/c.sock (dialect $(dialect "$v"))" >&2
    "$dir/harness" run --containerd "$d/c.sock" --shim "$2" --runtime "$3" \
      --containerd-version "$(dialect "$v")" "${filters[@]}" \
      --report "$reports/$v-$1.json" --format json "${@:4}" || status=1
  }
  for shim in ${DIFF_SHIMS:-reaper runc}; do
    case "$shim" in
      reaper)
        run reaper "$target/containerd-shim-reaper-v2" io.containerd.reaper.v2 "$@"
        case "$v:${DIFF_FILTERS:-sandbox/*}" in
          2.*:*sandbox/*)
            same=$(jq '[.scenarios[] | select((.name | startswith("sandbox/")) and .verdict == "same")] | length' "$reports/$v-reaper.json")
            if [ "$same" -lt "${SANDBOX_SAME:-8}" ]; then
              echo "$me: containerd $v: only $same sandbox scenarios compared the same with the reaper (want ${SANDBOX_SAME:-8}): see $reports/$v-reaper.json" >&2
              status=1
            fi ;;
        esac ;;
      runc) run runc "$b/containerd-shim-runc-v2" io.containerd.runc.v2 "$@" ;;
      *) echo "$me: DIFF_SHIMS: unknown shim $shim (reaper, runc)" >&2; exit 2 ;;
    esac
  done
  if [ "$status" != 0 ]; then
    echo "$me: fidelity differences against containerd $v (reports: see above); its log tail:" >&2
    tail -20 "$d/containerd.log" >&2
    exit 1
  fi
  containerd_stop
  echo "$me: the mock matches containerd $v for: ${DIFF_SHIMS:-reaper runc}" >&2
done
left=$(comm -13 <(echo "$cgroups_before" | sort) <(ns_cgroups | sort))
if [ -n "$left" ]; then
  echo "$me: cgroups of the run's namespaces left behind: $(echo $left)" >&2
  exit 1
fi
echo "$me: the mock matches containerd ${DIFF_VERSIONS:-1.6 1.7 2.1 2.3} for: ${DIFF_SHIMS:-reaper runc}"
