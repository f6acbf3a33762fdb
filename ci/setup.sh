#!/usr/bin/env bash
# Installs the system packages the tests drive for real: containerd 1.6, runc, ctr,
# containerd-shim-runc-v2, a static busybox for runc's rootfs, and protoc for containerd-client;
# then fetches containerd 1.7.24 and 2.1.9 into target/containerd (ci/containerd-versions.sh,
# never installed).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# Adds a package to `need` once (containerd provides three of the commands).
want() {
  local p
  for p in "${need[@]}"; do [ "$p" = "$1" ] && return 0; done
  need+=("$1")
}
command -v containerd >/dev/null 2>&1 || want containerd
command -v ctr >/dev/null 2>&1 || want containerd
command -v containerd-shim-runc-v2 >/dev/null 2>&1 || want containerd
command -v runc >/dev/null 2>&1 || want runc
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || want busybox-static
command -v protoc >/dev/null 2>&1 || want protobuf-compiler
# The guides (docs/guides, run by harness/tests/guides.rs) use jq and sudo.
command -v jq >/dev/null 2>&1 || want jq
command -v sudo >/dev/null 2>&1 || want sudo

if [ ${#need[@]} -eq 0 ]; then
  # The shim's ctr tests also run against these (cached; no apt when present).
  exec ci/containerd-versions.sh
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh: missing ${need[*]}; run as root: apt-get install ${need[*]}" >&2
  exit 1
fi
echo "ci/setup.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
ci/containerd-versions.sh
