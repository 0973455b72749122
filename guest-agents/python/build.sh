#!/usr/bin/env bash
# Builds the Python agent `py-summarizer` (app.py) into a WebAssembly component with
# componentize-py, against wit/0.1.0, world `agent-plugin`:
#
#   ${CARGO_TARGET_DIR:-<repo>/target}/wasm-guests/python/py-summarizer.wasm
#   ${CARGO_TARGET_DIR:-<repo>/target}/wasm-guests/python/py-summarizer.toml (its manifest)
#
# componentize-py comes from PyPI, pinned below, into a venv at
# ${CARGO_TARGET_DIR:-<repo>/target}/py-venv. When python3, venv or the install is not
# available (no network, no wheel for this platform) the script prints one line
# `python agent: skipped: <reason>` and exits 0; when the tool is there but the build
# fails it exits non-zero. Nothing is rebuilt when the component is newer than app.py,
# this script and the WIT files.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
NAME=py-summarizer

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wit="$repo/wit/0.1.0"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
venv="$target/py-venv"
outdir="$target/wasm-guests/python"
out="$outdir/$NAME.wasm"

skip() {
    echo "python agent: skipped: $*"
    exit 0
}

# The sidecar manifest: what the agent declares it needs (models, max_tokens, cache).
mkdir -p "$outdir"
cmp -s "$here/$NAME.toml" "$outdir/$NAME.toml" || cp "$here/$NAME.toml" "$outdir/$NAME.toml"

# Up to date: nothing newer than the component among its inputs.
if [[ -f "$out" ]] && [[ -z "$(find "$here/app.py" "$here/build.sh" "$wit" -newer "$out" -print -quit)" ]]; then
    echo "python agent: up to date: $out"
    exit 0
fi

tool="$venv/bin/componentize-py"
if ! "$tool" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    python="$(command -v python3 || true)"
    [[ -n "$python" ]] || skip "python3 is not installed"
    # A venv whose interpreter no longer runs (python3 upgraded or removed) is made anew.
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1 || [[ ! -x "$venv/bin/pip" ]]; then
        "$python" -m venv --clear "$venv" >/dev/null 2>&1 ||
            skip "'python3 -m venv' failed (on Debian: apt-get install python3-venv)"
    fi
    # Wheels only: building componentize-py from source needs a Rust toolchain and
    # a long time.
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        "componentize-py==$COMPONENTIZE_PY_VERSION" >"$venv/pip-install.log" 2>&1; then
        skip "could not install componentize-py==$COMPONENTIZE_PY_VERSION from PyPI (see $venv/pip-install.log)"
    fi
    "$tool" --version >/dev/null 2>&1 ||
        skip "componentize-py==$COMPONENTIZE_PY_VERSION installed but does not run on this platform"
fi

# Build from a copy of the source, so that the interpreter that componentize-py runs
# to pre-initialise the app writes its __pycache__ under the target directory.
src="$outdir/src"
mkdir -p "$src"
cp "$here/app.py" "$src/app.py"
tmp="$outdir/.$NAME.wasm.tmp"
started=$SECONDS
(
    cd "$src"
    VIRTUAL_ENV="$venv" "$tool" --quiet -d "$wit" -w agent-plugin \
        componentize app -p "$src" -o "$tmp"
) || {
    rm -f "$tmp"
    echo "python agent: the build failed (componentize-py $COMPONENTIZE_PY_VERSION, $here/app.py)" >&2
    exit 1
}
mv -f "$tmp" "$out"
echo "python agent: built $out ($(($(wc -c <"$out") / 1024)) KiB, $((SECONDS - started)) s, componentize-py $COMPONENTIZE_PY_VERSION)"
