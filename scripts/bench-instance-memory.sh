#!/usr/bin/env bash
# Resident memory per live instance with the pooling allocator: a fresh
# `burncache serve` (no slot used before), then 100 calls held open at once (the
# adversary test guest sleeping), resident memory before and during.
#
#   scripts/bench-instance-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/setup.sh
cargo build --release --quiet -p burncache
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --quiet --target wasm32-wasip2 --target-dir target/guests -p adversary
bc="$root/target/release/burncache"
guest="$root/target/guests/wasm32-wasip2/release/adversary.wasm"
node=$(mktemp -d)
export BURNCACHE_STORE="file://$node/store" BURNCACHE_ARTIFACTS="$node/artifacts"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bc" serve --addr "127.0.0.1:$port" --max-in-flight 200 > /dev/null 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null || true; rm -rf "$node"' EXIT
for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
base="http://127.0.0.1:$port/v1/components"
digest=$(curl -s -X PUT --data-binary "@$guest" "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
curl -s -o /dev/null -X POST -H 'content-type: application/json' --data '{"op": "counter"}' "$base/$digest/call"
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
in_flight() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^burncache_in_flight / {print $2}'; }
idle=$(rss)
n=100
sleepers=()
for _ in $(seq $n); do
  curl -s -o /dev/null -X POST -H 'content-type: application/json' --data '{"op": "sleep", "ms": 4000}' "$base/$digest/call" &
  sleepers+=($!)
done
# Read memory at the peak: when every call is running at once.
busy=$idle
peak=0
for _ in $(seq 60); do
  now=$(in_flight)
  if [ "${now:-0}" -ge "$peak" ]; then peak=${now:-0}; busy=$(rss); fi
  [ "$peak" = "$n" ] && break
  sleep 0.05
done
wait "${sleepers[@]}"
echo "idle: $idle KiB; $peak instances alive: $busy KiB"
python3 -c "print(f'per live instance: {($busy - $idle) / $peak:.0f} KiB')"
