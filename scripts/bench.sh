#!/usr/bin/env bash
# Runs every benchmark behind docs/benchmarks.md, in release mode, and keeps the
# output in target/bench-results/. Usage, from anywhere in the repository:
#
#   scripts/bench.sh              # the Rust rows
#   scripts/bench.sh --python     # and the Python original (claude-force 1.3.2, PyPI)
#
# Benchmarks on a 2-core machine are noisy: run them on a quiet machine, and compare
# figures from the same run (the ratios), not across runs.
set -euo pipefail
cd "$(dirname "$0")/.."

python=false
for arg in "$@"; do
    case "$arg" in
        --python) python=true ;;
        -h|--help) sed -n 2,9p "$0"; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

out="target/bench-results/$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p "$(dirname "$out")"
echo "writing $out"
{
    echo "# $(date -u) · $(nproc) cores · $(uname -r) · load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# rustc: $(rustc --version)"
    echo
    echo "## batch throughput through the library (cargo bench -p cf-host --bench throughput)"
    cargo bench -q -p cf-host --bench throughput 2>/dev/null
    echo
    echo "## batch throughput through the CLI (cargo bench -p cf-host-cli --bench batch_cli)"
    cargo bench -q -p cf-host-cli --bench batch_cli 2>/dev/null
    echo
    echo "## host overhead (cargo bench -p cf-host-cli --bench overhead)"
    cargo bench -q -p cf-host-cli --bench overhead 2>/dev/null
    echo
    echo "## contract 0.2.0: a tool-loop turn, 0.1.0 against 0.2.0 (cargo bench -p cf-tests --bench contract)"
    cargo bench -q -p cf-tests --bench contract 2>/dev/null
    echo
    echo "## response cache (cargo bench -p cf-cache)"
    cargo bench -q -p cf-cache 2>/dev/null
    if $python; then
        echo
        echo "## the Python original (bash bench/python-original/run.sh)"
        # The rows compared in docs/benchmarks.md: the orchestrator alone ("lean"),
        # once each; bench/python-original/README.md has the full suite.
        bash bench/python-original/run.sh --rows 200x10,1000x50,2000x200,cache,open100k \
            --variants lean --reps 2 --open-reps 2
    fi
} 2>&1 | tee "$out"
