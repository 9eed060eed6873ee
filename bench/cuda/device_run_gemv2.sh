#!/bin/bash
# gemv2 helper: V1 vs V2 (mode 3) of the streaming tensor-core GEMV, for the lead's final device run.
# Assumes: cwd = repo root of the merged tree, built at $B (all targets incl. bench_cuda_kernels),
# models at $M4 (q4), $M8 (q8), $MB (bf16); $OUT exists. About 35-50 s. Everything goes to $OUT/gemv2.txt.
set -u
R=$OUT/gemv2.txt
say() { echo "== $*" >> "$R"; }
say "gemv2 device.sh $(date -u +%FT%TZ) commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo ?)"
BK=$(find "$B" -name bench_cuda_kernels -type f -perm -u+x 2>/dev/null | head -1)
LMX=${LMX:-$B/lmx}
# 1. per-GEMV times: scalar / policy / V1 (mode 2 d3 w16 b1) / V2 knob sets, q8 + q4 g64, 7 decode shapes
if [ -n "$BK" ]; then
  say "bench_cuda_kernels 20 gv2"
  timeout 60 "$BK" 20 gv2 >> "$R" 2>&1 || say "bench_cuda_kernels rc=$?"
else
  say "bench_cuda_kernels not found under $B"
fi
# 1b. SASS instruction counts of V1 vs V2 (no disassembler on the dev machines)
OBJ=$(find "$B" -name 'cuda_gemv_mma.cu.o' 2>/dev/null | head -1)
CUOBJ=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -1)
if [ -n "$OBJ" ] && [ -n "$CUOBJ" ] && [ -f bench/cuda/sass_count.py ]; then
  say "SASS counts ($OBJ)"
  timeout 60 "$CUOBJ" -sass "$OBJ" 2>/dev/null | timeout 30 python3 bench/cuda/sass_count.py >> "$R" 2>&1 || say "sass rc=$?"
else
  say "SASS counts skipped (obj '$OBJ', cuobjdump '$CUOBJ')"
fi
# 2. end to end, A/B by LMX_CUDA_GEMV_V2 (q4 first: the main target)
for M in "${M4:-}" "${M8:-}"; do
  [ -n "$M" ] || continue
  for V in 0 1; do
    say "LMX_CUDA_GEMV_V2=$V lmx bench $M --device gpu --prompt 64 --gen 128 --reps 2"
    LMX_CUDA_GEMV_V2=$V timeout 60 "$LMX" bench "$M" --device gpu --prompt 64 --gen 128 --reps 2 >> "$R" 2>&1 \
      || say "lmx bench rc=$?"
  done
done
# 2b. dense bf16 on the V2 ring (LMX_CUDA_GEMV_V2=2) vs gemv_dense
if [ -n "${MB:-}" ]; then
  for V in 0 2; do
    say "LMX_CUDA_GEMV_V2=$V lmx bench $MB --device gpu --prompt 64 --gen 128 --reps 2"
    LMX_CUDA_GEMV_V2=$V timeout 60 "$LMX" bench "$MB" --device gpu --prompt 64 --gen 128 --reps 2 >> "$R" 2>&1 \
      || say "lmx bench rc=$?"
  done
fi
say "gemv2 done $(date -u +%FT%TZ)"
