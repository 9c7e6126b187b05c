#!/usr/bin/env bash
# A cluster on 127.0.0.1, shown working: an S3 server (moto), three `burncache
# serve` nodes with one cluster key behind HAProxy, then
#   - a component deployed through one node, 1,000 calls through the load balancer,
#     every answer right, and exactly one compile across the nodes;
#   - a fourth node, started later, serving its first call from the shared artifact,
#     and its first script on the JavaScript runtime another node prepared;
#   - a tampered shared artifact refused by a fifth node, which compiles and answers;
#   - one node killed under load: calls started after it died all succeed through
#     the others; restarted, it rejoins and serves warm from its own artifacts;
# and a summary. Exits non-zero when any of it does not hold.
#
#   scripts/cluster.sh                 (BURNCACHE=path/to/burncache to pick the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if ! command -v haproxy > /dev/null; then
  echo "cluster: installing haproxy" >&2
  (apt-get update -qq && apt-get install -y -qq haproxy) > /dev/null
fi
if [ -z "${BURNCACHE:-}" ]; then
  cargo build --quiet -p burncache --bin burncache
fi
bc=${BURNCACHE:-$root/target/debug/burncache}
bash scripts/build-examples.sh > /dev/null
add_one="$root/target/wasm32-wasip2/release/add_one.wasm"
python="$root/.venv/bin/python"
bash scripts/s3-server.sh install

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

server=$(bash scripts/s3-server.sh start --owner-pid $$)
s3_pid=${server##*pid=}
pids+=("$s3_pid")
endpoint=${server#endpoint=}
endpoint=${endpoint%% *}
export AWS_ENDPOINT_URL=$endpoint AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=test \
  AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
prefix="cluster-$$"
export BURNCACHE_STORE="s3://burncache-test/$prefix"
umask 077
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/cluster.key"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/admin-token"
token=$(cat "$work/admin-token")

free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "cluster: $1 never became ready" >&2
  exit 1
}

declare -A port pid
# Starts node $1 (its own artifact directory, kept across restarts).
start_node() {
  local n=$1
  [ -n "${port[$n]:-}" ] || port[$n]=$(free_port)
  "$bc" serve --addr "127.0.0.1:${port[$n]}" \
    --artifacts "$work/node$n/artifacts" \
    --cluster-key-file "$work/cluster.key" \
    --admin-token-file "$work/admin-token" \
    --max-in-flight-per-client 128 --max-connections-per-client 1024 \
    > "$work/node$n.log" 2>&1 &
  pid[$n]=$!
  pids+=("${pid[$n]}")
  wait_ready "http://127.0.0.1:${port[$n]}"
}
metric() { # node, name
  curl -s "http://127.0.0.1:${port[$1]}/metrics" \
    | awk -v name="burncache_$2" '$1 == name {print $2}' | cut -d. -f1
}

# Waits until node $1's metric $2 is at least $3.
wait_metric() {
  for _ in $(seq 600); do
    [ "$(metric "$1" "$2")" -ge "$3" ] 2> /dev/null && return 0
    sleep 0.1
  done
  echo "cluster: node $1's $2 never reached $3" >&2
  exit 1
}

for n in 1 2 3; do start_node "$n"; done

lb_port=$(free_port)
cat > "$work/haproxy.cfg" << CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout
frontend calls
  bind 127.0.0.1:$lb_port
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  default-server inter 500ms fall 2 rise 2
  server node1 127.0.0.1:${port[1]} check
  server node2 127.0.0.1:${port[2]} check
  server node3 127.0.0.1:${port[3]} check
CFG
haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.log" 2>&1 &
pids+=($!)
lb="http://127.0.0.1:$lb_port"
for _ in $(seq 100); do curl -s -o /dev/null "$lb/healthz" && break; sleep 0.1; done

digest=$(curl -s -X PUT -H "authorization: Bearer $token" --data-binary "@$add_one" \
  "http://127.0.0.1:${port[1]}/v1/components" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
echo "cluster: deployed add-one through node 1: $digest"
# Node 1 shares the compiled code in the background.
wait_metric 1 artifact_shares_total 1

# Runs $2 calls through the load balancer on 8 threads; prints "ok failed", and the
# failures (with the time they started) to $3 when given.
load() {
  "$python" - "$lb" "$digest" "$1" "${2:-/dev/null}" << 'PY'
import concurrent.futures, json, sys, time, urllib.request
lb, digest, count, failures = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def call(i):
    started = time.time()
    body = json.dumps({"n": i}).encode()
    request = urllib.request.Request(f"{lb}/v1/components/{digest}/call", data=body,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
            return (started, answer == {"n": i + 1}, str(answer))
    except Exception as e:
        return (started, False, str(e))
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    results = list(pool.map(call, range(count)))
with open(failures, "w") as out:
    for started, ok, why in results:
        if not ok:
            out.write(f"{started:.3f} {why}\n")
print(sum(ok for _, ok, _ in results), sum(not ok for _, ok, _ in results))
PY
}

read -r ok failed <<< "$(load 1000)"
compiles=$(( $(metric 1 compiles_total) + $(metric 2 compiles_total) + $(metric 3 compiles_total) ))
echo "cluster: 1000 calls through HAProxy: $ok right, $failed failed; compiles across the three nodes: $compiles"
[ "$ok" = 1000 ] && [ "$compiles" = 1 ] || { echo "cluster: FAILED: expected 1000 right and one compile" >&2; exit 1; }

start_node 4
curl -s -o /dev/null -H 'content-type: application/json' --data '{"n": 1}' \
  "http://127.0.0.1:${port[4]}/v1/components/$digest/call"
echo "cluster: node 4, started later: compiles $(metric 4 compiles_total), shared-artifact loads $(metric 4 artifact_fetches_total)"
[ "$(metric 4 compiles_total)" = 0 ] && [ "$(metric 4 artifact_fetches_total)" = 1 ] \
  || { echo "cluster: FAILED: node 4 should have loaded the shared artifact" >&2; exit 1; }

# A script: node 1 prepares the JavaScript runtime and shares it; node 4 loads it.
script=$(printf 'module.exports = (d) => ({ n: d.n * 2 });\n' \
  | curl -s -X PUT -H "authorization: Bearer $token" --data-binary @- \
    "http://127.0.0.1:${port[1]}/v1/components" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
wait_metric 1 artifact_shares_total 2
answer=$(curl -s -H 'content-type: application/json' --data '{"n": 21}' \
  "http://127.0.0.1:${port[4]}/v1/components/$script/call")
echo "cluster: a script through node 4: answer $answer; runtime compiles $(metric 4 js_runtime_compiles_total), shared-runtime loads $(metric 4 js_runtime_fetches_total)"
[ "$answer" = '{"n":42}' ] && [ "$(metric 4 js_runtime_compiles_total)" = 0 ] && [ "$(metric 4 js_runtime_fetches_total)" = 1 ] \
  || { echo "cluster: FAILED: node 4 should have run the script on the shared runtime" >&2; exit 1; }

# Tamper with the shared artifact in the bucket (a byte flipped), then a fresh node.
"$python" - "$endpoint" "$prefix" "$digest" << 'PY'
import sys, boto3
endpoint, prefix, digest = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
listed = s3.list_objects_v2(Bucket="burncache-test", Prefix=f"{prefix}/artifacts/")
key = next(o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(f"{digest}.cwasm"))
body = bytearray(s3.get_object(Bucket="burncache-test", Key=key)["Body"].read())
body[len(body) // 2] ^= 0xFF
s3.put_object(Bucket="burncache-test", Key=key, Body=bytes(body))
PY
start_node 5
answer=$(curl -s -H 'content-type: application/json' --data '{"n": 1}' \
  "http://127.0.0.1:${port[5]}/v1/components/$digest/call")
echo "cluster: node 5 after tampering: answer $answer, refused shared artifacts $(metric 5 shared_rejections_total), compiles $(metric 5 compiles_total)"
[ "$answer" = '{"n":2}' ] && [ "$(metric 5 shared_rejections_total)" = 1 ] && [ "$(metric 5 compiles_total)" = 1 ] \
  || { echo "cluster: FAILED: node 5 should have refused the tampered artifact and compiled" >&2; exit 1; }

# Kill node 2 under load; calls that start after it died must all succeed.
load 3000 "$work/failures" > "$work/load.out" &
loader=$!
# Killed once a third of the calls are done, so that most start after it.
wait_metric 1 calls_ok_total $(( $(metric 1 calls_ok_total) + 300 ))
{ kill -9 "${pid[2]}" && wait "${pid[2]}"; } 2> /dev/null || true
killed_at=$("$python" -c 'import time; print(f"{time.time():.3f}")')
wait "$loader"
read -r ok failed < "$work/load.out"
after=$(awk -v t="$killed_at" '$1 > t' "$work/failures" | wc -l)
echo "cluster: 3000 calls with node 2 killed during them: $ok right, $failed failed ($after of the failures started after the kill)"
[ "$after" = 0 ] || { echo "cluster: FAILED: calls after the kill failed:" >&2; head "$work/failures" >&2; exit 1; }
[ "$ok" -ge 1500 ] || { echo "cluster: FAILED: too few calls ran" >&2; exit 1; }

start_node 2
curl -s -o /dev/null -H 'content-type: application/json' --data '{"n": 1}' \
  "http://127.0.0.1:${port[2]}/v1/components/$digest/call"
echo "cluster: node 2 restarted: compiles $(metric 2 compiles_total), own-artifact loads $(metric 2 artifact_loads_total)"
[ "$(metric 2 compiles_total)" = 0 ] && [ "$(metric 2 artifact_loads_total)" = 1 ] \
  || { echo "cluster: FAILED: node 2 should have come back warm" >&2; exit 1; }

echo
echo "summary"
printf '  %-6s %9s %9s %15s %14s\n' node calls compiles artifact-loads shared-loads
for n in 1 2 3 4 5; do
  printf '  %-6s %9s %9s %15s %14s\n' "node$n" "$(metric "$n" calls_ok_total)" "$(metric "$n" compiles_total)" \
    "$(metric "$n" artifact_loads_total)" "$(metric "$n" artifact_fetches_total)"
done
echo "  (node 2's counts are since its restart)"
echo "cluster: all checks passed"
