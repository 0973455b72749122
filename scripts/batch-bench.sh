#!/usr/bin/env bash
# A long batch through the CLI, as a user runs it: N items (python-expert and
# code-reviewer, one model call each) at concurrency C against the stand-in answering
# in L ms, then the same batch again with every answer cached. Prints wall time, CPU
# and peak RSS (from /usr/bin/time) of each pass.
#
#   scripts/batch-bench.sh N C L [BINARY] [--no-cache]
#   scripts/batch-bench.sh 100000 500 20          # 100,000 items @ 500 against 20 ms
#   scripts/batch-bench.sh 1000000 200 1 "" --no-cache   # a million, memory only
#   AGENTS=bug-investigator scripts/batch-bench.sh 2000 50 100   # other agents
#   DATA=/tmp/d scripts/batch-bench.sh 2000 200 100   # keep a data directory between
#       calls: its compiled components stay, its response cache is deleted before the
#       cold pass (as the issue's "cache directory deleted"; without DATA every call
#       starts from nothing and compiles the agents too)
#   SHOWERR=1 scripts/batch-bench.sh 2000 200 100   # also print each pass's summary
#       (its own timer, the latency percentiles, the cache)
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 c=$2 lat=$3 bin=${4:-} extra=${5:-}
cargo build -q --release -p cf-host-cli -p cf-mock-llm
bin=${bin:-target/release/cf-host}
d=$(mktemp -d)
# The stand-in picks a free port itself and prints its URL once it listens: a port
# chosen here at random could be taken (then every call failed with "connection
# refused" after its retries, and the pass was timed anyway).
mkfifo "$d/url"
target/release/cf-mock-llm --latency-ms "$lat" >"$d/url" 2>/dev/null &
mock=$!
trap 'kill $mock; rm -rf "$d"' EXIT
read -r url <"$d/url"
seq 1 "$n" | awk -v agents="${AGENTS:-code-reviewer,python-expert}" \
    'BEGIN {k = split(agents, a, ",")} {printf "{\"agent\":\"%s\",\"task\":\"question %d\"}\n", a[$1 % k + 1], $1}' > "$d/t.jsonl"
data=${DATA:-$d/data}
passes="cold cached"
[[ $extra == --no-cache ]] && passes="uncached"
for pass in $passes; do
    [[ $pass == cold ]] && rm -rf "$data/responses"
    # Both variables of the data directory, for builds from before it was renamed.
    /usr/bin/time -o "$d/time" -f "$n items @ $c, $lat ms, $pass: wall %e s, CPU %U+%S s, peak RSS %M KB" \
        env CF_DATA_DIR="$data" CF_CACHE_DIR="$data" XDG_DATA_HOME="$d/x" XDG_CONFIG_HOME="$d/c" \
        ANTHROPIC_API_KEY=sk-ant-bench-0123456789abcdef \
        "$bin" run --json $extra --max-concurrent "$c" --base-url "$url" \
        --tasks "$d/t.jsonl" 2>"$d/err" >/dev/null || true
    # A pass is timed only with the items it ran: the summary's failed count says so.
    failed=$(awk '$1 == "all" {print $4}' "$d/err")
    echo "$(cat "$d/time"), failed ${failed:-?}"
    if [[ -n ${SHOWERR:-} ]]; then cat "$d/err" >&2; fi
done
