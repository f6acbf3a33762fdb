#!/usr/bin/env bash
# Installs the system packages the tests drive for real: containerd 1.6, runc, ctr,
# containerd-shim-runc-v2, a static busybox for runc's rootfs, and protoc for containerd-client.
# Idempotent: does nothing when everything is already there.
set -euo pipefail

need=()
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v ctr >/dev/null 2>&1 || need+=(containerd)
command -v containerd-shim-runc-v2 >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# The guides (docs/guides, run by harness/tests/guides.rs) use jq and sudo.
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v sudo >/dev/null 2>&1 || need+=(sudo)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh: missing ${need[*]}; run as root: apt-get install ${need[*]}" >&2
  exit 1
fi
echo "ci/setup.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
