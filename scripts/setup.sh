#!/usr/bin/env bash
# setup.sh — on a fresh Debian 12 machine: install the build dependencies, build lmx, and run a
# small model (a committed random-weight test model) to show the whole path works.
#   bash scripts/setup.sh            # Release build in ./build
#   LMX_SKIP_APT=1 bash scripts/setup.sh   # when the packages are already there
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config xz-utils clang libclang-rt-dev
      libcjson-dev libpcre2-dev libutf8proc-dev libssl-dev
      libmicrohttpd-dev libcurl4-openssl-dev)

if [ "${LMX_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

MODEL=tests/fixtures/models/llama-tiny
if [ -d "$MODEL" ]; then
  echo "== lmx generate $MODEL (random weights: the tokens are meaningless, the path is real)"
  ./build/lmx generate "$MODEL" --prompt-ids 1,2,3,4,5 --max-tokens 16 --temp 0 --json
fi
