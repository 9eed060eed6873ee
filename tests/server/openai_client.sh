#!/usr/bin/env bash
# openai_client.sh LMX MODELS_DIR WORK_DIR — installs the official `openai` npm package into
# WORK_DIR (once) and runs openai_client.mjs against `lmx serve` on 127.0.0.1. Exits 77 (skipped)
# without node/npm or when the registry cannot be reached; every step is time-bounded.
set -u
LMX=$1 MODELS=$2 WORK=$3
HERE=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null && command -v npm >/dev/null || { echo "SKIP: node/npm not installed"; exit 77; }
mkdir -p "$WORK"
if [ ! -f "$WORK/node_modules/openai/package.json" ]; then
  ( cd "$WORK" && [ -f package.json ] || echo '{"name":"lmx-openai-test","private":true}' > package.json
    timeout 180 npm install --no-audit --no-fund --loglevel=error openai >npm.log 2>&1 ) ||
    { echo "SKIP: npm install openai failed (no registry?)"; tail -5 "$WORK/npm.log"; exit 77; }
fi
cp "$HERE/openai_client.mjs" "$WORK/"
OUT="$WORK/serve.out"
LMX_LOG=error "$LMX" serve --port 0 --models-dir "$MODELS" --threads 1 --ctx 512 --api-key k3y >"$OUT" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
PORT=
for _ in $(seq 200); do
  PORT=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\).*|\1|p' "$OUT" | head -1)
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "lmx serve did not start:"; cat "$OUT"; exit 1; }
LMX_BASE_URL="http://127.0.0.1:$PORT/v1" LMX_MODEL=tiny-llama32-q8 LMX_KEY=k3y NO_PROXY='*' \
  timeout 120 node "$WORK/openai_client.mjs"
rc=$?
kill -TERM $PID; wait $PID; src=$?
trap - EXIT
[ $rc -eq 0 ] || exit $rc
[ $src -eq 0 ] || { echo "lmx serve exited with $src"; cat "$OUT"; exit 1; }
