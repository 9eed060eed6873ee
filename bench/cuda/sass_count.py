#!/usr/bin/env python3
"""sass_count.py — instruction counts of the streaming GEMV kernels (V1 mode 2 vs V2 mode 3) from
`cuobjdump -sass` of cuda_gemv_mma.cu's object, for bench/notes/cuda-kernels.md.

usage: cuobjdump -sass OBJ | python3 bench/cuda/sass_count.py
For the q4 / q8 staged depth-3 kernels with bf16 scales prints: instructions of the whole function,
of its main-loop region (first to last HMMA, which holds DEPTH units = 2·DEPTH super-steps of 2048
weights for q4 / 1024 for q8, with every per-unit branch counted once: static, not dynamic), and the
opcode mix of that region.
"""
import collections
import re
import sys

WANT = {
    "q4 v1 d3": "_Z9gemv_ringILi4ELi2ELi3E13__nv_bfloat16Lb0E",
    "q4 v2 d3": "_Z9gemv_ringILi4ELi2ELi3E13__nv_bfloat16Lb1E",
    "q8 v1 d3": "_Z9gemv_ringILi8ELi2ELi3E13__nv_bfloat16Lb0E",
    "q8 v2 d3": "_Z9gemv_ringILi8ELi2ELi3E13__nv_bfloat16Lb1E",
}


def main():
    funcs = collections.OrderedDict()
    cur = None
    for line in sys.stdin:
        m = re.search(r"Function : (\S+)", line)
        if m:
            cur = m.group(1)
            funcs[cur] = []
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", line)
        if cur and m:
            funcs[cur].append(m.group(2))
    for label, prefix in WANT.items():
        names = [f for f in funcs if f.startswith(prefix)]
        if not names:
            print(f"{label}: not found")
            continue
        ops = funcs[names[0]]
        hm = [i for i, o in enumerate(ops) if o.startswith("HMMA")]
        if not hm:
            print(f"{label}: no HMMA")
            continue
        region = ops[hm[0]:hm[-1] + 1]
        nss = len(hm) / (8 if label.startswith("q4") else 4)
        mix = collections.Counter(o.split(".")[0] for o in region)
        top = " ".join(f"{k}:{v}" for k, v in mix.most_common(14))
        print(f"{label}: function {len(ops)} instr; main loop region {len(region)} instr = "
              f"{len(region) / nss:.1f} per super-step (static, {nss:.0f} super-steps); mix {top}")


if __name__ == "__main__":
    main()
