#!/usr/bin/env bash
# Builds the example guests in examples/ for wasm32-wasip2 and prints where they are.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --target wasm32-wasip2 -p add-one -p word-count -p pipeline -p http-hello
ls -1 "$PWD"/target/wasm32-wasip2/release/{add_one,word_count,pipeline,http-hello}.wasm
