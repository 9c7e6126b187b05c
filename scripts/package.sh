#!/usr/bin/env bash
# Checks that the crates can be published and installed: `cargo package` (which
# builds each packaged crate on its own, outside the workspace) for burncache-guest
# and burncache, then `cargo install` of the packaged crate; that binary and the
# workspace's (the one `cargo test` built) each run a JavaScript script (the
# embedded runtime), a Rust component, and `compose` (the embedded client).
#
# The install is a debug build into the shared target directory, so that it reuses
# what `cargo package` built; a release install (`cargo install --locked --path
# host`) differs only in its profile. Installing from the workspace too would build
# the binary once more with features resolved for the host crate alone, for nothing
# the packaged install does not show.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "package: burncache-guest"
cargo package --locked --allow-dirty -p burncache-guest
echo "package: burncache"
cargo package --locked --allow-dirty -p burncache

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
packaged="target/package/burncache-$version"
test -f "$packaged/js-runtime/Cargo.toml.in" || {
    echo "package: $packaged lacks the JavaScript runtime's source" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
test -x target/debug/burncache || {
    echo "package: target/debug/burncache is missing; run cargo test first" >&2
    exit 1
}
mkdir -p "$work/host/bin"
cp target/debug/burncache "$work/host/bin/burncache"
echo "package: cargo install from the packaged crate"
cargo install --locked --debug --path "$packaged" --root "$work/packaged" --target-dir target

printf 'export default (x) => ({ doubled: x.n * 2 });\n' > "$work/double.js"
# Built from source by the test build (tests/build.rs).
add_one=target/wasm32-wasip2/release/add_one.wasm
test -f "$add_one" || {
    echo "package: $add_one is missing; run cargo test first" >&2
    exit 1
}
caller=target/guests/wasm32-wasip2/release/http-caller.wasm
test -f "$caller" || {
    echo "package: $caller is missing; run cargo test first" >&2
    exit 1
}
for installed in "$work/host" "$work/packaged"; do
    bin="$installed/bin/burncache"
    node="$installed/node"
    answer=$("$bin" call "$work/double.js" --input '{"n": 21}' --raw \
        --store "file://$node/store" --artifacts "$node/artifacts")
    if [ "$answer" != '{"doubled":42}' ]; then
        echo "package: $bin ran the script to $answer" >&2
        exit 1
    fi
    answer=$("$bin" call "$add_one" --input '{"n": 41}' --raw \
        --store "file://$node/store" --artifacts "$node/artifacts")
    if [ "$answer" != '{"n":42}' ]; then
        echo "package: $bin ran add-one to $answer" >&2
        exit 1
    fi
    # The embedded client component: a composed guest imports only WASI.
    "$bin" compose "$caller" --server http://127.0.0.1:8080 -o "$node/composed.wasm" 2> /dev/null
    imports=$("$bin" inspect --json "$node/composed.wasm" \
        | python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)["imports"]))')
    case " $imports" in
        *" burncache:"*)
            echo "package: $bin composed a guest that still imports $imports" >&2
            exit 1
            ;;
    esac
    echo "package: $bin works"
done
