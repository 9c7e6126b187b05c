#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs, starts a
# local S3 server (moto, on 127.0.0.1) for the store tests and stops it at the end,
# checks formatting and lints, builds the test guests from source, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/s3-server.sh install

echo "test: cargo fmt --check"
cargo fmt --all --check
# The optional `otlp` feature is on for the lints and the tests, so that its code
# and its test are checked; scripts/package.sh builds the crate without it.
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --locked --features burncache/otlp -- -D warnings
echo "test: the Kubernetes manifests"
bash scripts/validate-deploy.sh

server=$(bash scripts/s3-server.sh start --owner-pid $$)
pid=${server##*pid=}
trap 'bash scripts/s3-server.sh stop "$pid"' EXIT
endpoint=${server#endpoint=}
export BURNCACHE_TEST_S3_ENDPOINT=${endpoint%% *}
echo "test: S3 server at $BURNCACHE_TEST_S3_ENDPOINT"

echo "test: cargo test"
cargo test --workspace --locked --features burncache/otlp
echo "test: a cluster behind HAProxy"
# The binary `cargo test` just built: building it alone would resolve other
# features and rebuild half the dependency tree.
BURNCACHE="$PWD/target/debug/burncache" bash scripts/cluster.sh
echo "test: the crates package and install"
bash scripts/package.sh
