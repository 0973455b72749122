#!/usr/bin/env bash
# The agent store under load: `bug-investigator` keeps one store entry per task, so a
# batch of N items at --max-concurrent 50 against a 1 ms stand-in fills its store (the
# quota is 1,000 entries) and then keeps writing. Prints the wall time of each batch.
#
#   scripts/store-bench.sh [BINARY] [N ...]     # default: target/release/cf-host, 200 500 1000 2000 5000
#
# Give another build's binary to compare (scripts/ab-run.sh says how to build one).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p cf-host-cli -p cf-mock-llm
bin=${1:-target/release/cf-host}
shift || true
sizes=("${@:-200 500 1000 2000 5000}")
port=$((20000 + RANDOM % 20000))
target/release/cf-mock-llm --port "$port" --latency-ms 1 >/dev/null 2>&1 &
mock=$!
work=$(mktemp -d)
trap 'kill $mock; rm -rf "$work"' EXIT
# Wait until the stand-in answers.
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
for n in ${sizes[*]}; do
    d="$work/$n"
    mkdir -p "$d"
    seq 1 "$n" | awk '{printf "{\"agent\":\"bug-investigator\",\"task\":\"crash number %d in module x\"}\n", $1}' > "$d/t.jsonl"
    t0=$(date +%s%N)
    # Both variables of the data directory, for older builds; a key shaped like one (a
    # build from before the scrubbing fix broke answers containing a very short key).
    CF_DATA_DIR="$d/data" CF_CACHE_DIR="$d/data" XDG_DATA_HOME="$d/xdg" XDG_CONFIG_HOME="$d/cfg" \
        ANTHROPIC_API_KEY=sk-ant-bench-0123456789abcdef \
        "$bin" run --json --no-cache --max-concurrent 50 --base-url "http://127.0.0.1:$port" \
        --tasks "$d/t.jsonl" > "$d/out" 2> "$d/err" || true
    t1=$(date +%s%N)
    echo "bug-investigator, $n items @ 50, 1 ms: wall $(( (t1 - t0) / 1000000 )) ms, $(grep -c '"ok":true' "$d/out" || true) ok"
done
