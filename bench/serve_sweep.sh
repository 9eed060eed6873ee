#!/bin/bash
# bench/serve_sweep.sh — aggregate generated tok/s of `lmx serve` at several stream counts: starts
# the server on a models directory, runs bench_serve once per --streams value (all streams at once,
# one batch when the engine has batched steps), prints one JSON line each, stops the server.
#
#   bash bench/serve_sweep.sh BUILD MODELS_DIR MODEL [--streams "1 8 16 64"] [--tokens 128]
#                             [--prompt-words 128] [--device gpu|cpu] [--threads N] [--ctx 512]
#
#   BUILD       a build folder with lmx and tests/server/bench_serve (cmake --build BUILD)
#   MODELS_DIR  the models directory given to `lmx serve --models-dir`; MODEL a name under it
# The server runs with --parallel = the largest --streams value and a prompt cache (distinct
# prompts: nothing is shared between streams). Issue 10's targets: GPU, Llama-3-8B 4-bit, 64 streams
# of 128 tokens after 128-token prompts ≥ 15,000 tok/s; CPU (2 threads, Llama-3.2-1B 4-bit):
# 8 streams ≥ 3 × one.
set -euo pipefail
BUILD=${1:?build folder}; MODELS=${2:?models dir}; MODEL=${3:?model name}; shift 3
STREAMS="1 8 16 64"; TOKENS=128; WORDS=128; DEVICE=gpu; THREADS=0; CTX=512
while [ $# -gt 0 ]; do
    case "$1" in
    --streams) STREAMS=$2; shift 2 ;;
    --tokens) TOKENS=$2; shift 2 ;;
    --prompt-words) WORDS=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --ctx) CTX=$2; shift 2 ;;
    *) echo "serve_sweep: unknown option $1" >&2; exit 2 ;;
    esac
done
MAX=1
for n in $STREAMS; do [ "$n" -gt "$MAX" ] && MAX=$n; done
PORT=$((20000 + RANDOM % 20000))
LOG=$(mktemp)
"$BUILD/lmx" serve --port "$PORT" --models-dir "$MODELS" --device "$DEVICE" --threads "$THREADS" \
    --ctx "$CTX" --parallel "$MAX" --queue "$MAX" >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 100); do grep -q listening "$LOG" && break; sleep 0.2; done
grep -q listening "$LOG" || { cat "$LOG" >&2; exit 1; }
URL=http://127.0.0.1:$PORT
# warm-up: the lazy load, the pool, the first steps
"$BUILD/tests/server/bench_serve" "$URL" "$MODEL" --streams 1 --tokens 8 --prompt-words 8 >/dev/null
for n in $STREAMS; do
    "$BUILD/tests/server/bench_serve" "$URL" "$MODEL" --streams "$n" --tokens "$TOKENS" --prompt-words "$WORDS"
done
curl -s "$URL/metrics" | grep -E '^lmx_(batch_size_(sum|count)|kv_pool_bytes|prompt_cache_(hits|misses)_total) ' || true
