#!/usr/bin/env bash
# Per-node figures for docs/SCALING.md: what a cold call costs on a node, with and
# without the cluster's shared artifact, and how many store requests it makes. An
# S3 server (moto) and release-built nodes on 127.0.0.1.
#
#   scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python="$root/.venv/bin/python"
bash scripts/s3-server.sh install
bash scripts/build-examples.sh > /dev/null
cargo build --release --quiet -p burncache
bc="$root/target/release/burncache"
add_one="$root/target/wasm32-wasip2/release/add_one.wasm"
js_udf="$root/target/guests/js_udf.wasm"
[ -f "$js_udf" ] || { echo "bench-cluster: build the test guests first (cargo test --no-run)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
# Nodes start in command substitutions (subshells): their pids go to a file.
cleanup() {
  for pid in "${pids[@]}" $(cat "$work/pids" 2> /dev/null); do kill "$pid" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
server=$(bash scripts/s3-server.sh start --owner-pid $$)
pids+=("${server##*pid=}")
endpoint=${server#endpoint=}
endpoint=${endpoint%% *}
s3_log="$root/target/s3-server-${endpoint##*:}.log"
export AWS_ENDPOINT_URL=$endpoint AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export BURNCACHE_STORE="s3://burncache-test/bench-$$"
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/cluster.key"

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node() { # name, extra args...
  local name=$1; shift
  local port
  port=$(free_port)
  "$bc" serve --addr "127.0.0.1:$port" --artifacts "$work/$name" "$@" > "$work/$name.log" 2>&1 &
  echo $! >> "$work/pids"
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.05; done
  echo "$port"
}
requests() { grep -cE '(GET|PUT|HEAD|POST) /burncache-test/' "$s3_log" || true; } # 404s too (moto colours them)
# Seconds for one call; JSON API; prints "seconds store-requests".
timed_call() { # port, digest
  local before after took
  before=$(requests)
  took=$(curl -s -o /dev/null -w '%{time_total}' -H 'content-type: application/json' \
    --data '{"n": 1}' "http://127.0.0.1:$1/v1/components/$2/call")
  sleep 0.5 # background shares land
  after=$(requests)
  echo "$took $((after - before))"
}

for guest in "$add_one" "$js_udf"; do
  name=$(basename "$guest" .wasm)
  size=$(stat -c %s "$guest")
  digest=$("$bc" deploy "$guest" 2> /dev/null)
  echo "== $name ($size bytes), digest $digest"
  a=$(node "a-$name" --cluster-key-file "$work/cluster.key")
  read -r compile compile_requests <<< "$(timed_call "$a" "$digest")"
  read -r warm _ <<< "$(timed_call "$a" "$digest")"
  b=$(node "b-$name" --cluster-key-file "$work/cluster.key")
  read -r shared shared_requests <<< "$(timed_call "$b" "$digest")"
  c=$(node "c-$name")
  read -r nokey nokey_requests <<< "$(timed_call "$c" "$digest")"
  d=$(node "a-$name" --cluster-key-file "$work/cluster.key")
  read -r own own_requests <<< "$(timed_call "$d" "$digest")"
  printf '  first call, compiling (shares the artifact):  %8.3f s  %s store requests\n' "$compile" "$compile_requests"
  printf '  first call, from the shared artifact:         %8.3f s  %s store requests\n' "$shared" "$shared_requests"
  printf '  first call, no cluster key (compiles):        %8.3f s  %s store requests\n' "$nokey" "$nokey_requests"
  printf '  first call after a restart (own artifact):    %8.3f s  %s store requests\n' "$own" "$own_requests"
  printf '  warm call:                                    %8.3f s\n' "$warm"
done
