#!/bin/bash
# bench/run_device.sh — the one script for the GPU machine: build, GPU tests, end-to-end benchmarks,
# kernel microbenchmarks, memcheck; optionally an older commit built and benchmarked beside the
# current tree in the same call (same card, interleaved runs) to show that a change kept the speed.
#
#   bash bench/run_device.sh [STEPS] [OPTIONS]        (from anywhere; it works in the repository root)
#
# Steps (default --tests --bench; --compare alone means --bench):
#   --tests         ctest -L gpu, then the golden suite on the GPU (LMX_GOLDEN_TOL=gpu)
#   --bench         `lmx bench` of random-weight --shape models in each of --dtypes (bf16, q8, q4)
#   --kernels       bench_cuda_kernels (--kernel-reps N, --kernel-sections "gemv layer ...")
#   --memcheck      compute-sanitizer memcheck over the kernel tests (test_cuda_kernels, _weights, _attention)
#   --host-cpu      the CPU figure: Llama-3.2-1B q4 on all host cores
#   --profile       Nsight Compute over a few decode steps of each --dtypes model: per-kernel time, DRAM
#                   bytes and GB/s of the last decode step (bench/ncu_step.py), written to profile.txt
#   --all           every step
# What is measured:
#   --commit REV    build and measure REV instead of the working tree
#   --compare OLD   also build OLD and run every benchmark interleaved with the new tree (old, new,
#                   new, old, ... over --rounds rounds), then print new/old ratios of decode, prefill
#                   and load→first token; decode and prefill must be within --tolerance percent.
#                   OLD (and REV) is a commit, a source folder, or a .tar[.gz|.xz] of a source tree.
#                   A commit comes from .devwork/run_device/src-OLD.tar.gz when that exists (see
#                   --pack: the device copy's .git may be stale), else from `git archive`.
#   --pack REV      (on the development machine, not the device) write .devwork/run_device/src-REV.tar.gz
#                   with `git archive` and print the device command and its carry; then exit
# Options:
#   --out DIR           results folder (default $OUT, else /tmp/lmx-device/out)
#   --device gpu|cpu    where the benchmarks run (default gpu; cpu checks the script without a GPU)
#   --tiny              scaled-down models (2 layers, widths / 16, no tokenizer): seconds on a CPU
#   --shape S           default llama-3-8b (also llama-3.2-1b, qwen3-0.6b, qwen3-30b-a3b: the MoE shape,
#                       17 GB at q4: --dtypes q4 --budget 590; gpt-oss-20b: --dtypes mxfp4-q8, 12 GB);
#                       --dtypes "q4 bf16 q8" (the order they run in)
#   --prompt N --gen N --reps N   `lmx bench` sizes (default 512 / 128 / 3)
#   --rounds N          runs of each model per tree (default 3 with --compare, else 1)
#   --tolerance PCT     --compare: allowed |new/old - 1| of decode and prefill (default 3)
#   --jobs N            build and model-generation threads (default nproc; split between two builds)
#   --budget S          wall-clock budget; a step that no longer fits is skipped (default 480)
#   --hw TAG            hardware tag of the result names (default from nvidia-smi: h100, h200, ...)
#   --tokenizer PATH    llama3 tokenizer folder or .tar.xz (default tests/fixtures/tokenizers/llama3.tar.xz)
#   --cuda-arch A       CMAKE_CUDA_ARCHITECTURES (default 90a-real: H100/H200 only, builds fastest)
#   --no-cuda           configure with -DLMX_CUDA=OFF (a CPU-only check of the script)
# Environment: LMX_COMMIT (the commit recorded for the current tree; default `git rev-parse`),
#   LMX_DEVICE_WORK (work folder: sources, builds, models, logs; default /tmp/lmx-device; builds and
#   models there are reused by a later call on the same machine).
# $OUT receives at most 8 files: summary.txt, compare.json (--compare), logs.tar.gz (every log and
# every run's JSON), one <date>-<hw>-<shape>-<dtype>.json per dtype (the current tree's run with the
# median decode: the file to commit under bench/results), the host CPU JSON, kernels.txt.
# Exit status: 0 when every step ran and succeeded (and --compare is within tolerance), else 1.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1

usage() { sed -n '2,/^set -u$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
DO_TESTS=0 DO_BENCH=0 DO_KERNELS=0 DO_MEMCHECK=0 DO_HOSTCPU=0 DO_PROFILE=0 ANY_STEP=0
NEW_REV="" OLD_REV="" PACK=""
OUTDIR=""
DEVICE=gpu TINY=0 SHAPE=llama-3-8b DTYPES="q4 bf16 q8" PROMPT=512 GEN=128 REPS=3 ROUNDS="" TOL=3
JOBS=$(nproc) BUDGET=480 HW="" TOKARG=$ROOT/tests/fixtures/tokenizers/llama3.tar.xz
CUDA_ARCH=90a-real NO_CUDA=0 KREPS=30 KSECTIONS=all
while [ $# -gt 0 ]; do
  opt=$1
  case $opt in
    --commit|--compare|--pack|--out|--device|--shape|--dtypes|--prompt|--gen|--reps|--rounds|--tolerance|\
    --jobs|--budget|--hw|--tokenizer|--cuda-arch|--kernel-reps|--kernel-sections)
      [ $# -ge 2 ] || { echo "run_device.sh: $opt needs a value" >&2; exit 2; }
      val=$2; shift;;
  esac
  case $opt in
    --tests) DO_TESTS=1 ANY_STEP=1;;
    --bench) DO_BENCH=1 ANY_STEP=1;;
    --kernels) DO_KERNELS=1 ANY_STEP=1;;
    --memcheck) DO_MEMCHECK=1 ANY_STEP=1;;
    --host-cpu) DO_HOSTCPU=1 ANY_STEP=1;;
    --profile) DO_PROFILE=1 ANY_STEP=1;;
    --all) DO_TESTS=1 DO_BENCH=1 DO_KERNELS=1 DO_MEMCHECK=1 DO_HOSTCPU=1 ANY_STEP=1;;
    --commit) NEW_REV=$val;;
    --compare) OLD_REV=$val;;
    --pack) PACK=$val;;
    --out) OUTDIR=$val;;
    --device) DEVICE=$val;;
    --tiny) TINY=1;;
    --shape) SHAPE=$val;;
    --dtypes) DTYPES=$val;;
    --prompt) PROMPT=$val;;
    --gen) GEN=$val;;
    --reps) REPS=$val;;
    --rounds) ROUNDS=$val;;
    --tolerance) TOL=$val;;
    --jobs) JOBS=$val;;
    --budget) BUDGET=$val;;
    --hw) HW=$val;;
    --tokenizer) TOKARG=$val;;
    --cuda-arch) CUDA_ARCH=$val;;
    --no-cuda) NO_CUDA=1;;
    --kernel-reps) KREPS=$val;;
    --kernel-sections) KSECTIONS=$val;;
    -h|--help) usage; exit 0;;
    *) echo "run_device.sh: unknown argument $opt (see --help)" >&2; exit 2;;
  esac
  shift
done
case $DEVICE in gpu|cpu) ;; *) echo "run_device.sh: --device gpu|cpu" >&2; exit 2;; esac
for v in PROMPT GEN REPS JOBS BUDGET KREPS; do
  case ${!v} in ''|*[!0-9]*) echo "run_device.sh: ${v,,} must be a number" >&2; exit 2;; esac
done
safe() { printf '%s' "$1" | tr -c 'A-Za-z0-9._-' '_'; }

# ---- --pack: on the development machine, a source archive of REV for a device without its history ----
if [ -n "$PACK" ]; then
  h=$(git rev-parse --short=12 --verify -q "$PACK^{commit}") || { echo "run_device.sh: $PACK is not a commit here" >&2; exit 1; }
  d=$ROOT/.devwork/run_device
  mkdir -p "$d"
  git archive --format=tar.gz -o "$d/src-$(safe "$PACK").tar.gz" "$h" || exit 1
  echo "$h" > "$d/src-$(safe "$PACK").commit"
  head=$(git rev-parse --short=12 HEAD)
  dirty=""; [ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=" (the working tree has uncommitted changes)"
  echo "wrote $d/src-$(safe "$PACK").tar.gz ($(du -h "$d/src-$(safe "$PACK").tar.gz" | cut -f1), commit $h)"
  grep -qx '/.devwork/' .gitignore 2>/dev/null || grep -q '^/\?\.devwork' .git/info/exclude 2>/dev/null \
    || echo "note: .devwork is not ignored here; add /.devwork/ to .git/info/exclude"
  echo "device command (HEAD is $head$dirty):"
  echo "  LMX_COMMIT=$head bash bench/run_device.sh --tests --bench --compare $PACK"
  echo "carry: .devwork/run_device$([ -d .devdeps ] && echo ' .devdeps')"
  exit 0
fi
[ $ANY_STEP = 1 ] || { DO_BENCH=1; [ -n "$OLD_REV" ] || DO_TESTS=1; }
[ -n "$ROUNDS" ] || { if [ -n "$OLD_REV" ]; then ROUNDS=3; else ROUNDS=1; fi; }

# ---- the work folder, logs, budget ----
W=${LMX_DEVICE_WORK:-/tmp/lmx-device}
LOGS=$W/logs RUNS=$W/runs
[ -n "$OUTDIR" ] || OUTDIR=${OUT:-$W/out}
mkdir -p "$OUTDIR" "$W/m"
rm -rf "$LOGS" "$RUNS"; mkdir -p "$LOGS" "$RUNS"
OUTDIR=$(cd "$OUTDIR" && pwd)
SUMMARY=$OUTDIR/summary.txt
: > "$SUMMARY"
START=$(date +%s) DATE=$(date -u +%Y-%m-%d) FAILED=""
export PYTHONUNBUFFERED=1 LMX_LOG=${LMX_LOG:-warn}
el() { echo $(( $(date +%s) - START )); }
left() { echo $(( BUDGET - $(date +%s) + START )); }
say() { echo "== [$(el)s] $*" | tee -a "$SUMMARY"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
pack() { tar -C "$W" -czf "$OUTDIR/logs.tar.gz" logs runs 2>/dev/null; }
# step NAME TIMEOUT_S MIN_LEFT_S CMD...: CMD under a timeout (capped by the budget left), output to
# $LOGS/NAME.log; skipped when fewer than MIN_LEFT_S seconds are left. Returns CMD's status (124: timeout).
step() {
  local name=$1 tmo=$2 need=$3; shift 3
  local l; l=$(left)
  if [ "$l" -lt "$need" ]; then
    say "$name: SKIPPED (${l}s left, needs ${need}s)"; FAILED="$FAILED $name(skipped)"; return 99
  fi
  [ "$tmo" -gt "$l" ] && tmo=$l
  local t0; t0=$(date +%s)
  timeout -k 5 "$tmo" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  say "$name: rc=$rc in $(( $(date +%s) - t0 ))s$([ $rc = 124 ] && echo ' (TIMEOUT)')"
  [ $rc -ne 0 ] && FAILED="$FAILED $name"
  pack
  return $rc
}

# ---- dependencies carried in .devdeps (the GPU machine has no package registry) ----
if [ -f "$ROOT/.devdeps/device-deps.sh" ]; then
  eval "$(bash "$ROOT/.devdeps/device-deps.sh" install "$ROOT/.devdeps" 2> "$LOGS/deps.log")"
fi
export PATH=/usr/local/cuda/bin:$PATH
{ date -u; uname -a; nproc; free -g; df -h /tmp; nvidia-smi 2>&1; nvcc --version 2>&1; cmake --version; } > "$LOGS/env.txt" 2>&1

HAVE_GPU=0 GPU_NAME=""
if nvidia-smi -L > /dev/null 2>&1; then
  HAVE_GPU=1
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
fi
HAVE_CUDA=0
[ $NO_CUDA = 0 ] && command -v nvcc > /dev/null 2>&1 && HAVE_CUDA=1
if [ -z "$HW" ]; then
  if [ $HAVE_GPU = 1 ]; then
    HW=$(printf '%s' "$GPU_NAME" | grep -oiE '\b[a-z]?[0-9]{3,4}[a-z]?\b' | head -1 | tr 'A-Z' 'a-z')
    [ -n "$HW" ] || HW=$(safe "$GPU_NAME" | tr 'A-Z' 'a-z')
  else
    HW=cpu
  fi
fi
HOSTHW=$([ $HAVE_GPU = 1 ] && echo "$HW-host-cpu$(nproc)" || echo "cpu$(nproc)")
BENCHHW=$([ "$DEVICE" = gpu ] && echo "$HW" || echo "$HOSTHW")

# ---- sources: the current tree (or --commit REV) and --compare OLD ----
# src_of REV DEST: sets SRC (a source tree of REV) and SRC_COMMIT; returns 1 with a message when it cannot.
src_of() {
  local rev=$1 dest=$2 pk; pk=$ROOT/.devwork/run_device/src-$(safe "$1").tar.gz
  if [ -f "$rev/CMakeLists.txt" ]; then
    SRC=$(cd "$rev" && pwd); SRC_COMMIT=$(git -C "$SRC" rev-parse --short=12 HEAD 2>/dev/null || basename "$SRC"); return 0
  fi
  local what="" id=""
  if [ -f "$rev" ]; then what="archive $rev"; id="file:$(cksum < "$rev" | cut -d' ' -f1)"
    SRC_COMMIT=$(basename "$rev"); SRC_COMMIT=${SRC_COMMIT%%.tar*}
  elif [ -f "$pk" ]; then what="archive $pk"; id="file:$(cksum < "$pk" | cut -d' ' -f1)"
    SRC_COMMIT=$(cat "${pk%.tar.gz}.commit" 2>/dev/null || echo "$rev")
  elif SRC_COMMIT=$(git -C "$ROOT" rev-parse --short=12 --verify -q "$rev^{commit}" 2>/dev/null); then
    what="git archive $SRC_COMMIT"; id="git:$SRC_COMMIT"
  else
    say "source of $rev: not found (no folder or archive of that name, no $pk, and git here does not know it;"
    note "  on the development machine: bash bench/run_device.sh --pack $rev, then carry .devwork/run_device)"
    return 1
  fi
  if [ "$(cat "$dest/.lmx-src" 2>/dev/null)" != "$id" ]; then
    rm -rf "$dest"; mkdir -p "$dest"
    if [ "${what%% *}" = git ]; then git -C "$ROOT" archive "$SRC_COMMIT" | tar -x -C "$dest"
    else tar -xf "${what#archive }" -C "$dest"; fi
    local top; top=$(ls -A "$dest")
    if [ ! -f "$dest/CMakeLists.txt" ] && [ "$(echo "$top" | wc -l)" = 1 ] && [ -f "$dest/$top/CMakeLists.txt" ]; then
      mv "$dest/$top" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"   # an archive with one top folder
    fi
    [ -f "$dest/CMakeLists.txt" ] || { say "source of $rev: $what gave no CMakeLists.txt"; return 1; }
    echo "$id" > "$dest/.lmx-src"
  fi
  SRC=$dest
  say "source of $rev: $what → $dest"
}
NEW_NOTE=""
if [ -n "$NEW_REV" ]; then
  src_of "$NEW_REV" "$W/src-new" || { pack; exit 1; }
  NEW_SRC=$SRC NEW_COMMIT=${LMX_COMMIT:-$SRC_COMMIT}
else
  NEW_SRC=$ROOT NEW_COMMIT=${LMX_COMMIT:-$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
  [ -n "${LMX_COMMIT:-}" ] || NEW_NOTE=" (from git rev-parse: the device copy's .git can be stale; pass LMX_COMMIT)"
fi
OLD_SRC="" OLD_COMMIT=""
if [ -n "$OLD_REV" ]; then
  src_of "$OLD_REV" "$W/src-old" || { pack; exit 1; }
  OLD_SRC=$SRC OLD_COMMIT=$SRC_COMMIT
fi
say "lmx device run: new $NEW_COMMIT$NEW_NOTE${OLD_REV:+, old $OLD_COMMIT}; $DATE; ${GPU_NAME:-no GPU}; $(nproc) cores; budget ${BUDGET}s"
note "   steps:$([ $DO_TESTS = 1 ] && echo ' tests')$([ $DO_BENCH = 1 ] && echo ' bench')$([ $DO_KERNELS = 1 ] && echo ' kernels')$([ $DO_MEMCHECK = 1 ] && echo ' memcheck')$([ $DO_HOSTCPU = 1 ] && echo ' host-cpu')$([ $DO_PROFILE = 1 ] && echo ' profile'); device $DEVICE; CUDA build $HAVE_CUDA"

# ---- build: both trees at once, each with half the cores ----
CMAKE_OPTS=(-DCMAKE_BUILD_TYPE=Release)
if [ $NO_CUDA = 1 ]; then CMAKE_OPTS+=(-DLMX_CUDA=OFF)
elif [ $HAVE_CUDA = 1 ]; then CMAKE_OPTS+=(-DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH"); fi
NEW_TARGETS=()   # empty: everything (the tests need every test binary)
if [ $DO_TESTS = 0 ]; then
  NEW_TARGETS=(lmx)
  [ $HAVE_CUDA = 1 ] && [ $DO_KERNELS = 1 ] && NEW_TARGETS+=(bench_cuda_kernels)
  [ $HAVE_CUDA = 1 ] && [ $DO_MEMCHECK = 1 ] && NEW_TARGETS+=(test_cuda_kernels test_cuda_weights test_cuda_attention)
fi
BJOBS=$JOBS
[ -n "$OLD_SRC" ] && BJOBS=$(( (JOBS + 1) / 2 ))
# build_tree NAME SRC BUILD_DIR TIMEOUT [TARGET...]: configure + build, log $LOGS/build_NAME.log, status in $W/rc_NAME
build_tree() {
  local name=$1 src=$2 bld=$3 tmo=$4; shift 4
  local tg=(); [ $# -gt 0 ] && tg=(--target "$@")
  # a build folder left by a call for another source tree starts afresh
  if [ -f "$bld/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$bld/CMakeCache.txt"; then
    rm -rf "$bld"
  fi
  ( t0=$(date +%s)
    timeout -k 5 "$tmo" cmake -S "$src" -B "$bld" "${CMAKE_OPTS[@]}" > "$LOGS/build_$name.log" 2>&1 &&
      timeout -k 5 $(( tmo - $(date +%s) + t0 )) cmake --build "$bld" -j"$BJOBS" "${tg[@]}" >> "$LOGS/build_$name.log" 2>&1
    echo "$? $(( $(date +%s) - t0 ))" > "$W/rc_$name" )
}
BT=$(( $(left) - 120 )); [ $BT -gt 400 ] && BT=400; [ $BT -lt 60 ] && BT=60
NEW_B=$W/build-new OLD_B=$W/build-old
say "build: new$([ ${#NEW_TARGETS[@]} -gt 0 ] && echo " (${NEW_TARGETS[*]})" || echo " (all)")${OLD_SRC:+ and old (lmx)}, -j$BJOBS each, ${CMAKE_OPTS[*]}"
build_tree new "$NEW_SRC" "$NEW_B" "$BT" "${NEW_TARGETS[@]}" &
[ -n "$OLD_SRC" ] && build_tree old "$OLD_SRC" "$OLD_B" "$BT" lmx &
wait
NEW_LMX="" OLD_LMX=""
for t in new ${OLD_SRC:+old}; do
  rc=1 secs='?'; read -r rc secs < "$W/rc_$t"
  say "build_$t: rc=$rc in ${secs}s"
  if [ "$rc" != 0 ]; then FAILED="$FAILED build_$t"; grep -E "error|Error" "$LOGS/build_$t.log" | head -8 | tee -a "$SUMMARY"
  elif [ $t = new ]; then NEW_LMX=$NEW_B/lmx
  else OLD_LMX=$OLD_B/lmx; fi
done
rm -f "$W/rc_new" "$W/rc_old"
pack
[ -x "$NEW_LMX" ] || { say "no lmx binary for the new tree: nothing more can run"; pack; exit 1; }
[ -n "$OLD_SRC" ] && [ -z "$OLD_LMX" ] && say "no lmx binary for the old tree: no comparison"
# models come from one generator (the old tree's when comparing: the baseline's format is known good)
GEN_LMX=${OLD_LMX:-$NEW_LMX}

# ---- a real llama3 tokenizer for the random-weight models ----
TOKOPT=()
if [ $TINY = 0 ]; then
  TOK=""
  if [ -f "$TOKARG/tokenizer.json" ]; then TOK=$TOKARG
  elif [ -f "$TOKARG/llama3/tokenizer.json" ]; then TOK=$TOKARG/llama3
  elif [ -f "$TOKARG" ]; then
    rm -rf "$W/tok"; mkdir -p "$W/tok" && tar -xJf "$TOKARG" -C "$W/tok" 2>> "$LOGS/env.txt"
    if [ -f "$W/tok/llama3/tokenizer.json" ]; then TOK=$W/tok/llama3; elif [ -f "$W/tok/tokenizer.json" ]; then TOK=$W/tok; fi
  fi
  if [ -n "$TOK" ]; then TOKOPT=(--tokenizer "$TOK"); else say "tokenizer: none at $TOKARG (the benchmarks use token ids anyway)"; fi
fi
TINYOPT=(); [ $TINY = 1 ] && TINYOPT=(--layers 2 --scale-down 16)
# gen_model NAME SHAPE DTYPE DIR: a random-weight model; reused when a previous call made it the same way
gen_model() {
  local name=$1 shape=$2 dt=$3 dir=$4
  local spec="$shape $dt g64 seed1 ${TINYOPT[*]} ${TOKOPT[*]}"
  if [ "$(cat "$dir/.lmx-gen" 2>/dev/null)" = "$spec" ]; then say "$name: reusing $dir"; return 0; fi
  rm -rf "$dir"
  local tmo=200; case $shape in qwen3-30b-a3b|gpt-oss-20b) [ $TINY = 1 ] || tmo=420;; esac   # 17 / 12 GB
  step "$name" "$tmo" 40 "$GEN_LMX" dev random-model "$shape" "$dir" --dtype "$dt" --group-size 64 --seed 1 \
    --threads "$JOBS" "${TINYOPT[@]}" "${TOKOPT[@]}" || return 1
  echo "$spec" > "$dir/.lmx-gen"
}
# bench_run NAME SIDE LMX MODEL_DIR RESULT_FILE ARGS...: `lmx bench --json`; RESULT_FILE when it is valid JSON
bench_run() {
  local name=$1 side=$2 lmx=$3 dir=$4 res=$5; shift 5
  local commit=$NEW_COMMIT; [ "$side" = old ] && commit=$OLD_COMMIT
  if step "$name" 150 30 env LMX_COMMIT="$commit" bash -c 'o=$1; shift; exec "$@" > "$o"' _ "$res.tmp" \
       "$lmx" bench "$dir" "$@" --json; then
    if python3 -c "import json,sys; json.load(open(sys.argv[1]))" "$res.tmp" 2>> "$LOGS/$name.log"; then
      mv "$res.tmp" "$res"; return 0
    fi
    say "$name: output is not JSON"; FAILED="$FAILED $name(json)"
  fi
  mv "$res.tmp" "$LOGS/$name.stdout" 2>/dev/null
  return 1
}

# ---- end-to-end benchmarks: every model, both trees interleaved (old new / new old per round) ----
MODEL=$SHAPE; [ $TINY = 1 ] && MODEL=$SHAPE-tiny
if [ $DO_BENCH = 1 ]; then
  if [ "$DEVICE" = gpu ] && [ $HAVE_GPU = 0 ]; then
    say "bench: SKIPPED (no GPU; --device cpu checks the script on the CPU)"; FAILED="$FAILED bench(no-gpu)"
  else
    for dt in $DTYPES; do
      M=$W/m/$MODEL-$dt
      gen_model "gen_$dt" "$SHAPE" "$dt" "$M" || continue
      for r in $(seq 1 "$ROUNDS"); do
        order=new
        if [ -n "$OLD_LMX" ]; then order="old new"; [ $(( r % 2 )) = 0 ] && order="new old"; fi
        for side in $order; do
          lmx=$NEW_LMX; [ $side = old ] && lmx=$OLD_LMX
          bench_run "bench_${dt}_${side}_r$r" "$side" "$lmx" "$M" "$RUNS/$side-$dt-r$r.json" \
            --device "$DEVICE" --prompt "$PROMPT" --gen "$GEN" --reps "$REPS"
        done
      done
    done
  fi
fi

# ---- correctness on the GPU: op tests, then every golden model with issue 5's GPU tolerance ----
if [ $DO_TESTS = 1 ]; then
  step ctest_gpu 240 60 ctest --test-dir "$NEW_B" -L gpu -j4 --output-on-failure
  grep -E "checks,|tests passed|Failed|\*\*\*|Not Run" "$LOGS/ctest_gpu.log" | head -12 | tee -a "$SUMMARY"
  if [ $HAVE_GPU = 1 ]; then
    step golden_gpu 180 45 env LMX_GOLDEN_EXTRA="--device gpu" LMX_GOLDEN_TOL=gpu \
      ctest --test-dir "$NEW_B" -L golden -j4 --output-on-failure
  else
    note "   (no GPU: the gpu tests skip, and the goldens run on the CPU)"
    step golden_cpu 180 45 ctest --test-dir "$NEW_B" -L golden -j4 --output-on-failure
  fi
  grep -hE "tests passed|Failed|\*\*\*" "$LOGS"/golden_*.log | head -30 | tee -a "$SUMMARY"
fi

# ---- kernel microbenchmarks and memcheck (CUDA builds only) ----
if [ $DO_KERNELS = 1 ]; then
  if [ $HAVE_CUDA = 1 ] && [ $HAVE_GPU = 1 ]; then
    step kernels 240 60 "$NEW_B/bench/cuda/bench_cuda_kernels" "$KREPS" "$KSECTIONS"
    cp "$LOGS/kernels.log" "$OUTDIR/kernels.txt"
    grep -E "^device|copy:" "$LOGS/kernels.log" | tee -a "$SUMMARY"
  else say "kernels: SKIPPED (needs a CUDA build and a GPU)"; FAILED="$FAILED kernels(skipped)"; fi
fi
if [ $DO_MEMCHECK = 1 ]; then
  if [ $HAVE_CUDA = 1 ] && [ $HAVE_GPU = 1 ] && command -v compute-sanitizer > /dev/null; then
    # the whole kernel test under memcheck can outlast its slot: a run stopped at the limit with no
    # error reported until then counts as a (partial) pass
    step memcheck 120 60 bash -c 'for t in test_cuda_kernels test_cuda_weights test_cuda_attention; do
        compute-sanitizer --tool memcheck --print-limit 10 "$0/tests/cuda/$t" || exit; done' "$NEW_B"
    mrc=$?
    grep -E "ERROR SUMMARY|Invalid|checks,|FAIL" "$LOGS/memcheck.log" | head -12 | tee -a "$SUMMARY"
    if [ $mrc = 124 ] && ! grep -qE "ERROR SUMMARY: [1-9]|Invalid|FAIL" "$LOGS/memcheck.log"; then
      note "   memcheck stopped at its time limit with no error reported before it"; FAILED=${FAILED/ memcheck/}
    fi
  else say "memcheck: SKIPPED (needs a CUDA build, a GPU and compute-sanitizer)"; FAILED="$FAILED memcheck(skipped)"; fi
fi

# ---- Nsight Compute profile of decode steps ----
if [ $DO_PROFILE = 1 ]; then
  NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ $HAVE_GPU = 1 ] && [ -n "$NCU" ]; then
    : > "$OUTDIR/profile.txt"
    for dt in $DTYPES; do
      M=$W/m/$MODEL-$dt
      gen_model "gen_$dt" "$SHAPE" "$dt" "$M" || continue
      # a short prompt, 4 greedy decode steps; kernels inside the captured graph are profiled one by one
      step "ncu_$dt" 240 60 "$NCU" --csv --page raw --graph-profiling node \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size \
        "$NEW_LMX" bench "$M" --device gpu --prompt 8 --gen 4 --reps 1
      bench_run "bench_${dt}_plain" new "$NEW_LMX" "$M" "$RUNS/profile-$dt.json" --device gpu --prompt 8 --gen 64 --reps 3
      { echo "### $MODEL $dt ($GPU_NAME, $NEW_COMMIT)"
        python3 "$ROOT/bench/ncu_step.py" "$LOGS/ncu_$dt.log" --bench "$RUNS/profile-$dt.json" --model "$M"
        echo; } >> "$OUTDIR/profile.txt" 2>&1
    done
    note "   profile: $OUTDIR/profile.txt"
  else say "profile: SKIPPED (needs a GPU and ncu)"; FAILED="$FAILED profile(skipped)"; fi
fi

# ---- the CPU figure (all cores) ----
if [ $DO_HOSTCPU = 1 ]; then
  M=$W/m/llama-3.2-1b$([ $TINY = 1 ] && echo -tiny)-q4
  if gen_model gen_host_cpu llama-3.2-1b q4 "$M"; then
    bench_run bench_host_cpu new "$NEW_LMX" "$M" "$OUTDIR/$DATE-$HOSTHW-$(basename "${M%-q4}")-q4.json" \
      --device cpu --prompt 128 --gen 16 --reps 1 --threads "$(nproc)"
  fi
fi

# ---- summary: per-dtype medians, the file to commit, and the old/new comparison ----
if [ $DO_BENCH = 1 ] && ls "$RUNS"/*.json > /dev/null 2>&1; then
  python3 - "$RUNS" "$OUTDIR" "$DATE-$BENCHHW-$MODEL" "$TOL" "${OLD_LMX:+$OLD_COMMIT}" "$NEW_COMMIT" \
      "${GPU_NAME:-$DEVICE}" "$MODEL, prompt $PROMPT, gen $GEN, reps $REPS, $ROUNDS round(s)" "$DTYPES" "$SHAPE" \
      > "$LOGS/summary_py.log" 2>&1 <<'EOF'
import glob, json, os, re, shutil, statistics, sys
runs, out, prefix, tol, oldc, newc, dev, params, dtypes, shape = sys.argv[1:11]
tol = float(tol)
dtypes = dtypes.split()
# GPU targets (decode, prefill tok/s): issue 5 for Llama-3-8B, issue 16 for the Qwen3-30B-A3B shape
targets = {"llama-3-8b": {"bf16": (240, 30000), "q8": (420, 20000), "q4": (650, 20000)},
           "qwen3-30b-a3b": {"q4": (400, 8000)}}.get(shape, {})
data = {}
for f in sorted(glob.glob(os.path.join(runs, "*.json"))):
    m = re.match(r"(old|new)-(.+)-r(\d+)\.json$", os.path.basename(f))
    if not m:
        continue
    try:
        j = json.load(open(f))
        j["results"]["decode_tok_s"]
    except Exception as e:
        print("%s: unreadable: %s" % (f, e))
        continue
    data.setdefault((m.group(1), m.group(2)), []).append((int(m.group(3)), f, j))
if not data:
    print("no benchmark results")
    sys.exit(4)

def med(xs):
    return statistics.median(xs) if xs else float("nan")

print("\nnew tree %s on %s: %s" % (newc, dev, params))
print("dtype  decode/s  prefill/s  l2ft_s  load_s    GB/s  peakGB  target      file (run with the median decode)")
for dt in dtypes:
    rs = data.get(("new", dt), [])
    if not rs:
        print("%-5s  (no result)" % dt)
        continue
    rs.sort(key=lambda x: x[2]["results"]["decode_tok_s"])
    rnd, f, j = rs[(len(rs) - 1) // 2]
    r, h = j["results"], j["hardware"]
    name = "%s-%s.json" % (prefix, dt)
    shutil.copyfile(f, os.path.join(out, name))
    mem = r.get("peak_device_bytes") or r.get("peak_rss_bytes") or 0
    t = targets.get(dt) if h.get("device") == "gpu" else None
    print("%-5s %9.1f %10.0f %7.2f %7.2f %7.0f %7.1f  %-10s  %s (round %d)" % (
        dt, med([x[2]["results"]["decode_tok_s"] for x in rs]), med([x[2]["results"]["prefill_tok_s"] for x in rs]),
        med([x[2]["results"]["load_to_first_token_s"] for x in rs]), med([x[2]["results"]["load_s"] for x in rs]),
        r["effective_decode_gb_s"], mem / 1e9, "%d/%d" % t if t else "-", name, rnd))
if not oldc:
    sys.exit(0)

metrics = [("decode_tok_s", "decode tok/s", True), ("prefill_tok_s", "prefill tok/s", True),
           ("load_to_first_token_s", "load->1st tok s", False)]

def pooled(rs, key):
    """every timed run of every round (runs[] without the warm-up); the per-round median if absent"""
    v = []
    for _, _, j in rs:
        t = [x[key] for x in j.get("runs", []) if not x.get("warmup") and key in x]
        v += t if t else [j["results"][key]]
    return v
rep = {"schema": "lmx-compare/1", "old": oldc, "new": newc, "device": dev, "params": params,
       "tolerance_pct": tol, "order": "per round: old new (odd rounds), new old (even rounds)", "dtypes": {}}
outside, missing = [], []
lines = []
for dt in dtypes:
    o, n = data.get(("old", dt), []), data.get(("new", dt), [])
    if not o or not n:
        missing.append(dt)
        lines.append("%-5s  (missing: %s)" % (dt, "old" if not o else "new"))
        continue
    rep["dtypes"][dt] = {}
    for key, label, checked in metrics:
        ov = [x[2]["results"][key] for x in sorted(o)]
        nv = [x[2]["results"][key] for x in sorted(n)]
        if key == "load_to_first_token_s":  # one value per run of lmx bench
            om, nm = med(ov), med(nv)
        else:
            om, nm = med(pooled(o, key)), med(pooled(n, key))
        ratio = nm / om if om else float("nan")
        spread = lambda v, m: 100.0 * (max(v) - min(v)) / m if m else float("nan")
        ok = abs(ratio - 1) * 100 <= tol
        verdict = ("ok" if ok else "OUTSIDE +-%g %%" % tol) if checked else "(info)"
        if checked and not ok:
            outside.append("%s %s" % (dt, label))
        rep["dtypes"][dt][key] = {"old": ov, "new": nv, "old_median": om, "new_median": nm, "ratio": ratio,
                                  "old_spread_pct": spread(ov, om), "new_spread_pct": spread(nv, nm),
                                  "checked": checked, "within_tolerance": ok}
        lines.append("%-5s %-16s %10.2f %10.2f %8.4f %7.1f %% %7.1f %%  %s" % (
            dt, label, om, nm, ratio, spread(ov, om), spread(nv, nm), verdict))
json.dump(rep, open(os.path.join(out, "compare.json"), "w"), indent=1)
print("\nold %s vs new %s on %s: %s" % (oldc, newc, dev, params))
print("(decode, prefill: median of every timed run of every round; spread: (max - min) / median of the rounds' medians)")
print("dtype metric                old        new  new/old  old spread new spread  verdict")
for l in lines:
    print(l)
if outside:
    print("OUTSIDE the tolerance: " + ", ".join(outside))
    sys.exit(3)
if missing:
    print("no comparison for: " + ", ".join(missing))
    sys.exit(4)
print("decode and prefill within %g %% for every dtype" % tol)
EOF
  rc=$?
  cat "$LOGS/summary_py.log" | tee -a "$SUMMARY"
  case $rc in 0) ;; 3) FAILED="$FAILED compare(outside-tolerance)";; *) FAILED="$FAILED summary";; esac
fi
say "done in $(el)s; failed or skipped steps:${FAILED:- none}"
ls -la "$OUTDIR" >> "$LOGS/env.txt"
pack
[ -z "$FAILED" ]
exit $?
