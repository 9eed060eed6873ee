#!/bin/bash
# bench/gpu_sbs.sh — lmx and the llama.cpp peer side by side on the GPU machine's card, one results file.
#
#   bash bench/gpu_sbs.sh build [--src TAR] [--jobs N]     build llama.cpp (CUDA) from the source tarball
#   bash bench/gpu_sbs.sh run --lmx LMX --models DIR [--dtypes "q4 q8"] [--rounds N] [--out FILE]
#
# build: extracts TAR (default .devpeer/llamacpp-src.tar.xz, made as ../shared/tools/peer_llamacpp/README.md
#   says, carried to the device with `carry`) into $LMX_PEER_WORK (default /tmp/lmx-peer) and builds
#   llama-bench and llama-batched-bench for sm_90a (~4.5 min on 16 cores: start it detached with setsid
#   while lmx builds). Writes $LMX_PEER_WORK/build.rc when done.
# run: waits for the build (up to 6 min), writes random-weight GGUFs of the Llama-3-8B shape with
#   .devpeer/make_gguf.py --fast (Q4_0 for q4, Q8_0 for q8, F16 for bf16), then per round, interleaved:
#   `lmx bench DIR/llama-3-8b-DT --device gpu --prompt 512 --gen 128 --reps 3 --json` and
#   `llama-bench -p 512 -n 128 -fa 1 -ngl 99 -r 3 -o json`; finally llama-batched-bench (-npl 1,16,64,
#   prompt 128, gen 128) for q4. DIR is the folder where `bench/run_device.sh` leaves its models
#   (/tmp/lmx-device/m). The results file (default $OUT/gpu-sbs.json) holds every run of both and the
#   ratios of the medians (lmx / llama.cpp).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PW=${LMX_PEER_WORK:-/tmp/lmx-peer}
mode=${1:-}; shift || true
SRC=$ROOT/.devpeer/llamacpp-src.tar.xz JOBS=$(nproc) LMX="" MODELS="" DTYPES="q4 q8" ROUNDS=2 RESULT=""
while [ $# -gt 0 ]; do
  case $1 in
    --src) SRC=$2; shift;;
    --jobs) JOBS=$2; shift;;
    --lmx) LMX=$2; shift;;
    --models) MODELS=$2; shift;;
    --dtypes) DTYPES=$2; shift;;
    --rounds) ROUNDS=$2; shift;;
    --out) RESULT=$2; shift;;
    *) echo "gpu_sbs.sh: unknown argument $1" >&2; exit 2;;
  esac
  shift
done
mkdir -p "$PW"
case $mode in
build)
  rm -f "$PW/build.rc"
  ( set -e
    tar -xJf "$SRC" -C "$PW"
    cmake -S "$PW/llamacpp-src" -B "$PW/lc" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
    cmake --build "$PW/lc" -j"$JOBS" --target llama-bench llama-batched-bench
  ) > "$PW/build.log" 2>&1
  echo $? > "$PW/build.rc"
  exit "$(cat "$PW/build.rc")";;
run) ;;
*) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2;;
esac
[ -x "$LMX" ] && [ -d "$MODELS" ] || { echo "gpu_sbs.sh run: --lmx BINARY and --models DIR are required" >&2; exit 2; }
[ -n "$RESULT" ] || RESULT=${OUT:-$PW}/gpu-sbs.json
for _ in $(seq 1 72); do [ -f "$PW/build.rc" ] && break; sleep 5; done
if [ "$(cat "$PW/build.rc" 2>/dev/null)" != 0 ]; then
  echo "gpu_sbs.sh: the llama.cpp build failed or did not finish (see $PW/build.log)" >&2; tail -5 "$PW/build.log" >&2; exit 1
fi
LB=$PW/lc/bin/llama-bench LBB=$PW/lc/bin/llama-batched-bench
R=$PW/runs; rm -rf "$R"; mkdir -p "$R"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
for dt in $DTYPES; do
  case $dt in q4) gt=Q4_0;; q8) gt=Q8_0;; bf16) gt=F16;; *) echo "gpu_sbs.sh: dtype $dt" >&2; exit 2;; esac
  g=$PW/llama-3-8b-$gt.gguf
  [ -f "$g" ] || python3 "$ROOT/.devpeer/make_gguf.py" --shape llama-3-8b --type "$gt" --seed 0 --fast --out "$g" \
    > "$R/gguf-$dt.log" 2>&1 || { echo "gpu_sbs.sh: GGUF $gt failed" >&2; tail -3 "$R/gguf-$dt.log" >&2; exit 1; }
  for r in $(seq 1 "$ROUNDS"); do
    "$LMX" bench "$MODELS/llama-3-8b-$dt" --device gpu --prompt 512 --gen 128 --reps 3 --json > "$R/lmx-$dt-r$r.json" 2> "$R/lmx-$dt-r$r.log"
    "$LB" -m "$g" -p 512 -n 128 -fa 1 -ngl 99 -r 3 -o json > "$R/peer-$dt-r$r.json" 2> "$R/peer-$dt-r$r.log"
  done
done
case " $DTYPES " in *" q4 "*)
  "$LBB" -m "$PW/llama-3-8b-Q4_0.gguf" -c 40000 -b 2048 -ub 512 -npp 128 -ntg 128 -npl 1,16,64 -fa 1 -ngl 99 \
    > "$R/peer-batched-q4.txt" 2>&1;;
esac
python3 - "$R" "$RESULT" "$GPU" "$DTYPES" <<'EOF'
import glob, json, os, re, statistics, sys
runs, out, gpu, dtypes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
res = {"schema": "lmx-gpu-sbs/1", "gpu": gpu, "protocol": "Llama-3-8B shape, random weights, prompt 512, gen 128, "
       "lmx bench --reps 3 vs llama-bench -fa 1 -ngl 99 -r 3, rounds interleaved", "dtypes": {}}
for dt in dtypes:
    d = {"lmx": [], "peer": []}
    for f in sorted(glob.glob(f"{runs}/lmx-{dt}-r*.json")):
        try:
            j = json.load(open(f))["results"]
            d["lmx"].append({"decode": j["decode_tok_s"], "prefill": j["prefill_tok_s"]})
        except Exception as e:
            d.setdefault("errors", []).append(f"{os.path.basename(f)}: {e}")
    for f in sorted(glob.glob(f"{runs}/peer-{dt}-r*.json")):
        try:
            js = json.load(open(f))
            run = {}
            for t in js:
                if t.get("n_gen", 0) > 0: run["decode"] = t["avg_ts"]
                elif t.get("n_prompt", 0) > 0: run["prefill"] = t["avg_ts"]
            d["peer"].append(run)
        except Exception as e:
            d.setdefault("errors", []).append(f"{os.path.basename(f)}: {e}")
    for k in ("decode", "prefill"):
        a = [r[k] for r in d["lmx"] if k in r]; b = [r[k] for r in d["peer"] if k in r]
        if a and b:
            d[f"{k}_median_lmx"] = statistics.median(a); d[f"{k}_median_peer"] = statistics.median(b)
            d[f"{k}_ratio"] = round(statistics.median(a) / statistics.median(b), 3)
    res["dtypes"][dt] = d
bb = os.path.join(runs, "peer-batched-q4.txt")
if os.path.exists(bb):
    rows = []
    for line in open(bb):
        c = [x.strip() for x in line.split("|")]
        if len(c) > 9 and c[1].isdigit():
            rows.append({"pp": int(c[1]), "tg": int(c[2]), "b": int(c[3]), "t_tg_s": float(c[7]), "s_tg": float(c[8])})
    res["peer_batched_q4"] = rows
json.dump(res, open(out, "w"), indent=1)
for dt, d in res["dtypes"].items():
    print(dt, {k: v for k, v in d.items() if k.endswith(("ratio", "median_lmx", "median_peer"))})
for r in res.get("peer_batched_q4", []):
    print("llama-batched-bench q4", r)
EOF
