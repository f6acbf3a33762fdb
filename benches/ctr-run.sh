#!/usr/bin/env bash
# Times `ctr run --rm ... /bin/true` under a real, private containerd (Debian's 1.6 by default),
# alternating the reaper runtime and the Go runc shim, and prints each one's median and their
# ratio. Needs root, containerd, ctr, runc and busybox-static (ci/setup.sh installs them) and a
# release build of the reaper (cargo build --release -p containerd-shim-reaper).
# Usage: benches/ctr-run.sh [RUNS]        (default 30 of each; CONTAINERD=path to another daemon)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
containerd=${CONTAINERD:-$(command -v containerd || true)}
ctr=${CTR:-$(dirname "${containerd:-/usr/bin/containerd}")/ctr}
shim=$PWD/target/release/containerd-shim-reaper-v2
busybox=$(command -v busybox || true)
for need in "$containerd" "$ctr" "$(command -v runc || true)" "$busybox"; do
  [ -x "$need" ] || { echo "ctr-run.sh: containerd, ctr, runc or busybox missing: run ci/setup.sh" >&2; exit 2; }
done
[ -x "$shim" ] || { echo "ctr-run.sh: $shim missing: cargo build --release -p containerd-shim-reaper" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "ctr-run.sh: needs root (containerd, shim sockets, cgroups)" >&2; exit 2; }

dir=$(mktemp -d /tmp/reaper-ctr-run-XXXXXX)
daemon=
cleanup() {
  if [ -n "$daemon" ]; then
    kill -TERM "$daemon" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
  umount -R "$dir/state" 2>/dev/null || true
  rm -rf "$dir"
  # runc leaves the namespace level of its cgroups (`<controller>/ctr-run`); empty, it goes.
  for cg in /sys/fs/cgroup/*/ctr-run /sys/fs/cgroup/ctr-run; do
    [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  done
}
trap cleanup EXIT

# Two rootfs: the reaper runs the host's /bin/true; runc needs one inside its rootfs.
mkdir -p "$dir/host-rootfs" "$dir/busybox-rootfs/bin" "$dir/shims"
cp "$busybox" "$dir/busybox-rootfs/bin/busybox"
ln -s busybox "$dir/busybox-rootfs/bin/true"
ln -s "$shim" "$dir/shims/containerd-shim-reaper-v2"
cat > "$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/c.sock"
[ttrpc]
  address = "$dir/c.sock.ttrpc"
EOF
PATH="$dir/shims:$PATH" "$containerd" --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  "$ctr" --address "$dir/c.sock" version > /dev/null 2>&1 && break
  sleep 0.1
done
"$ctr" --address "$dir/c.sock" version > /dev/null

# Runs one `ctr run --rm` and prints its wall time in microseconds.
one() {
  local runtime=$1 rootfs=$2 id=$3 t0 t1
  t0=$(date +%s%N)
  "$ctr" --address "$dir/c.sock" -n ctr-run run --rm --runtime "$runtime" --rootfs "$rootfs" "$id" /bin/true
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}'; }

: > "$dir/reaper.us"
: > "$dir/runc.us"
one io.containerd.reaper.v2 "$dir/host-rootfs" warm-reaper > /dev/null
one io.containerd.runc.v2 "$dir/busybox-rootfs" warm-runc > /dev/null
for i in $(seq "$runs"); do
  one io.containerd.reaper.v2 "$dir/host-rootfs" "reaper-$i" >> "$dir/reaper.us"
  one io.containerd.runc.v2 "$dir/busybox-rootfs" "runc-$i" >> "$dir/runc.us"
done
reaper=$(median < "$dir/reaper.us")
runc=$(median < "$dir/runc.us")
version=$("$containerd" --version | awk '{print $3}')
echo "containerd $version, $runs alternating runs of ctr run --rm /bin/true (median wall time)"
echo "reaper: $((reaper / 1000)).$(((reaper % 1000) / 100)) ms"
echo "runc:   $((runc / 1000)).$(((runc % 1000) / 100)) ms"
awk -v a="$runc" -v b="$reaper" 'BEGIN {printf "reaper is %.2fx faster than the Go runc shim\n", a / b}'
