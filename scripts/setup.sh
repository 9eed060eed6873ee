#!/usr/bin/env bash
# setup.sh — on a fresh Debian 12 machine: install the build dependencies, build lmx, and run a
# small model (the committed demo model, models/demo) to show the whole path works.
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

MODEL=models/demo
echo "== lmx generate $MODEL (the demo model: 5 M parameters trained on the King James Bible; real models: lmx pull)"
./build/lmx generate "$MODEL" --prompt "In the beginning" --max-tokens 48 --temp 0.8 --top-p 0.9 --seed 3 --ctx 1024
echo
