#!/usr/bin/env bash
# Regenerates the lockfiles of the components the host crate builds from source
# (host/js-runtime/Cargo.lock.in, host/client-component/Cargo.lock.in) for a build
# outside the workspace (a published `burncache` crate), cut from the workspace's
# Cargo.lock so that both build them from the same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
for pair in js-runtime:runtimes/js client-component:runtimes/client; do
  source=${pair%%:*}
  member=${pair#*:}
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/$member" "$stage/host/$source"
  cp "host/$source/Cargo.toml.in" "$stage/$member/Cargo.toml"
  cp -r "host/$source/src" "$stage/host/$source/src"
  cp -r wit "$stage/wit"
  cp Cargo.lock "$stage/$member/Cargo.lock"
  # Resolving the standalone manifest against the workspace's lockfile keeps its
  # versions and drops what the component does not use.
  cargo metadata --format-version 1 --manifest-path "$stage/$member/Cargo.toml" > /dev/null
  cp "$stage/$member/Cargo.lock" "host/$source/Cargo.lock.in"
  rm -rf "$stage"
  echo "wrote host/$source/Cargo.lock.in"
done
