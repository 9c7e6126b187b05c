#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what it needs, checks
# formatting and lints, builds the test guests from source, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "test: cargo fmt --check"
cargo fmt --all --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "test: cargo test"
cargo test --workspace --locked
