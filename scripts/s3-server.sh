#!/usr/bin/env bash
# A local S3-compatible server for the tests: moto's server, from PyPI, in .venv/.
#
#   s3-server.sh install                 install moto into .venv (once)
#   s3-server.sh start [--port P] [--bucket B] [--owner-pid PID]
#                                        start on 127.0.0.1, wait until it answers,
#                                        create the bucket; prints `endpoint=URL pid=PID`.
#                                        With --owner-pid, the server is stopped when
#                                        that process exits.
#   s3-server.sh stop PID                stop a server started here
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
python="$venv/bin/python"

install() {
  if [ ! -x "$venv/bin/moto_server" ]; then
    echo "s3-server: installing moto[server] into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.*" >&2
  fi
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local port="" bucket="burncache-test" owner=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --bucket) bucket="$2"; shift 2 ;;
      --owner-pid) owner="$2"; shift 2 ;;
      *) echo "s3-server: unknown option $1" >&2; exit 2 ;;
    esac
  done
  install
  [ -n "$port" ] || port="$(free_port)"
  mkdir -p "$root/target"
  local log="$root/target/s3-server-$port.log"
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$log" 2>&1 < /dev/null &
  local pid=$!
  local endpoint="http://127.0.0.1:$port"
  # Wait until it answers, then create the bucket (moto takes an unsigned PUT).
  "$python" - "$endpoint" "$bucket" "$pid" <<'PY' || { kill "$pid" 2>/dev/null; cat "$log" >&2; exit 1; }
import os, sys, time, urllib.request, urllib.error
endpoint, bucket, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1)
        break
    except urllib.error.HTTPError:
        break
    except Exception:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit("s3-server: moto exited while starting")
        if time.time() > deadline:
            sys.exit("s3-server: moto did not answer within 60 s")
        time.sleep(0.1)
request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
urllib.request.urlopen(request, timeout=5)
PY
  if [ -n "$owner" ]; then
    # A watchdog in its own session: stops the server once the owner is gone.
    setsid bash -c "while kill -0 $owner 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.5; done; kill $pid 2>/dev/null" \
      > /dev/null 2>&1 < /dev/null &
  fi
  echo "endpoint=$endpoint pid=$pid"
}

stop() {
  local pid="$1"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) stop "$2" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
