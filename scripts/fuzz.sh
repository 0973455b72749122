#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, seeded with its regression
# inputs. A crash is copied into fuzz/regressions/<target>/ (where the ordinary test
# suite replays it) and makes this script fail.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Needs a nightly toolchain (`rustup toolchain install nightly`); installs cargo-fuzz
# if it is missing. Set FUZZ_TOOLCHAIN to use another one than `nightly`.
set -euo pipefail

seconds="${1:-60}"
shift || true
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

# Debug assertions on: integer overflow is a bug the checks should see.
cargo "+$toolchain" fuzz build --debug-assertions

failed=()
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    seeds="fuzz/regressions/$target"
    artifacts="fuzz/artifacts/$target"
    mkdir -p "$corpus" "$seeds" "$artifacts"
    # Artifacts of earlier runs were already kept in $seeds: only this run's count.
    rm -f "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-* "$artifacts"/leak-*
    echo "fuzz.sh: $target for ${seconds}s" >&2
    status=0
    cargo "+$toolchain" fuzz run --debug-assertions "$target" "$corpus" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" || status=$?
    found=0
    for artifact in "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-* "$artifacts"/leak-*; do
        [ -e "$artifact" ] || continue
        cp "$artifact" "$seeds/"
        echo "fuzz.sh: $target: kept $(basename "$artifact") in $seeds/" >&2
        found=1
    done
    if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: failures in: ${failed[*]} (reproduce: cargo +$toolchain fuzz run <target> fuzz/regressions/<target>/<file>)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
