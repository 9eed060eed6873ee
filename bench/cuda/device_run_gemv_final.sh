#!/bin/bash
# Final device run of the gemv helper (session 2), sized for a short lease: the kernel test of the new
# binaries (falling back to the last validated ones if it fails), end-to-end `lmx bench` A/B
# (LMX_CUDA_GEMV_RING=1/0) for q4 and q8, the GEMV table, and bf16 end to end if time remains.
# Usage (worktree copy on the device): BIN=../bin2 BIN_OK=../bin bash bench/cuda/device_run_gemv_final.sh
set -o pipefail
export PYTHONUNBUFFERED=1 LMX_TEST_VERBOSE=1 PATH=/usr/local/cuda/bin:$PATH
L=$OUT/logs; mkdir -p $L; t0=$(date +%s); el() { echo $(( $(date +%s) - t0 )); }
B=$(cd ${BIN:-../bin2} && pwd); echo "== binaries $B: $(cat $B/COMMIT)"
timeout 60 $B/test_cuda_kernels > $L/test.log 2>&1; TRC=$?; echo "test_cuda_kernels rc=$TRC ($(el)s)"
grep -E "checks,|CHECK failed" $L/test.log | head -8
grep -E "gemv .* ring" $L/test.log | awk '{print $NF}' | sort -g | tail -1 | sed 's/^/worst rel of ring checks: /'
if [ $TRC != 0 ] && [ -n "${BIN_OK:-}" ]; then
  B=$(cd $BIN_OK && pwd); echo "== FALLBACK to validated binaries $B: $(cat $B/COMMIT)"; mv $L/test.log $L/test-failed.log
fi
for d in q4 q8 bf16; do
  [ $d = bf16 ] && [ $(el) -gt ${BF16_AFTER:-60} ] && { echo "skip bf16 end to end (time)"; continue; }
  $B/lmx dev random-model llama-3-8b /tmp/m-$d --dtype $d --group-size 64 --seed 1 --threads 16 > $L/gen-$d.log 2>&1 || { echo "gen $d failed"; tail -3 $L/gen-$d.log; continue; }
  for ring in 1 0; do
    [ $d = bf16 ] && [ $ring = 0 ] && continue
    LMX_CUDA_GEMV_RING=$ring timeout 40 $B/lmx bench /tmp/m-$d --device gpu --prompt 512 --gen 128 --reps 2 > $L/e2e-$d-ring$ring.log 2>&1
    echo "== lmx bench $d LMX_CUDA_GEMV_RING=$ring rc=$? ($(el)s)"; grep -E "decode|prefill|first token \(ms\)|load to first" $L/e2e-$d-ring$ring.log
  done
  rm -rf /tmp/m-$d
  [ $d = q8 ] && { timeout 25 $B/bench_cuda_kernels 20 "gemv layer" > $L/bench.log 2>&1; echo "== bench rc=$? ($(el)s)"; grep -E "q4g64|q8g64|bf16" $L/bench.log | cut -c1-130; }
done
tar -czf $OUT/gemv-final.tar.gz -C $OUT logs && rm -rf $L
echo "== total $(el)s"
