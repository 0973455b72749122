#!/usr/bin/env bash
# Compares the wall time of a whole warm `cf-host run` process between two builds of
# the binary, alternating them so that the machine's noise falls on both alike. Each
# gets its own data directory, warmed first (compiled agent and cached answer on disk;
# both variables are set, for builds from before the directory was renamed).
#
#   scripts/ab-run.sh OLD_BINARY NEW_BINARY [RUNS]     # RUNS per binary, default 40
#
# For a baseline, build another commit into a target directory of its own:
#   git worktree add --detach ../base main && (cd ../base &&
#     CARGO_TARGET_DIR=../base-target cargo build --release --bin cf-host)
set -euo pipefail
old=$1 new=$2 runs=${3:-40}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() { # binary dir
    CF_DATA_DIR="$2" CF_CACHE_DIR="$2" XDG_DATA_HOME="$2/data" XDG_CONFIG_HOME="$2/config" \
        ANTHROPIC_API_KEY= "$1" run python-expert "How do I read a CSV file?" >/dev/null 2>&1
}
for b in old new; do mkdir -p "$work/$b"; done
run "$old" "$work/old"; run "$new" "$work/new"
for ((i = 0; i < runs; i++)); do
    for b in old new; do
        bin=$old; [[ $b == new ]] && bin=$new
        t0=$(date +%s%N); run "$bin" "$work/$b"; t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000 )) >> "$work/$b.us"
    done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "$work/old.us") mn=$(median "$work/new.us")
echo "warm cf-host run, $runs alternating runs each: old median ${mo} µs, new median ${mn} µs, new/old $(awk -v a="$mn" -v b="$mo" 'BEGIN {printf "%.3f", a/b}')"
