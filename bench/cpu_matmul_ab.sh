#!/usr/bin/env bash
# cpu_matmul_ab.sh — one CPU matmul (bench/cpu_matmul.c) of two builds, interleaved per
# configuration and round (the machine's speed drifts over minutes: only ratios from the same run
# mean anything); prints a markdown table of the best time of each build over the rounds, the
# ratio B/A and each build's cost of T tokens against one.
#
#   bench/cpu_matmul_ab.sh A_BUILD B_BUILD [--rounds 2] [--reps 100] [--threads 2] [--kinds "q4 q8"]
#                          [--shapes "4096x4096 14336x4096"] [--tokens "1 2 4 8"] [--level-a N] [--level-b N]
# A_BUILD, B_BUILD: build folders holding lmx_cpu_matmul. --level-a / --level-b: the level argument
# each build's lmx_cpu_matmul gets (a number: the lmx_cpu_level of that build's tree; default: none,
# the best the CPU has).
set -euo pipefail
A=${1:?A build folder}; B=${2:?B build folder}; shift 2
ROUNDS=2 REPS=100 THREADS=2 KINDS="q4 q8" SHAPES="4096x4096 14336x4096" TOKENS="1 2 4 8" LA="" LB=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;; --reps) REPS=$2; shift 2 ;; --threads) THREADS=$2; shift 2 ;;
    --kinds) KINDS=$2; shift 2 ;; --shapes) SHAPES=$2; shift 2 ;; --tokens) TOKENS=$2; shift 2 ;;
    --level-a) LA=$2; shift 2 ;; --level-b) LB=$2; shift 2 ;;
    *) echo "cpu_matmul_ab: unknown option $1" >&2; exit 2 ;;
  esac
done
RAW=$(mktemp)
trap 'rm -f "$RAW"' EXIT
ms() { "$1/lmx_cpu_matmul" "$2" "$3" "$4" "$5" "$THREADS" "$REPS" ${6:+"$6"} | sed 's/.*: \([0-9.]*\) ms.*/\1/'; }
for r in $(seq 1 "$ROUNDS"); do
  for k in $KINDS; do
    for s in $SHAPES; do
      for t in $TOKENS; do
        echo "$k $s $t $(ms "$A" "$k" "${s%x*}" "${s#*x}" "$t" "$LA") $(ms "$B" "$k" "${s%x*}" "${s#*x}" "$t" "$LB")" >> "$RAW"
      done
    done
  done
done
python3 - "$RAW" <<'PY'
import collections, sys
best = collections.OrderedDict()
for line in open(sys.argv[1]):
    k, s, t, a, b = line.split()
    key = (k, s, int(t))
    pa, pb = best.get(key, (float("inf"), float("inf")))
    best[key] = (min(pa, float(a)), min(pb, float(b)))
print("| kind | shape | T | A ms | B ms | B/A | A: T vs 1 | B: T vs 1 |")
print("|---|---|---|---|---|---|---|---|")
for (k, s, t), (a, b) in best.items():
    one = best.get((k, s, 1))
    vs1 = f"{a / one[0]:.2f}x | {b / one[1]:.2f}x" if one else "— | —"
    print(f"| {k} | {s} | {t} | {a:.3f} | {b:.3f} | {b / a:.2f} | {vs1} |")
PY
