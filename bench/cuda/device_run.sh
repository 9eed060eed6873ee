#!/bin/bash
# Device run for the cuda helper: build, GPU tests, microbenchmark, memcheck, SASS.
# Run from the repository root on the device machine: bash .devwork/cuda/run.sh
set -o pipefail
ROOT=$(pwd)
W=$ROOT/.devwork/cuda
export PYTHONUNBUFFERED=1 LMX_TEST_VERBOSE=1
eval "$(bash $ROOT/.devdeps/device-deps.sh install $ROOT/.devdeps)"
export PATH=/usr/local/cuda/bin:$PATH
cd $W
{ date -u; nvidia-smi; nvcc --version; nproc; cmake --version; } > $OUT/env.txt 2>&1
t0=$(date +%s)
if cmake -S src -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a -DLMX_SHARED_DIR=/nonexistent > $OUT/build.log 2>&1 \
   && cmake --build build -j16 >> $OUT/build.log 2>&1; then
  echo "== cmake build ok in $(( $(date +%s) - t0 ))s"
  TEST=build/tests/cuda/test_cuda_kernels; BENCH=build/bench/cuda/bench_cuda_kernels
  (cd build && timeout 240 ctest -L gpu --output-on-failure -V) > $OUT/test.log 2>&1; echo "ctest rc=$?"
else
  echo "== cmake build FAILED, manual build"; tail -5 $OUT/build.log
  mkdir -p fb; S=$W/src
  PK="libcjson libpcre2-8 libutf8proc"
  CF="-O2 -std=c11 -D_GNU_SOURCE -DLMX_HAVE_CUDA -DLMX_SOURCE_DIR=\"$S\" -DLMX_BINARY_DIR=\"$W/fb\" -DLMX_CLI_PATH=\"/bin/false\" -I$S/include -I$S/src -I$S/tests -I/usr/local/cuda/include $(pkg-config --cflags $PK)"
  LIBS="$(pkg-config --libs $PK) -L/usr/local/cuda/lib64 -lcudart_static -ldl -lrt -lpthread -lm"
  (cd fb && for f in $S/src/backend/cuda/*.cu; do nvcc -O3 -std=c++17 -DLMX_HAVE_CUDA -gencode arch=compute_90a,code=sm_90a -I$S/include -I$S/src -c $f -o $(basename $f).o & done; wait
   for f in $(find $S/src -name '*.c' -not -path '*/cli/*' -not -path '*/server/*'); do gcc $CF -c $f -o lib_$(basename $f).o & done; wait
   for t in tests/cuda/test_cuda_kernels tests/cuda/test_cuda_backend bench/cuda/bench_cuda_kernels; do
     gcc $CF -c $S/$t.c -o $(basename $t).o && g++ -o $(basename $t) $(basename $t).o lib_*.o *.cu.o $LIBS; done) >> $OUT/build.log 2>&1
  TEST=fb/test_cuda_kernels; BENCH=fb/bench_cuda_kernels
  { timeout 150 $TEST; echo "kernels rc=$?"; timeout 90 fb/test_cuda_backend; echo "backend rc=$?"; } > $OUT/test.log 2>&1
fi
grep -E "FAIL|CHECK failed|checks,|tests passed|Failed|Skipped|worst rel|rc=|Test time" $OUT/test.log | head -60
echo "== bench"
timeout 200 $BENCH 50 2>&1 | tee $OUT/bench.log
echo "== memcheck (time-limited)"
timeout 45 compute-sanitizer --tool memcheck --print-limit 10 $TEST > $OUT/memcheck.log 2>&1; echo "memcheck rc=$?"
grep -E "ERROR SUMMARY|Invalid|checks|ok  |FAIL" $OUT/memcheck.log | head -12
O=$(ls build/CMakeFiles/lmx_obj.dir/src/backend/cuda/cuda_gemv.cu.o fb/cuda_gemv.cu.o 2>/dev/null | head -1)
cuobjdump -sass $O > $OUT/sass_gemv.txt 2>&1
echo "LDG.E.128 count: $(grep -c 'LDG.E.128' $OUT/sass_gemv.txt)"
# instruction mix of the q4 decode GEMV (batch 1)
awk '/Function : _Z11gemv_q_fastILi4ELi1E/{f=1;next} /Function :/{f=0} f' $OUT/sass_gemv.txt | grep -oE "(LOP3|FADD|FFMA|IADD3|IMAD|SHF|LDG|FMUL)" | sort | uniq -c | tr '\n' ' '; echo
gzip -f $OUT/sass_gemv.txt
echo "== total $(( $(date +%s) - t0 ))s"
