#!/usr/bin/env bash
# Sets everything up on a fresh machine, builds the examples and the CLI, and calls
# each example through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-examples.sh
cargo build -p burncache
bc=target/debug/burncache
wasm=target/wasm32-wasip2/release

step() { printf '\n$ %s\n' "$*"; "$@"; }

step $bc hash $wasm/add_one.wasm
step $bc call $wasm/add_one.wasm --input '{"n": 41}' --stats
echo 'the quick brown fox jumps over the lazy dog' > target/demo-text.txt
step $bc call $wasm/word_count.wasm --bytes --input-file target/demo-text.txt
input=$(printf '{"add_one": "%s", "word_count": "%s", "n": 41, "text": "hello burncache"}' \
  "$($bc hash $wasm/add_one.wasm)" "$($bc hash $wasm/word_count.wasm)")
step $bc call $wasm/pipeline.wasm --with $wasm/add_one.wasm --with $wasm/word_count.wasm --input "$input"
printf '{"n": 1}\n{"n": 2}\n{"n": 3}\n' > target/demo-rows.ndjson
step $bc batch $wasm/add_one.wasm target/demo-rows.ndjson
step $bc inspect $wasm/pipeline.wasm

# JavaScript: a script is called like a component, and may call components by digest.
cat > target/demo-increment.js <<JS
module.exports = (d) => ({ n: d.n + 1, via: burncache.execute("$($bc hash $wasm/add_one.wasm)", d) });
JS
step $bc call target/demo-increment.js --with $wasm/add_one.wasm --input '{"n": 41}' --stats
