#!/usr/bin/env bash
# cpu_attention_ab.sh — two builds of bench/cpu_attention.c (lmx_cpu_attention) A/B, interleaved
# (issue 11): per round, for each build, the attention calls of one PROMPT-token prefill (chunks of
# 128 rows at 0, 128, …) summed, and one decode step over PROMPT keys, per layer of the Llama-3.2-1B
# shape (32 query heads, 8 KV heads, head_dim 64). Prints the process's CPU ms and the wall ms.
#
#   bench/cpu_attention_ab.sh OLD_BIN NEW_BIN [--rounds 3] [--prompt 2048] [--threads 2]
set -euo pipefail
OLD=$1 NEW=$2
shift 2
ROUNDS=3 PROMPT=2048 THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;; --prompt) PROMPT=$2; shift 2 ;; --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
cpu_ms() { sed 's/.*(cpu \([0-9.]*\) ms).*/\1/'; }
wall_ms() { sed 's/.*: \([0-9.]*\) ms (cpu.*/\1/'; }
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r, load average $(uptime | sed 's/.*load average: //')"
  for bin in "$OLD" "$NEW"; do
    cpu=0 wall=0
    for c in $(seq 0 128 $((PROMPT - 1))); do
      t=$((PROMPT - c < 128 ? PROMPT - c : 128))
      line=$("$bin" 64 32 8 "$t" "$c" "$THREADS" 3)
      cpu=$(echo "$cpu + $(echo "$line" | cpu_ms)" | bc -l) wall=$(echo "$wall + $(echo "$line" | wall_ms)" | bc -l)
    done
    d=$("$bin" 64 32 8 1 $((PROMPT - 1)) "$THREADS" 20)
    printf '%s: prefill %d per layer cpu %.1f ms wall %.1f ms; decode at %d cpu %.3f ms wall %.3f ms\n' "$bin" \
      "$PROMPT" "$cpu" "$wall" "$PROMPT" "$(echo "$d" | cpu_ms)" "$(echo "$d" | wall_ms)"
  done
done
