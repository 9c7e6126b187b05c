#!/usr/bin/env bash
# Installs what building and testing burncache needs on a fresh machine, and is safe
# to run again:
#   - the wasm32-wasip2 Rust target (guests, and the JavaScript runtime);
#   - clang 19 and the wasi-libc headers, for the JavaScript runtime's C half
#     (QuickJS), from Debian's packages.
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
