#!/bin/bash
# Device run for the gemv helper (session 2): build the needed targets in a fresh dir, the kernel test,
# the GEMV microbenchmark (sections from $SECTIONS, default "gemv layer"), optional end-to-end `lmx bench`
# (E2E=1) and memcheck (MEMCHECK=1), SASS instruction mix of the streaming kernel.
# Run from the worktree root copied to the device (cd .devwork/gemv/src && bash bench/cuda/device_run_gemv.sh).
set -o pipefail
export PYTHONUNBUFFERED=1 LMX_TEST_VERBOSE=1
export PATH=/usr/local/cuda/bin:$PATH
SRC=$(pwd)
B=/tmp/gemv-$RANDOM
L=$OUT/logs; mkdir -p $L
{ date -u; nvidia-smi; nvcc --version; nproc; git -C $SRC log -1 --oneline 2>/dev/null; } > $L/env.txt 2>&1
t0=$(date +%s)
TG="test_cuda_kernels bench_cuda_kernels"; [ "${E2E:-0}" = 1 ] && TG="$TG lmx"
if [ -n "${BIN:-}" ] && [ -x "$BIN/test_cuda_kernels" ]; then
  # binaries built elsewhere from the same commit with -DCMAKE_CUDA_ARCHITECTURES=90a (saves device time)
  BIN=$(cd $BIN && pwd)
  mkdir -p $B/tests/cuda $B/bench/cuda
  ln -s $BIN/test_cuda_kernels $B/tests/cuda/; ln -s $BIN/bench_cuda_kernels $B/bench/cuda/; ln -s $BIN/lmx $B/lmx
  echo "== prebuilt binaries from $BIN: $(cat $BIN/COMMIT 2>/dev/null)"
  O=$BIN/bench_cuda_kernels
elif cmake -S $SRC -B $B -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DLMX_SHARED_DIR=/nonexistent > $L/build.log 2>&1 \
   && cmake --build $B -j16 --target $TG >> $L/build.log 2>&1; then
  echo "== build ok in $(( $(date +%s) - t0 ))s"
else
  echo "== build FAILED"; grep -E "error|Error" $L/build.log | head -20; tar -czf $OUT/gemv-logs.tar.gz -C $OUT logs; exit 1
fi
[ -z "${O:-}" ] && O=$(find $B -name 'cuda_gemv_mma.cu.o' | head -1)
cuobjdump -sass $O > $L/sass_gemv_mma.txt 2>&1
for k in _Z9gemv_ringILi4ELi2ELi4E13__nv_bfloat16 _Z9gemv_ringILi8ELi2ELi4E13__nv_bfloat16 _Z9gemv_ringILi16ELi2ELi4Ef _Z9gemv_ringILi4ELi0ELi4E13__nv_bfloat16; do
  echo "$k: $(awk "/Function : $k/{f=1;next} /Function :/{f=0} f" $L/sass_gemv_mma.txt | grep -oE "(HMMA|LOP3|HADD2|HFMA2|PRMT|SHF|LDGSTS|LDG|LDS|STS|FFMA|FADD|IMAD|IADD3|LEA|ISETP|BRA|BAR|LDL|STL|SHFL|MOV|BSSY)[.A-Z0-9]*" | sed 's/\..*//' | sort | uniq -c | tr '\n' ' ')"
done
timeout ${TEST_TIMEOUT:-150} $B/tests/cuda/test_cuda_kernels > $L/test.log 2>&1; TRC=$?; echo "test_cuda_kernels rc=$TRC"
if [ $TRC != 0 ] && [ -n "${BIN_OK:-}" ] && [ -x "$BIN_OK/test_cuda_kernels" ]; then
  # the new binaries failed: measure the last validated ones instead (and say so)
  BIN_OK=$(cd $BIN_OK && pwd); echo "== FALLBACK to validated binaries $BIN_OK: $(cat $BIN_OK/COMMIT 2>/dev/null)"
  grep -E "CHECK failed|FAIL" $L/test.log | head -10; mv $L/test.log $L/test-failed.log
  rm -f $B/tests/cuda/test_cuda_kernels $B/bench/cuda/bench_cuda_kernels $B/lmx
  ln -s $BIN_OK/test_cuda_kernels $B/tests/cuda/; ln -s $BIN_OK/bench_cuda_kernels $B/bench/cuda/; ln -s $BIN_OK/lmx $B/lmx
  timeout ${TEST_TIMEOUT:-150} $B/tests/cuda/test_cuda_kernels > $L/test.log 2>&1; echo "test_cuda_kernels (validated) rc=$?"
fi
grep -E "FAIL|CHECK failed|checks,|failed" $L/test.log | head -30
grep -E "gemv .*(ring d4 w16 b1|mma|scalar)" $L/test.log | awk '{print $NF}' | sort -g | tail -3 | tr '\n' ' '; echo "(worst rel of gemv ring/mma/scalar checks)"
echo "== bench ($(( $(date +%s) - t0 ))s)"
timeout ${BENCH_TIMEOUT:-150} $B/bench/cuda/bench_cuda_kernels ${REPS:-30} "${SECTIONS:-gemv layer}" > $L/bench.log 2>&1; echo "bench rc=$?"
cat $L/bench.log
if [ "${MEMCHECK:-0}" = 1 ]; then
  echo "== memcheck"
  timeout 60 compute-sanitizer --tool memcheck --print-limit 10 $B/tests/cuda/test_cuda_kernels > $L/memcheck.log 2>&1; echo "memcheck rc=$?"
  grep -E "ERROR SUMMARY|Invalid|checks,|FAIL" $L/memcheck.log | head -12
fi
if [ "${E2E:-0}" = 1 ]; then
  echo "== end to end ($(( $(date +%s) - t0 ))s)"
  for d in q4 q8 bf16; do
    $B/lmx dev random-model llama-3-8b /tmp/m-$d --dtype $d --group-size 64 --seed 1 --threads 16 > $L/gen-$d.log 2>&1 || { echo "gen $d failed"; tail -3 $L/gen-$d.log; continue; }
    for ring in 1 0; do
      [ $d = bf16 ] && [ $ring = 0 ] && continue  # bf16 does not use the ring kernel by default
      LMX_CUDA_GEMV_RING=$ring timeout 120 $B/lmx bench /tmp/m-$d --device gpu --prompt 512 --gen 128 --reps 2 > $L/e2e-$d-ring$ring.log 2>&1
      echo "lmx bench $d LMX_CUDA_GEMV_RING=$ring rc=$?"; tail -8 $L/e2e-$d-ring$ring.log
    done
    rm -rf /tmp/m-$d
  done
fi
gzip -f $L/sass_gemv_mma.txt
tar -czf $OUT/gemv-logs.tar.gz -C $OUT logs && rm -rf $L
echo "== total $(( $(date +%s) - t0 ))s"
