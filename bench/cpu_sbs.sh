#!/usr/bin/env bash
# cpu_sbs.sh — lmx against the llama.cpp peer on the CPU, side by side and interleaved (issue 11):
# per round the bandwidth probe, then for each format `lmx bench` and the peer's bench_llama on the
# same shape (alternating which goes first), all one at a time. Writes every run and the medians
# over rounds into one results file and prints a markdown table.
#
#   bench/cpu_sbs.sh [--rounds 3] [--formats "q4 q8 bf16"] [--threads 2] [--prompt 128] [--gen 64]
#                    [--reps 3] [--out FILE] [--busy]
# --busy runs one busy loop (`yes > /dev/null`) beside every run: a third process on the cores
# Environment (defaults in brackets):
#   LMX          the lmx CLI                                      [build/lmx]
#   MEMBW        the bandwidth probe                              [build/lmx_membw]
#   LMX_MODELS   folder with q4/ q8/ bf16/ from `lmx dev random-model llama-3.2-1b DIR/q4 --dtype q4` …
#                                                                 [/tmp/lmxm]
#   PEER         folder with bench_llama and models/llama-3.2-1b-random-{Q4_0,Q8_0,F16}.gguf, set up as
#                ../shared/tools/peer_llamacpp/README.md says    [/tmp/peer]
#   HW           hardware tag of the file name                    [cpu<threads>]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 FORMATS="q4 q8 bf16" THREADS=2 PROMPT=128 GEN=64 REPS=3 OUT="" BUSY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;; --formats) FORMATS=$2; shift 2 ;; --threads) THREADS=$2; shift 2 ;;
    --prompt) PROMPT=$2; shift 2 ;; --gen) GEN=$2; shift 2 ;; --reps) REPS=$2; shift 2 ;; --out) OUT=$2; shift 2 ;;
    --busy) BUSY=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
LMX=${LMX:-build/lmx} MEMBW=${MEMBW:-build/lmx_membw} LMX_MODELS=${LMX_MODELS:-/tmp/lmxm} PEER=${PEER:-/tmp/peer}
HW=${HW:-cpu$THREADS}
OUT=${OUT:-bench/results/$(date -u +%F)-$HW-llama-3.2-1b-sbs$([ $BUSY = 1 ] && echo -busy || true).json}
export LMX_COMMIT=${LMX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
gguf_of() { case $1 in q4) echo Q4_0 ;; q8) echo Q8_0 ;; bf16) echo F16 ;; esac; }
TMP=$(mktemp -d)
BUSY_PID=""
cleanup() { if [ -n "$BUSY_PID" ]; then kill "$BUSY_PID" 2>/dev/null || true; fi; rm -rf "$TMP"; }
trap cleanup EXIT
if [ $BUSY = 1 ]; then yes > /dev/null & BUSY_PID=$!; fi
for r in $(seq 1 "$ROUNDS"); do
  "$MEMBW" "$THREADS" 2 5 > "$TMP/membw-$r.json"
  uptime | sed 's/.*load average: //' > "$TMP/load-$r.txt"
  for f in $FORMATS; do
    g=$(gguf_of "$f")
    lmx_run() { "$LMX" bench "$LMX_MODELS/$f" --device cpu --threads "$THREADS" --prompt "$PROMPT" --gen "$GEN" \
                  --reps "$REPS" --json > "$TMP/lmx-$f-$r.json"; }
    peer_run() { "$PEER/bench_llama" --model "$PEER/models/llama-3.2-1b-random-$g.gguf" --type "$g" --threads "$THREADS" \
                  --prompt "$PROMPT" --gen "$GEN" --reps "$REPS" > "$TMP/peer-$f-$r.json" 2> "$TMP/peer-$f-$r.err"; }
    if [ $((r % 2)) = 1 ]; then lmx_run; peer_run; else peer_run; lmx_run; fi
    echo "round $r $f done" >&2
  done
done
python3 - "$TMP" "$OUT" "$ROUNDS" "$FORMATS" "$THREADS $PROMPT $GEN $REPS" "$BUSY" <<'PY'
import json, os, statistics, sys, datetime, subprocess
tmp, out, rounds, formats, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
busy = sys.argv[6] == "1"
ld = lambda p: json.load(open(os.path.join(tmp, p)))
membw = [ld(f"membw-{r}.json") for r in range(1, rounds + 1)]
loads = [open(os.path.join(tmp, f"load-{r}.txt")).read().strip() for r in range(1, rounds + 1)]
res = {"schema": "lmx-cpu-sbs/1", "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "commit": os.environ.get("LMX_COMMIT", "unknown"),
       "cpu": subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip(),
       "threads": int(shape[0]), "prompt": int(shape[1]), "gen": int(shape[2]), "reps": int(shape[3]), "rounds": rounds,
       "protocol": "per round: probe, then per format lmx and llama.cpp one after the other (order alternating by round); medians over rounds of each run's median over reps",
       "busy_loop_beside": busy, "load_avg_1_5_15_per_round": loads, "membw": membw, "formats": {}}
med = statistics.median
print(f"| format | lmx decode | llama.cpp decode | ratio | lmx prefill | llama.cpp prefill | ratio | lmx GB/s (÷ probe) |")
print("|---|---|---|---|---|---|---|---|")
bw = med([m["best_GB_s"] for m in membw])
for f in formats:
    L = [ld(f"lmx-{f}-{r}.json") for r in range(1, rounds + 1)]
    P = [ld(f"peer-{f}-{r}.json") for r in range(1, rounds + 1)]
    ld_ = [x["results"]["decode_tok_s"] for x in L]; lp = [x["results"]["prefill_tok_s"] for x in L]
    pd = [x["decode_tok_s"] for x in P]; pp = [x["prefill_tok_s"] for x in P]
    gbs = med([x["results"]["effective_decode_gb_s"] for x in L])
    s = {"lmx_decode_tok_s": ld_, "peer_decode_tok_s": pd, "lmx_prefill_tok_s": lp, "peer_prefill_tok_s": pp,
         "median_decode_ratio": med(ld_) / med(pd), "median_prefill_ratio": med(lp) / med(pp),
         "lmx_effective_decode_gb_s_median": gbs, "lmx_decode_gb_s_over_probe": gbs / bw,
         "lmx_runs": L, "peer_runs": P}
    res["formats"][f] = s
    print(f"| {f} | {med(ld_):.1f} | {med(pd):.1f} | {s['median_decode_ratio']:.2f} | {med(lp):.1f} | {med(pp):.1f} | "
          f"{s['median_prefill_ratio']:.2f} | {gbs:.1f} ({gbs / bw:.2f}) |")
print(f"probe median {bw:.1f} GB/s; load per round: {loads}")
json.dump(res, open(out, "w"), indent=1)
print("wrote", out)
PY
