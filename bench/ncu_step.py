#!/usr/bin/env python3
"""ncu_step.py — one decode step of `lmx bench` as Nsight Compute saw it, kernel by kernel.

Input: the output of
    ncu --csv --page raw --graph-profiling node \
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size \
        lmx bench MODEL --device gpu --prompt 8 --gen 4 --reps 1
(bench/run_device.sh --profile runs it). Lines that are not ncu's CSV (lmx's own output) are skipped.

A decode step ends with the sampling kernel (name containing "sample" or "argmax"); the last complete
step is reported: per kernel (name and grid) its time, DRAM bytes read + written and the bandwidth
those bytes reached, and the sum. ncu serialises kernels and flushes caches between them, so the sum
is the kernels' own cost; `--bench FILE` (an `lmx bench --json` of the same model without ncu) adds the
real per-token time, whose difference to the sum is launch gaps and host work. `--model DIR` adds the
weights' bandwidth floor at --copy-bw (default 3.0e12 B/s, the H100's device-to-device copy).
"""
import argparse
import csv
import glob
import json
import os
import re
import sys


def short(name):
    """kernel name without arguments and template parameters"""
    n = re.sub(r"\(.*$", "", name)
    depth, out = 0, []
    for ch in n:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    n = "".join(out).strip()
    return n.split(" ")[-1] if n else name[:60]


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except ValueError:
        return 0.0


def read_rows(path):
    lines = open(path, errors="replace").read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"ncu_step: no ncu CSV header in {path}")
    body = [l for l in lines[start:] if l.startswith('"')]
    rows = []
    for r in csv.DictReader(body):
        if not str(r.get("ID", "")).strip().isdigit():
            continue  # the units row
        rows.append({
            "name": short(r.get("Kernel Name", "?")),
            "grid": r.get("launch__grid_size") or r.get("Grid Size", ""),
            "ns": num(r.get("gpu__time_duration.sum", 0)),
            "bytes": num(r.get("dram__bytes_read.sum", 0)) + num(r.get("dram__bytes_write.sum", 0)),
        })
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--bench", help="lmx bench --json of the same model (per-token time)")
    ap.add_argument("--model", help="model folder (weights' bandwidth floor)")
    ap.add_argument("--copy-bw", type=float, default=3.0e12)
    a = ap.parse_args()
    rows = read_rows(a.csv)
    ends = [i for i, r in enumerate(rows) if re.search(r"sample|argmax", r["name"], re.I)]
    if len(ends) < 2:
        sys.exit(f"ncu_step: fewer than two sampling kernels among {len(rows)} kernels")
    step = rows[ends[-2] + 1: ends[-1] + 1]
    total_ns = sum(r["ns"] for r in step)
    total_b = sum(r["bytes"] for r in step)
    groups = {}
    for r in step:
        g = groups.setdefault((r["name"], r["grid"]), {"n": 0, "ns": 0.0, "bytes": 0.0})
        g["n"] += 1
        g["ns"] += r["ns"]
        g["bytes"] += r["bytes"]
    print(f"kernels in the last decode step: {len(step)}; sum of kernel times {total_ns / 1e3:.1f} us; "
          f"DRAM {total_b / 1e6:.1f} MB ({total_b / max(total_ns, 1):.0f} GB/s over the kernels)")
    if a.model:
        wb = sum(os.path.getsize(f) for f in glob.glob(os.path.join(a.model, "*.safetensors")))
        print(f"weights {wb / 1e9:.3f} GB: floor {wb / a.copy_bw * 1e6:.1f} us at {a.copy_bw / 1e12:.2f} TB/s")
    if a.bench:
        try:
            j = json.load(open(a.bench))
            tps = j["results"]["decode_tok_s"]
            print(f"lmx bench (no ncu): {tps:.1f} tok/s = {1e6 / tps:.1f} us per token; "
                  f"launch gaps + host = {1e6 / tps - total_ns / 1e3:.1f} us")
        except (OSError, KeyError, ValueError, TypeError) as e:
            print(f"(bench file unreadable: {e})")
    print(f"{'kernel':44s} {'grid':>14s} {'n':>3s} {'us':>9s} {'us/each':>8s} {'MB':>8s} {'GB/s':>6s} {'%':>5s}")
    for (name, grid), g in sorted(groups.items(), key=lambda kv: -kv[1]["ns"]):
        print(f"{name[:44]:44s} {str(grid)[:14]:>14s} {g['n']:3d} {g['ns'] / 1e3:9.1f} {g['ns'] / 1e3 / g['n']:8.2f} "
              f"{g['bytes'] / 1e6:8.2f} {g['bytes'] / max(g['ns'], 1):6.0f} {100 * g['ns'] / max(total_ns, 1):5.1f}")


if __name__ == "__main__":
    main()
