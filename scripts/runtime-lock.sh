#!/usr/bin/env bash
# Regenerates host/js-runtime/Cargo.lock.in: the JavaScript runtime's lockfile for a
# build outside the workspace (a published `burncache` crate), cut from the
# workspace's Cargo.lock so that both build the runtime from the same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/runtimes/js" "$stage/host/js-runtime"
cp host/js-runtime/Cargo.toml.in "$stage/runtimes/js/Cargo.toml"
cp -r host/js-runtime/src "$stage/host/js-runtime/src"
cp -r wit "$stage/wit"
cp Cargo.lock "$stage/runtimes/js/Cargo.lock"
# Resolving the standalone manifest against the workspace's lockfile keeps its
# versions and drops what the runtime does not use.
cargo metadata --format-version 1 --manifest-path "$stage/runtimes/js/Cargo.toml" > /dev/null
cp "$stage/runtimes/js/Cargo.lock" host/js-runtime/Cargo.lock.in
echo "wrote host/js-runtime/Cargo.lock.in"
