#!/usr/bin/env bash
# The fault soak (cli/tests/it/soak.rs) at full size, in release: 10,000 agent runs
# through the real Anthropic client to the loopback mock server under a 30% fault mix
# (429s, 529s, 500s, resets, hangs past the attempt timeout, hangs past a run's
# deadline), a global limit of 50 calls in flight and the response cache on. The test
# asserts everything (see its docs); this prints its summary: runs, successes, errors
# by kind, attempts per run, faults served, most in flight, largest deadline overrun,
# wall time of each pass.
#
#   scripts/soak.sh                 # 10,000 runs
#   scripts/soak.sh 50000 7         # runs, seed
#
# CI runs the same test with 300 runs in debug (`cargo test -p cf-host-cli --test it soak`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CF_SOAK_RUNS="${1:-${CF_SOAK_RUNS:-10000}}"
if [[ -n "${2:-}" ]]; then export CF_SOAK_SEED="$2"; fi
cargo test --release -p cf-host-cli --test it --no-run
start=$(date +%s%N)
set +e
log="target/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
cargo test --release -p cf-host-cli --test it soak:: -- --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s%N)
echo "soak.sh: $CF_SOAK_RUNS runs; the test took $(( (end - start) / 1000000 )) ms in all (exit $status); output kept in $log"
exit "$status"
