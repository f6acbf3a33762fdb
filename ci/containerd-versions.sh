#!/usr/bin/env bash
# Fetches the newer real containerd daemons the shim's ctr tests also run against, without
# touching the system's packages: Debian's containerd 1.7.24 (suite trixie) and 2.1.9 (suite sid),
# each unpacked with `dpkg -x` into target/containerd/<version>/ (usr/bin/containerd, ctr,
# containerd-shim-runc-v2). Never installed: they would replace bookworm's 1.6 and want a newer libc.
#
# apt runs on a PRIVATE sources list, package lists, cache and dpkg status under
# target/containerd/apt/, so nothing of the system's apt or dpkg state changes. The archive address
# is taken from the machine's own apt sources (the entry for its own suite), never written here.
# Signatures: the release files are checked against the keyring that entry trusts (bookworm's
# debian-archive-keyring already holds the 13/trixie archive keys, which sign trixie and sid).
#
# Idempotent: a version whose three binaries exist and whose `containerd --version` names it is
# left alone, and then apt is not run at all. Needs root only when something is missing.
# Usage: ci/containerd-versions.sh   (ci/setup.sh calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="$PWD/target/containerd"
# <dir name> <suite> <Debian package version>
versions=(
  "1.7.24 trixie 1.7.24~ds1-6+deb13u1"
  "2.1.9 sid 2.1.9+ds1-5"
)
me=ci/containerd-versions.sh

fail() {
  echo "$me: $1 failed${2:+: $2}" >&2
  exit 1
}

# True when $cache/<dir> holds the three binaries and containerd reports version <dir>.
present() {
  local bin="$cache/$1/usr/bin"
  [ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] && [ -x "$bin/containerd-shim-runc-v2" ] || return 1
  local out
  out=$("$bin/containerd" --version 2>/dev/null) || return 1
  [[ "$out" == *" $1"* ]]
}

missing=()
for v in "${versions[@]}"; do
  read -r dir _ _ <<<"$v"
  present "$dir" || missing+=("$v")
done
[ ${#missing[@]} -eq 0 ] && exit 0

[ "$(id -u)" -eq 0 ] || fail "check for root" "fetching containerd needs root (apt-get); run: sudo $me"

# Step: find the archive address and its keyring in the machine's own apt sources. Take the entry
# whose suite is the machine's own (e.g. bookworm), not -updates or -security.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || fail "read the suite from /etc/os-release" "no VERSION_CODENAME"
archive=""
keyring=""
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  # deb822 stanzas, blank-line separated: print "<first URI> <Signed-By>" of the first deb stanza
  # listing our suite.
  read -r archive keyring < <(awk -v suite="$codename" '
    function flush() {
      if (!done && deb && has) { print uri, signed; done = 1 }
      deb = 0; has = 0; uri = ""; signed = ""
    }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
    tolower($1) == "uris:" { uri = $2 }
    tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has = 1 }
    tolower($1) == "signed-by:" { signed = $2 }
    END { flush() }' "$f") || true
  [ -n "$archive" ] && break
done
if [ -z "$archive" ] && [ -f /etc/apt/sources.list ]; then
  # One-line format: deb [options] URI suite components...
  read -r archive keyring < <(sed -e 's/#.*//' /etc/apt/sources.list | awk -v suite="$codename" '
    $1 == "deb" {
      signed = ""
      line = $0
      if (match(line, /\[[^]]*\]/)) {
        opts = substr(line, RSTART + 1, RLENGTH - 2)
        line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
        n = split(opts, o, /[ \t]+/)
        for (i = 1; i <= n; i++) if (o[i] ~ /^signed-by=/) signed = substr(o[i], 11)
      }
      split(line, w, /[ \t]+/)
      if (w[3] == suite) { print w[2], signed; exit }
    }') || true
fi
[ -n "$archive" ] || fail "find the Debian archive in the machine's apt sources" \
  "no 'deb' entry for suite $codename in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
# Only a keyring file can be named in signed-by here (an inline key block cannot).
if [ -z "$keyring" ] || [ ! -f "$keyring" ]; then
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
fi
[ -f "$keyring" ] || fail "find the archive keyring" "$keyring is missing (apt-get install debian-archive-keyring)"

# Step: the private apt state.
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" \
  || fail "create $apt_dir"
: >"$apt_dir/status"
{
  echo "# Written by $me: Debian's suites for containerd 1.7 and 2.1, from the machine's own archive."
  for v in "${missing[@]}"; do
    read -r _ suite _ <<<"$v"
    echo "deb [signed-by=$keyring] $archive $suite main"
  done
} >"$apt_dir/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/status"
  -o "Dir::Cache=$apt_dir/cache"
  # Only the Packages indexes: no AppStream metadata or translations.
  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false
  -o Acquire::Languages=none
)

echo "$me: fetching containerd ${missing[*]%% *} from $archive into $cache" >&2
out=$(apt-get "${apt_opts[@]}" update 2>&1) || fail "apt-get update (private lists)" "$out"
# apt-get update exits 0 when a release file's signature cannot be checked (it only warns and
# ignores that suite): refuse that.
if grep -qE '^(W|E): .*(NO_PUBKEY|not signed|EXPKEYSIG|BADSIG|Failed to fetch)' <<<"$out"; then
  fail "apt-get update (signature or download)" "$out"
fi

for v in "${missing[@]}"; do
  read -r dir suite pkgver <<<"$v"
  # Step: download the exact version (apt checks its hash against the signed index).
  rm -f "$apt_dir/debs"/containerd_*.deb
  out=$(cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "containerd=$pkgver" 2>&1) \
    || fail "apt-get download containerd=$pkgver (suite $suite)" "$out"
  deb=$(ls "$apt_dir/debs"/containerd_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || fail "apt-get download containerd=$pkgver" "no .deb in $apt_dir/debs"
  # Step: unpack into a fresh directory, then move it into place.
  rm -rf "$cache/$dir.tmp" "$cache/$dir"
  dpkg -x "$deb" "$cache/$dir.tmp" || fail "dpkg -x $deb"
  mv "$cache/$dir.tmp" "$cache/$dir"
  rm -f "$deb"
  # Step: check the binaries run on this machine.
  present "$dir" || fail "check $cache/$dir/usr/bin/containerd --version" \
    "$("$cache/$dir/usr/bin/containerd" --version 2>&1 || true)"
  "$cache/$dir/usr/bin/ctr" --version >/dev/null 2>&1 || fail "check $cache/$dir/usr/bin/ctr --version"
  echo "$me: $("$cache/$dir/usr/bin/containerd" --version)" >&2
done
