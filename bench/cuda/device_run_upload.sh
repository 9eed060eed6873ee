#!/bin/bash
# device_run_upload.sh — the upload helper's device run (session 2): fused q|k|v / gate|up weights,
# pinned staging uploads, prefill chunk 512. One call, ~5 minutes at most (BUDGET_S):
#   build (fresh /tmp dir, sm_90a, only the targets needed) → ctest -L gpu → GPU goldens →
#   random Llama-3-8B bf16/q4/q8: lmx bench --prompt 512 --gen 128 --reps 2 --json →
#   A/B extras while time is left: bf16 load with LMX_CUDA_STAGING=0, decode with LMX_FUSE=0.
# usage (repository root): bash bench/cuda/device_run_upload.sh TOKENIZER_TAR   (OUT = results folder)
set -u
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out}
mkdir -p "$OUT"
START=$(date +%s)
BUDGET=${BUDGET_S:-290}
W=/tmp/upl-$RANDOM
L=$W/logs
mkdir -p "$L" "$W/m" "$W/tok"
export PYTHONUNBUFFERED=1 LMX_LOG=${LMX_LOG:-warn} PATH=/usr/local/cuda/bin:$PATH
S=$OUT/summary.txt
: > "$S"
left() { echo $(( BUDGET - $(date +%s) + START )); }
say() { echo "== [$(( $(date +%s) - START ))s] $*" | tee -a "$S"; }
pack() { tar -C "$W" -czf "$OUT/logs.tar.gz" logs 2>/dev/null; }
run() { # NAME TIMEOUT NEED CMD...
  local n=$1 t=$2 need=$3; shift 3
  local l; l=$(left)
  if [ "$l" -lt "$need" ]; then say "$n: SKIPPED (${l}s left)"; return 99; fi
  [ "$t" -gt "$l" ] && t=$l
  local t0; t0=$(date +%s)
  timeout -k 5 "$t" "$@" > "$L/$n.log" 2>&1
  local rc=$?
  say "$n: rc=$rc in $(( $(date +%s) - t0 ))s"
  pack
  return $rc
}
say "commit ${LMX_COMMIT:-?}; $(nvidia-smi --query-gpu=name,pcie.link.gen.current,pcie.link.width.current --format=csv,noheader 2>&1 | head -1)"
B=/tmp/upload-build-$RANDOM
run configure 60 60 cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DLMX_SHARED_DIR=/nonexistent
run build 150 100 cmake --build "$B" -j16 --target lmx test_cuda_fused test_cuda_backend test_cuda_kernels test_golden
tail -5 "$L/build.log" >> "$S"
LMX=$B/lmx
[ -x "$LMX" ] || { say "no lmx binary"; pack; exit 1; }
run ctest_gpu 100 60 bash -c 'cd "$0" && ctest -L gpu --output-on-failure' "$B"
grep -E "tests passed|Failed|\*\*\*|upload of|fused vs unfused worst" "$L/ctest_gpu.log" | head -40 >> "$S"
run golden_gpu 60 40 env LMX_GOLDEN_EXTRA="--device gpu" LMX_GOLDEN_TOL=gpu \
  bash -c 'cd "$0" && ctest -L golden -j4 --output-on-failure' "$B"
grep -E "tests passed|Failed|\*\*\*" "$L/golden_gpu.log" | head -30 >> "$S"
TOK=()
if [ -f "${1:-}" ] && tar -xJf "$1" -C "$W/tok" 2>/dev/null; then
  [ -f "$W/tok/llama3/tokenizer.json" ] && TOK=(--tokenizer "$W/tok/llama3")
  [ -f "$W/tok/tokenizer.json" ] && TOK=(--tokenizer "$W/tok")
fi
for dt in bf16 q4 q8; do
  M=$W/m/$dt
  run gen_$dt 60 30 "$LMX" dev random-model llama-3-8b "$M" --dtype $dt --group-size 64 --seed 1 --threads 16 "${TOK[@]}" || continue
  run bench_$dt 60 25 env LMX_LOG=info bash -c 'o=$1; shift; exec "$@" > "$o"' _ "$OUT/bench-$dt.json" \
    "$LMX" bench "$M" --device gpu --prompt 512 --gen 128 --reps 2 --json
  grep -h "cuda backend: uploaded" "$L/bench_$dt.log" >> "$S"
  python3 -c "
import json,sys; j=json.load(open(sys.argv[1])); r=j['results']
print('%s: load %.3f s, load->first token %.3f s, prefill %.0f tok/s, decode %.1f tok/s' % (sys.argv[2], r['load_s'], r['load_to_first_token_s'], r['prefill_tok_s'], r['decode_tok_s']))" \
    "$OUT/bench-$dt.json" $dt >> "$S" 2>&1
done
# A/B: the old pageable upload path (bf16 load) and unfused decode (q4, bf16)
for ab in "bf16 LMX_CUDA_STAGING=0" "q4 LMX_FUSE=0" "bf16 LMX_FUSE=0"; do
  set -- $ab
  [ -d "$W/m/$1" ] || continue
  n=ab_$1_${2%%=*}
  run $n 40 25 env "$2" LMX_LOG=info bash -c 'o=$1; shift; exec "$@" > "$o"' _ "$W/$n.json" \
    "$LMX" bench "$W/m/$1" --device gpu --prompt 512 --gen 64 --reps 1 --json || continue
  grep -h "cuda backend: uploaded" "$L/$n.log" >> "$S"
  python3 -c "
import json,sys; j=json.load(open(sys.argv[1])); r=j['results']
print('%s: load %.3f s, load->first token %.3f s, prefill %.0f tok/s, decode %.1f tok/s' % (sys.argv[2], r['load_s'], r['load_to_first_token_s'], r['prefill_tok_s'], r['decode_tok_s']))" \
    "$W/$n.json" "$1 $2" >> "$S" 2>&1
done
say "done"
pack
cat "$S"
