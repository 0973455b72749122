#!/usr/bin/env bash
# Builds the JavaScript agent `js-summarizer` (agent.js) into a WebAssembly component
# with componentize-js, against wit/0.2.0, world `agent-plugin`:
#
#   bash guest-agents/js/build.sh [OUT_DIR]
#   OUT_DIR/js-summarizer.wasm
#   OUT_DIR/js-summarizer.toml (its manifest)
#
# OUT_DIR defaults to ${CARGO_TARGET_DIR:-<repo>/target}/wasm-guests/js.
#
# componentize-js comes from the npm registry, pinned exactly by package.json and
# package-lock.json, installed with `npm ci` into OUT_DIR/npm (never into the source
# tree). When node, npm or the install is not available (no network) the script
# prints one line `js agent: skipped: <reason>` and exits 0; when the tool is there
# but the build fails it exits non-zero. Nothing is rebuilt when the component is
# newer than agent.js, this script, package.json, package-lock.json and the files of
# wit/0.2.0.
set -euo pipefail

COMPONENTIZE_JS_VERSION=0.23.0
NAME=js-summarizer

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
wit="$repo/wit/0.2.0"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
outdir="${1:-$target/wasm-guests/js}"
case "$outdir" in /*) ;; *) outdir="$PWD/$outdir" ;; esac
npmdir="$outdir/npm"
out="$outdir/$NAME.wasm"

skip() {
    echo "js agent: skipped: $*"
    exit 0
}

# The sidecar manifest: what the agent declares it needs (models, max_tokens, store).
mkdir -p "$outdir"
cmp -s "$here/$NAME.toml" "$outdir/$NAME.toml" || cp "$here/$NAME.toml" "$outdir/$NAME.toml"

# Up to date: nothing newer than the component among its inputs.
inputs=("$here/agent.js" "$here/build.sh" "$here/package.json" "$here/package-lock.json" "$wit")
if [[ -f "$out" ]] && [[ -z "$(find "${inputs[@]}" -newer "$out" -print -quit)" ]]; then
    echo "js agent: up to date: $out"
    exit 0
fi

command -v node >/dev/null 2>&1 || skip "node is not installed"
tool="$npmdir/node_modules/@bytecodealliance/componentize-js/src/cli.js"
installed() {
    # The lock file the installed tree was made from, and the pinned version in it.
    cmp -s "$here/package-lock.json" "$npmdir/installed-package-lock.json" &&
        [[ "$(node -p "require('$npmdir/node_modules/@bytecodealliance/componentize-js/package.json').version" 2>/dev/null)" == "$COMPONENTIZE_JS_VERSION" ]]
}
if ! installed; then
    command -v npm >/dev/null 2>&1 || skip "npm is not installed"
    rm -rf "$npmdir"
    mkdir -p "$npmdir"
    cp "$here/package.json" "$here/package-lock.json" "$npmdir/"
    started=$SECONDS
    # `npm ci`: exactly what package-lock.json says, or nothing.
    if ! (cd "$npmdir" && npm ci --no-audit --no-fund --loglevel=error) >"$outdir/npm-install.log" 2>&1; then
        skip "could not install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION with npm ci (see $outdir/npm-install.log)"
    fi
    cp "$here/package-lock.json" "$npmdir/installed-package-lock.json"
    installed || {
        echo "js agent: package-lock.json does not pin componentize-js $COMPONENTIZE_JS_VERSION (see $here/package.json)" >&2
        exit 1
    }
    echo "js agent: installed componentize-js $COMPONENTIZE_JS_VERSION in $npmdir ($((SECONDS - started)) s)"
fi

# `-d http -d fetch-event`: leave out wasi:http, which the host does not link.
tmp="$outdir/.$NAME.wasm.tmp"
started=$SECONDS
(
    cd "$outdir"
    node "$tool" "$here/agent.js" --wit "$wit" --world-name agent-plugin \
        -d http -d fetch-event -o "$tmp"
) >"$outdir/build.log" 2>&1 || {
    rm -f "$tmp"
    cat "$outdir/build.log" >&2
    echo "js agent: the build failed (componentize-js $COMPONENTIZE_JS_VERSION, $here/agent.js)" >&2
    exit 1
}
mv -f "$tmp" "$out"
echo "js agent: built $out ($(($(wc -c <"$out") / 1024)) KiB, $((SECONDS - started)) s, componentize-js $COMPONENTIZE_JS_VERSION)"
