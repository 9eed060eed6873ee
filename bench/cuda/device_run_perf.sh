#!/bin/bash
# Device run for the cudaperf helper: build the needed targets, GPU tests, microbenchmarks (with the
# tensor-core quantized GEMV's knobs and the fused decode step), optional memcheck, SASS mix.
# Run from the repository root on the device machine with the worktree copied to .devwork/cudaperf/src:
#   MEMCHECK=1 bash .devwork/cudaperf/src/bench/cuda/device_run_perf.sh
set -o pipefail
ROOT=$(pwd)
W=$ROOT/.devwork/cudaperf
export PYTHONUNBUFFERED=1 LMX_TEST_VERBOSE=1
eval "$(bash $ROOT/.devdeps/device-deps.sh install $ROOT/.devdeps)" > /dev/null 2>&1
export PATH=/usr/local/cuda/bin:$PATH
cd $W
{ date -u; nvidia-smi; nvcc --version; nproc; } > $OUT/env.txt 2>&1
t0=$(date +%s)
if cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DLMX_SHARED_DIR=/nonexistent > $OUT/build.log 2>&1 \
   && cmake --build build -j16 --target test_cuda_kernels test_cuda_backend bench_cuda_kernels >> $OUT/build.log 2>&1; then
  echo "== build ok in $(( $(date +%s) - t0 ))s"
else
  echo "== build FAILED"; grep -E "error|Error" $OUT/build.log | head -20; exit 1
fi
TEST=build/tests/cuda/test_cuda_kernels; BENCH=build/bench/cuda/bench_cuda_kernels
(cd build && timeout 200 ctest -L gpu --output-on-failure -V) > $OUT/test.log 2>&1; echo "ctest rc=$?"
grep -E "FAIL|CHECK failed|checks,|tests passed|Failed|worst rel|gemv q" $OUT/test.log | head -60
echo "== bench ($(( $(date +%s) - t0 ))s)"
timeout 200 $BENCH 50 > $OUT/bench.log 2>&1; echo "bench rc=$?"
grep -v "^  mma" $OUT/bench.log
grep "^  mma" $OUT/bench.log
if [ "${MEMCHECK:-0}" = 1 ]; then
  echo "== memcheck (time-limited)"
  timeout 45 compute-sanitizer --tool memcheck --print-limit 10 $TEST > $OUT/memcheck.log 2>&1; echo "memcheck rc=$?"
  grep -E "ERROR SUMMARY|Invalid|checks,|FAIL" $OUT/memcheck.log | head -12
fi
O=$(find build -name 'cuda_gemv_mma.cu.o' | head -1)
cuobjdump -sass $O > $OUT/sass_gemv_mma.txt 2>&1
for k in _Z10gemv_q_mmaILi4ELi4E _Z10gemv_q_mmaILi8ELi4E; do
  echo "$k: $(awk "/Function : $k/{f=1;next} /Function :/{f=0} f" $OUT/sass_gemv_mma.txt | grep -oE "(HMMA|LOP3|HADD2|HFMA2|SHF|LDG|LDS|FFMA|IMAD|IADD3|BRA|BAR)[.A-Z0-9]*" | sed 's/\..*//' | sort | uniq -c | tr '\n' ' ')"
done
gzip -f $OUT/sass_gemv_mma.txt
echo "== total $(( $(date +%s) - t0 ))s"
