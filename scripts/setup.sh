#!/usr/bin/env bash
# Installs what building and testing burncache needs on a fresh machine: the
# wasm32-wasip2 Rust target. Safe to run again.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi
