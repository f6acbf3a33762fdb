# A private containerd for the scripts (sourced, not run): its own root, state, sockets and
# config in a directory of the caller's, and the functions that start and stop it.
#   containerd_start DIR BINDIR RELEASE PATH_FIRST   writes DIR/config.toml, starts BINDIR's
#       containerd with PATH_FIRST first on its PATH (where it finds the shims), waits until it
#       answers on DIR/c.sock; sets ctd_pid. Exits 2 with the log's tail when it does not come up.
#   containerd_stop                                  SIGTERM, SIGKILL after 5 s; by pid.
#   containerd_bindir RELEASE                       the directory of a release's containerd, ctr
#       and containerd-shim-runc-v2: 1.6 Debian's, 1.7 and 2.1 unpacked by ci/containerd-versions.sh
#       into $cache, 2.3 built from containerd's source in the project's shared/ beside the checkout.
# The caller sets `me` (its name, for messages) and `cache` (the target dir's containerd/).

ctd_pid=""

containerd_bindir() {
  case "$1" in
    1.6) dirname "$(command -v containerd)" ;;
    1.7) echo "$cache/1.7.24/usr/bin" ;;
    2.1) echo "$cache/2.1.9/usr/bin" ;;
    2.3) echo "$PWD/../shared/containerd/2.3.4" ;;
    *) echo "$me: unknown containerd release $1 (1.6, 1.7, 2.1, 2.3)" >&2; return 2 ;;
  esac
}

containerd_start() {
  local d=$1 b=$2 v=$3 first=$4 cfg_version disabled
  # 2.x migrates a version 2 config at every start (and warns); version 3 is its own. NRI is on
  # by default in 2.x and would listen on the host-wide /var/run/nri/nri.sock
  # (internal/nri/config.go, v2.1.9); CRI is not needed here.
  case "$v" in
    2.*) cfg_version=3; disabled='"io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"' ;;
    *) cfg_version=2; disabled='"io.containerd.grpc.v1.cri"' ;;
  esac
  mkdir -p "$d"
  cat >"$d/config.toml" <<EOF
version = $cfg_version
root = "$d/root"
state = "$d/state"
disabled_plugins = [$disabled]

[grpc]
  address = "$d/c.sock"

[ttrpc]
  address = "$d/c.sock.ttrpc"
EOF
  PATH="$first:$PATH" "$b/containerd" --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  ctd_pid=$!
  for _ in $(seq 200); do
    [ -S "$d/c.sock" ] && "$b/ctr" --address "$d/c.sock" version >/dev/null 2>&1 && break
    kill -0 "$ctd_pid" 2>/dev/null || { echo "$me: containerd $v exited:" >&2; tail -20 "$d/containerd.log" >&2; exit 2; }
    sleep 0.1
  done
  "$b/ctr" --address "$d/c.sock" version >/dev/null || { echo "$me: containerd $v not ready" >&2; exit 2; }
}

containerd_stop() {
  if [ -n "$ctd_pid" ] && kill -0 "$ctd_pid" 2>/dev/null; then
    kill -TERM "$ctd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$ctd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ctd_pid" 2>/dev/null || true
    wait "$ctd_pid" 2>/dev/null || true
  fi
  ctd_pid=""
}
