#!/usr/bin/env bash
# cpu_bench_ab.sh — `lmx bench` of two builds on one model, interleaved (A B, then B A, ... per round:
# the machine's speed drifts over minutes and other processes share its cores, so only ratios from
# the same run mean anything), the load average beside every run; prints one line per run and the
# medians of each build's decode and prefill over the timed reps of all rounds.
#
#   bench/cpu_bench_ab.sh A_BUILD B_BUILD MODEL [--rounds 3] [--threads 2] [--prompt 128] [--gen 64]
#                         [--reps 3] [--out DIR] [--busy]
# A_BUILD, B_BUILD: build folders holding lmx. --out: keep each run's JSON there (else a temporary
# folder). --busy: a `yes >/dev/null` loop runs beside every bench (issue 11: a third process on
# the cores must not collapse decode).
set -euo pipefail
A=${1:?A build folder}; B=${2:?B build folder}; MODEL=${3:?model folder}; shift 3
ROUNDS=3 THREADS=2 PROMPT=128 GEN=64 REPS=3 OUT="" BUSY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;; --threads) THREADS=$2; shift 2 ;; --prompt) PROMPT=$2; shift 2 ;;
    --gen) GEN=$2; shift 2 ;; --reps) REPS=$2; shift 2 ;; --out) OUT=$2; shift 2 ;; --busy) BUSY=1; shift ;;
    *) echo "cpu_bench_ab: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$OUT" ]; then OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT; fi
mkdir -p "$OUT"
YES=""
stop_yes() { if [ -n "$YES" ]; then kill "$YES" 2>/dev/null || true; wait "$YES" 2>/dev/null || true; YES=""; fi; }
trap 'stop_yes' INT TERM
one() { # build label round
  local f="$OUT/$2-$3.json"
  [ "$BUSY" = 1 ] && { yes >/dev/null & YES=$!; }
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  "$1/lmx" bench "$MODEL" --device cpu --threads "$THREADS" --prompt "$PROMPT" --gen "$GEN" --reps "$REPS" --json > "$f"
  stop_yes
  python3 - "$f" "$2" "$3" "$load" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
res = j["results"]
reps = " ".join("%.2f" % r["decode_tok_s"] for r in j["runs"] if not r["warmup"])
print("round %s %s: loadavg %s  decode %.2f tok/s (reps %s)  prefill %.1f tok/s  load %.1f s"
      % (sys.argv[3], sys.argv[2], sys.argv[4], res["decode_tok_s"], reps, res["prefill_tok_s"], res["load_s"]))
PY
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then one "$A" A "$r"; one "$B" B "$r"; else one "$B" B "$r"; one "$A" A "$r"; fi
done
python3 - "$OUT" <<'PY'
import glob, json, statistics, sys
for who in "AB":
    dec, pre = [], []
    for f in sorted(glob.glob(f"{sys.argv[1]}/{who}-*.json")):
        for r in json.load(open(f))["runs"]:
            if not r["warmup"]:
                dec.append(r["decode_tok_s"]); pre.append(r["prefill_tok_s"])
    if dec:
        print("%s: decode median %.2f tok/s (min %.2f, max %.2f, %d reps); prefill median %.1f tok/s"
              % (who, statistics.median(dec), min(dec), max(dec), len(dec), statistics.median(pre)))
PY
