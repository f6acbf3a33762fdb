#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 600), two at a time (one per
# core), from the committed seeds plus the local corpus. Exits non-zero if any target crashed;
# the crashing input is then in fuzz/artifacts/<target>/.
# Usage: ci/fuzz.sh [SECONDS] [TARGET...]     (needs the nightly toolchain and cargo-fuzz)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(event_envelope shim_spec start_output scenario_loader)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: run \`cargo install cargo-fuzz\` (and \`rustup toolchain install nightly\`)" >&2
  exit 2
fi
cargo +nightly fuzz build

run() {
  local t=$1
  mkdir -p "corpus/$t"
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -timeout=10 \
    >"fuzz-$t.log" 2>&1
}

failed=()
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  names=()
  for t in "${targets[@]:i:2}"; do
    run "$t" &
    pids+=($!)
    names+=("$t")
  done
  for j in "${!pids[@]}"; do
    if wait "${pids[$j]}"; then
      echo "${names[$j]}: $(grep -E '^Done [0-9]+ runs' "fuzz-${names[$j]}.log" | tail -n 1)"
    else
      echo "${names[$j]}: CRASHED, see fuzz/fuzz-${names[$j]}.log and fuzz/artifacts/${names[$j]}/" >&2
      failed+=("${names[$j]}")
    fi
  done
done
if [ ${#failed[@]} -ne 0 ]; then
  exit 1
fi
echo "ci/fuzz.sh: ${targets[*]} ran ${secs}s each without a crash"
