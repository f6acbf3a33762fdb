#!/usr/bin/env bash
# Times `ctr run --rm ... /bin/true` under a real, private containerd (Debian's 1.6 by default),
# alternating the reaper runtime, that release's Go runc shim and the do-nothing stub shim of
# the benches (the floor: containerd's and ctr's own cost, with a shim that answers every call
# at once and runs nothing), and prints each one's median and the ratios. Needs root,
# containerd, runc and busybox-static (ci/setup.sh installs them and the other releases) and
# release builds of the reaper and the stub
# (cargo build --release -p containerd-shim-reaper -p reaper-benches --bins).
# Usage: benches/ctr-run.sh [RUNS [RELEASE]]      (default 30 runs of each, release 1.6)
#   REAPER_SHIM=target/shim/containerd-shim-reaper-v2 times another build of the reaper (that one:
#   the build operators install, `cargo build --profile shim -p containerd-shim-reaper`).
set -euo pipefail
cd "$(dirname "$0")/.."
me=benches/ctr-run.sh
runs=${1:-30}
release=${2:-1.6}
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
cache="$target_dir/containerd"
. ci/private-containerd.sh
b="$(containerd_bindir "$release")"
shim=${REAPER_SHIM:-$target_dir/release/containerd-shim-reaper-v2}
stub=$target_dir/release/containerd-shim-stub-v2
busybox=$(command -v busybox || true)
for need in "$b/containerd" "$b/ctr" "$b/containerd-shim-runc-v2" "$(command -v runc || true)" "$busybox"; do
  [ -x "$need" ] || { echo "$me: ${need:-runc or busybox} missing: run ci/setup.sh" >&2; exit 2; }
done
for need in "$shim" "$stub"; do
  [ -x "$need" ] || { echo "$me: $need missing: cargo build --release -p containerd-shim-reaper -p reaper-benches --bins" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "$me: needs root (containerd, shim sockets, cgroups)" >&2; exit 2; }

dir=$(mktemp -d /tmp/reaper-ctr-run-XXXXXX)
cleanup() {
  containerd_stop
  { grep -o " $dir[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
  # runc leaves the namespace level of its cgroups (`<controller>/ctr-run`); empty, it goes.
  for cg in /sys/fs/cgroup/*/ctr-run /sys/fs/cgroup/ctr-run; do
    [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

# Two rootfs: the reaper runs the host's /bin/true; runc needs one inside its rootfs.
mkdir -p "$dir/host-rootfs" "$dir/busybox-rootfs/bin" "$dir/shims"
cp "$busybox" "$dir/busybox-rootfs/bin/busybox"
ln -s busybox "$dir/busybox-rootfs/bin/true"
ln -s "$shim" "$dir/shims/containerd-shim-reaper-v2"
ln -s "$stub" "$dir/shims/containerd-shim-stub-v2"
# The release's own runc shim next to ours, first on the daemon's PATH.
containerd_start "$dir/daemon" "$b" "$release" "$dir/shims:$b"
ctr="$b/ctr"
sock="$dir/daemon/c.sock"

# Runs one `ctr run --rm` and prints its wall time in microseconds.
one() {
  local runtime=$1 rootfs=$2 id=$3 t0 t1
  t0=$(date +%s%N)
  "$ctr" --address "$sock" -n ctr-run run --rm --runtime "$runtime" --rootfs "$rootfs" "$id" /bin/true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

: > "$dir/reaper.us"
: > "$dir/runc.us"
: > "$dir/stub.us"
one io.containerd.reaper.v2 "$dir/host-rootfs" warm-reaper > /dev/null
one io.containerd.runc.v2 "$dir/busybox-rootfs" warm-runc > /dev/null
one io.containerd.stub.v2 "$dir/host-rootfs" warm-stub > /dev/null
for i in $(seq "$runs"); do
  one io.containerd.reaper.v2 "$dir/host-rootfs" "reaper-$i" >> "$dir/reaper.us"
  one io.containerd.runc.v2 "$dir/busybox-rootfs" "runc-$i" >> "$dir/runc.us"
  one io.containerd.stub.v2 "$dir/host-rootfs" "stub-$i" >> "$dir/stub.us"
done
reaper=$(median < "$dir/reaper.us")
runc=$(median < "$dir/runc.us")
stub=$(median < "$dir/stub.us")
version=$("$b/containerd" --version | awk '{print $3}')
echo "containerd $version, $runs alternating runs of ctr run --rm /bin/true (median wall time)"
echo "reaper: $((reaper / 1000)).$(((reaper % 1000) / 100)) ms"
echo "runc:   $((runc / 1000)).$(((runc % 1000) / 100)) ms"
echo "stub:   $((stub / 1000)).$(((stub % 1000) / 100)) ms (the floor: no shim work)"
awk -v a="$runc" -v b="$reaper" -v s="$stub" 'BEGIN {
  printf "reaper is %.2fx faster than the Go runc shim\n", a / b
  printf "the floor allows at most %.2fx; the reaper is %.1f ms above it\n", a / s, (b - s) / 1000
}'
