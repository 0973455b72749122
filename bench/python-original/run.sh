#!/usr/bin/env bash
# Benchmarks of the Python original, claude-force 1.3.2 (PyPI), on the cf-host workloads.
#
#   bash bench/python-original/run.sh [options]       (from the repository root)
#
# Creates target/py-original/venv, pip installs claude-force==1.3.2 with the pins in
# constraints.txt, builds cf-mock-llm (release), runs driver.py (which starts one
# cf-mock-llm --latency-ms 100 per throughput run and stops it afterwards), prints a
# table and writes target/py-original/results.json. See README.md beside this file.
#
# Options:
#   --rows LIST       comma-separated, from 200x10,1000x50,2000x200,cache,open100k
#                     (default: all of them)
#   --variants LIST   orchestrator set-ups for the throughput rows, from lean,shipped,tenacity
#                     (default: all three)
#   --reps N          repetitions of every throughput run (default 3)
#   --entries N       entries of the big-cache open row (default 100000)
#   --open-reps N     constructor timings over the big cache (default 5)
#   --agent-defs ours|package
#                     agent Markdown: our agents' prompts (default) or the ones shipped in
#                     the package's templates (12-16 KB each)
#   --unpinned        install plain `claude-force==1.3.2` without constraints.txt into
#                     target/py-original/venv-unpinned (today that resolves an anthropic
#                     SDK whose messages.create() no longer accepts `temperature`: every
#                     call fails; the driver counts and reports the failures)
#   --python PATH     interpreter for the venv (default python3)
#   -h, --help        this text
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

rows="200x10,1000x50,2000x200,cache,open100k"
variants="lean,shipped,tenacity"
reps=3
entries=100000
open_reps=5
agent_defs=ours
unpinned=0
python=python3

die() { echo "run.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows="${2:?--rows needs a value}"; shift 2 ;;
    --variants) variants="${2:?--variants needs a value}"; shift 2 ;;
    --reps) reps="${2:?--reps needs a value}"; shift 2 ;;
    --entries) entries="${2:?--entries needs a value}"; shift 2 ;;
    --open-reps) open_reps="${2:?--open-reps needs a value}"; shift 2 ;;
    --agent-defs) agent_defs="${2:?--agent-defs needs a value}"; shift 2 ;;
    --unpinned) unpinned=1; shift ;;
    --python) python="${2:?--python needs a value}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

out_dir="$root/target/py-original"
mkdir -p "$out_dir"
if [ "$unpinned" = 1 ]; then
  venv="$out_dir/venv-unpinned"
  results="$out_dir/results-unpinned.json"
else
  venv="$out_dir/venv"
  results="$out_dir/results.json"
fi

# 1. The virtualenv with the original.
command -v "$python" >/dev/null || die "no $python on PATH (use --python)"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || die "$python is older than 3.9"
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv" >&2
  "$python" -m venv "$venv" || die "cannot create the virtualenv $venv"
fi
echo "== pip install claude-force==1.3.2 into $venv" >&2
if [ "$unpinned" = 1 ]; then
  pip_args=(claude-force==1.3.2 tenacity)
else
  pip_args=(claude-force==1.3.2 tenacity -c "$here/constraints.txt")
fi
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_args[@]}"; then
  die "pip install ${pip_args[*]} FAILED (see the pip output above); nothing was measured"
fi
"$venv/bin/python" -c 'import claude_force.async_orchestrator, claude_force.response_cache' \
  || die "claude-force is installed but does not import"

# 2. The loopback Anthropic stand-in.
echo "== cargo build --release -p cf-mock-llm" >&2
cargo build --release -p cf-mock-llm || die "cannot build cf-mock-llm"
mock="${CARGO_TARGET_DIR:-$root/target}/release/cf-mock-llm"
[ -x "$mock" ] || die "no $mock after the build"

# 3. The workloads.
echo "== load before: $(uptime)" >&2
"$venv/bin/python" "$here/driver.py" suite \
  --mock "$mock" --out "$results" --rows "$rows" --variants "$variants" --reps "$reps" \
  --entries "$entries" --open-reps "$open_reps" --agent-defs "$agent_defs"
echo "== load after: $(uptime)" >&2
