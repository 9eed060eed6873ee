#!/usr/bin/env python3
"""emulate_gemv_v2.py — CPU model of the V2 variant (mode 3) of the streaming GEMV kernel
(src/backend/cuda/cuda_gemv_mma.cu, gemv_ring<..., V2 = true>), written before its first device run.

Two parts, pure Python (no numpy):
  1. Work distribution and addressing, for every shape that tests/cuda/test_cuda_kernels.c runs
     through the kernel and the bench shapes, every knob set of the test sweep (depth 3/4/6, warps
     4/8/16, blocks per SM 1/2, tile groups of all / 4 / 1 warps) on a 132-SM device: the host plan (rg_plan), then per block and warp
     the producer (set_rows / next_rows pointer walk, scale indices) and the consumer (c_u, lt, flush
     points) exactly as the kernel code computes them. Checks: every (tile, unit) of the matrix is
     loaded from the right address and consumed exactly once, by the warp that loaded it; the scale
     index of each super-step is the group of the lane's elements; each flush covers units of one
     tile only and writes a red[] slot no other flush writes.
  2. Numerics of the offset decode (q4 / q8, group sizes 32/64/128, x at 1, 3e5 and 1e-6 scale):
     one row's dot product with the fp16 x split, fp32 rounding of the mma accumulation (modelled as
     sequential fp32 adds per 16-element k-step), C = 1024·Σ(stored x parts) in fp32, and the
     s·fma(2^e, D, -2^e·C) + b·Σx epilogue, against a double reference.
Usage: python3 bench/cuda/emulate_gemv_v2.py  (exit status 0 when every check passes)
"""
import math
import random
import struct
import sys

SMS = 132
LIMIT = 225280  # g_rg_limit on an H200 (min(optin - 1024, 220 KB))


def fmt(bits):
    eps = {4: 128, 8: 64, 16: 32}[bits]
    mps = {4: 8, 8: 4, 16: 2}[bits]
    lg_eps = {4: 7, 8: 6, 16: 5}[bits]
    npart = 3 if bits == 16 else 2
    return eps, mps, lg_eps, npart


def plan(n, k, bits, gs, warps, bps, depth):
    """rg_plan for a staged mode: (blocks, tiles per block) or None when it does not fit."""
    eps, mps, _, npart = fmt(bits)
    ring = warps * depth * 2048
    xf = (k // eps) * mps * 4 * npart * 8
    seglen = 0 if bits == 16 else min(gs, eps)
    seg = 0 if bits == 16 else (k // seglen) * 16
    ntiles = (n + 15) // 16
    nb = min(SMS * bps, ntiles)
    fixed = ring + xf + seg
    if fixed + 16 * warps * 4 > LIMIT:
        return None
    tiles_cap = (LIMIT - fixed) // (16 * warps * 4)
    if (ntiles + nb - 1) // nb > tiles_cap:
        nb = (ntiles + tiles_cap - 1) // tiles_cap
    return nb


def check_block(n, k, bits, gs, nwarps, nblocks, b, depth, errors, seen, redslots, wgroup=0):
    eps, _, lg_eps, _ = fmt(bits)
    quant = bits != 16
    nss = k // eps
    nun = (nss + 1) // 2
    ntiles = (n + 15) >> 4
    tb = (b * ntiles) // nblocks
    te = ((b + 1) * ntiles) // nblocks
    nt = te - tb
    rowbytes = k * (16 if bits == 16 else bits) // 8
    lg_gs = int(math.log2(gs)) if quant else 0
    seglen = min(1 << lg_gs, eps) if quant else eps
    gps = eps // seglen if quant else 1
    gpr = (k >> lg_gs) if quant else 0
    lg_gps = lg_eps - lg_gs if lg_gs < lg_eps else 0
    gsh = lg_gs - lg_eps if lg_gs > lg_eps else 0
    wg = wgroup if wgroup > 0 else nwarps
    ngrp = nwarps // wg
    for warp in range(nwarps):
        gi, ks = warp // wg, warp % wg
        gt0 = (gi * nt) // ngrp
        gnt = ((gi + 1) * nt) // ngrp - gt0
        u_lo, u_hi = 0, nun
        r_a = (ks * gnt * nun) // wg
        r_b = ((ks + 1) * gnt * nun) // wg
        total = r_b - r_a
        t0, u0 = gt0 + r_a // nun, r_a % nun
        if total <= 0:
            continue
        # ---- producer ----
        ld_u, ld_tile = u0, tb + t0
        pg = [0] * 4   # byte offsets for lane (lr = i-th row group, lc = 0): rows 4i + lr, lr = 0
        ps = [0, 0]    # scale element offsets of rows g, g + 8 for g = 0 (tq added below)
        ps7 = [0, 0]   # the same for g = 7 (rows 7, 15)

        def set_rows(tile, u):
            for i in range(4):
                pg[i] = min(tile * 16 + 4 * i, n - 1) * rowbytes + u * 128
            ps[0] = min(tile * 16, n - 1) * gpr
            ps[1] = min(tile * 16 + 8, n - 1) * gpr
            ps7[0] = min(tile * 16 + 7, n - 1) * gpr
            ps7[1] = min(tile * 16 + 15, n - 1) * gpr
        jump = 16 * rowbytes - (u_hi - u_lo) * 128

        def next_rows():
            for i in range(4):
                pg[i] += jump
            for p in (ps, ps7):
                p[0] += 16 * gpr
                p[1] += 16 * gpr
        loads = []
        set_rows(tb + t0, u0)
        for j in range(total):
            # what load() issues for unit j
            tile, u = ld_tile, ld_u
            addrs = tuple(pg)
            scl = []
            for h in range(2):
                if h == 1 and not (2 * ld_u + 1 < nss):
                    break
                gg = ((2 * ld_u + h) << lg_gps) >> gsh
                scl.append((gg, ps[0], ps[1], ps7[0], ps7[1]))
            loads.append((tile, u, addrs, scl))
            for i in range(4):
                pg[i] += 128
            ld_u += 1
            if ld_u == u_hi:
                ld_u = u_lo
                ld_tile += 1
                if ld_tile < te:
                    if ld_tile * 16 + 16 <= n:
                        next_rows()
                    else:
                        set_rows(ld_tile, u_lo)
        # ---- consumer ----
        c_u, lt = u0, t0
        cur = []  # units accumulated since the last flush

        def flush():
            tiles = {t for (t, _) in cur}
            if len(tiles) != 1 or tiles != {tb + lt}:
                errors.append(f"n{n} k{k} b{bits} g{gs} w{nwarps} blk{b} warp{warp}: flush lt {lt} covers {sorted(tiles)}")
            key = (tb + lt, warp)
            if key in redslots:
                errors.append(f"n{n} k{k}: red slot {key} written twice")
            redslots.add(key)
            cur.clear()
        for j in range(total):
            tile, u, addrs, scl = loads[j]
            if u != c_u or tile != tb + lt:
                errors.append(f"n{n} k{k} warp{warp} j{j}: consumer (tile {tb + lt}, unit {c_u}) != loaded ({tile}, {u})")
            # expected addresses
            for i in range(4):
                want = min(tile * 16 + 4 * i, n - 1) * rowbytes + u * 128
                if addrs[i] != want:
                    errors.append(f"n{n} k{k} b{bits} warp{warp} j{j}: pg[{i}] {addrs[i]} != {want}")
                    break
            for h, (gg, s0, s1, s70, s71) in enumerate(scl):
                ss = 2 * c_u + h
                if ss >= nss:
                    errors.append(f"n{n} k{k}: super-step {ss} beyond {nss}")
                for tq in range(gps):
                    if quant:
                        grp = (ss * eps + tq * seglen) // gs
                        if gg + tq != grp:
                            errors.append(f"n{n} k{k} g{gs}: scale index {gg}+{tq} != group {grp}")
                        for (got, row) in ((s0, tile * 16), (s1, tile * 16 + 8), (s70, tile * 16 + 7), (s71, tile * 16 + 15)):
                            if got != min(row, n - 1) * gpr:
                                errors.append(f"n{n} k{k}: scale row pointer {got} != row {min(row, n - 1)}")
                if (tile, ss) in seen:
                    errors.append(f"n{n} k{k}: (tile {tile}, super-step {ss}) consumed twice")
                seen.add((tile, ss))
            cur.append((tile, u))
            c_u += 1
            if c_u == u_hi:
                c_u = u_lo
                flush()
                lt += 1
        if c_u != u_lo:
            flush()


def check_distribution(shapes):
    nerr = 0
    ncfg = 0
    for (n, k, bits, gs) in shapes:
        for kn in range(27):  # the knob sets of test_cuda_kernels' V2 sweep
            if n * k > (64 << 20) and kn not in (0, 7, 12, 20):  # the largest shapes: 4 sets (time)
                continue
            depth = 3 + (3 if kn % 3 == 2 else kn % 3)
            warps = 4 << ((kn // 3) % 3)
            bps = 1 + (kn & 1)
            group = (0, 4, 1)[kn // 9]
            nb = plan(n, k, bits, gs, warps, bps, depth)
            if nb is None:
                continue
            ncfg += 1
            errors, seen, red = [], set(), set()
            for b in range(nb):
                check_block(n, k, bits, gs, warps, nb, b, depth, errors, seen, red, group)
                if len(errors) > 5:
                    break
            eps = fmt(bits)[0]
            ntiles = (n + 15) // 16
            if not errors and len(seen) != ntiles * (k // eps):
                errors.append(f"n{n} k{k} b{bits}: {len(seen)} (tile, super-step) pairs consumed of {ntiles * (k // eps)}")
            if errors:
                nerr += len(errors)
                print(f"FAIL {n}x{k} bits {bits} g{gs} d{depth} w{warps} b{bps} grp{group}:", *errors[:5], sep="\n  ")
    print(f"distribution: {len(shapes)} shapes, {ncfg} (shape, knob) plans, {nerr} errors")
    return nerr


# ---- numerics ----
def f32(v):
    return struct.unpack("f", struct.pack("f", v))[0]


def f16(v):
    return struct.unpack("e", struct.pack("e", v))[0]


def f32fma(a, b, c):
    return f32(a * b + c)  # exact product and sum in double (24 x 24 bits fit), one rounding


def row_v2(q, s, bi, x, bits, gs):
    """One row: q[k] ints, s/bi per group (floats as bf16-ish values), x floats; V2 arithmetic."""
    k = len(x)
    eps = 128 if bits == 4 else 64
    seglen = min(gs, eps)
    acc = 0.0
    for s0 in range(0, k, seglen):
        xs = x[s0:s0 + seglen]
        mx = max(abs(v) for v in xs)
        ex = 0
        if 0 < mx <= 3.4e38:
            ex = math.frexp(mx)[1] - 15
        scl, inv = 2.0 ** ex, 2.0 ** -ex
        tot = 0.0
        for v in xs:
            tot = f32(tot + v)
        # stored parts; q4: in the kernel's permuted order odd nibbles carry x / 16 and A = 1024 + 16q
        dsum = 0.0
        cs = 0.0
        for kk in range(0, seglen, 16):  # one mma k-step: fp32 accumulation of exact products
            part = 0.0
            for i in range(16):
                e = s0 + kk + i
                vs = f32(x[e] * inv)
                hi = f16(vs)
                lo = f16(vs - hi)
                odd = bits == 4 and (e % 2 == 1)
                if odd:
                    hi, lo = f16(hi * 0.0625), f16(lo * 0.0625)
                a = 1024 + (16 * q[e] if odd else q[e])
                part += a * hi + a * lo  # exact in double
                cs = f32(f32(cs + hi) + lo)
            dsum = f32(dsum + f32(part))
        g = s0 // gs
        sy = f32(-1024.0 * scl * cs)
        acc = f32fma(s[g], f32fma(scl, dsum, sy), f32fma(bi[g], tot, acc))
    return acc


def check_numerics():
    rnd = random.Random(7)
    worst = 0.0
    # data "test": as tests/cuda/cuda_test_util.h makes it (scales ±(0.002..0.022), biases 0.05·U(-1,1),
    # x U(-1,1)·scale); "mlx": MLX-like affine groups (bias ≈ -2^(bits-1)·scale: the output cancels,
    # which magnifies the relative error), Gaussian x
    for data in ("test", "mlx"):
      for bits in (4, 8):
        for gs in (32, 64, 128):
            for xscale in (1.0, 3e5, 1e-6):
                num = den = 0.0
                for r in range(6):
                    k = 1024
                    q = [rnd.randrange(1 << bits) for _ in range(k)]
                    if data == "test":
                        s = [f32((0.002 + 0.02 * abs(rnd.uniform(-1, 1))) * rnd.choice((-1, 1))) for _ in range(k // gs)]
                        bi = [f32(0.05 * rnd.uniform(-1, 1)) for _ in s]
                        x = [f32(rnd.uniform(-1, 1) * xscale) for _ in range(k)]
                    else:
                        s = [f32(rnd.uniform(0.005, 0.02)) for _ in range(k // gs)]
                        bi = [f32(-sv * (1 << (bits - 1)) * rnd.uniform(0.9, 1.1)) for sv in s]
                        x = [f32(rnd.gauss(0, 1) * xscale) for _ in range(k)]
                    ref = sum((q[i] * s[i // gs] + bi[i // gs]) * x[i] for i in range(k))
                    got = row_v2(q, s, bi, x, bits, gs)
                    num += (got - ref) ** 2
                    den += ref ** 2
                rel = math.sqrt(num / den)
                worst = max(worst, rel)
                print(f"numerics {data} q{bits} g{gs} x*{xscale:g}: rel {rel:.2e}")
    print(f"numerics: worst rel {worst:.2e} (test bound 2e-4; this check passes below 1e-4)")
    return 0 if worst < 1e-4 else 1


def main():
    # (n, k, bits, gs): every test_cuda_kernels case the kernel applies to (batch 1 or not: the
    # distribution does not depend on it) + the bench's decode shapes
    shapes = [
        (4096, 4096, 16, 0), (14336, 4096, 16, 0), (4096, 14336, 16, 0), (1024, 4096, 16, 0),
        (513, 2048, 16, 0), (1000, 1032, 16, 0), (2048, 8192, 16, 0),
        (14336, 4096, 4, 64), (4096, 14336, 4, 64), (128256, 2048, 4, 64), (4099, 2048, 4, 32),
        (2048, 8192, 4, 128), (1000, 4096, 4, 64), (4096, 4096, 8, 64), (1027, 2048, 8, 32),
        (4096, 14336, 8, 128), (1000, 1152, 4, 128), (2050, 4096, 4, 32), (777, 1088, 8, 32),
        (300, 640, 8, 64), (6149, 4096, 4, 64), (28672, 4096, 8, 64), (333, 128, 4, 32),
        (45, 128, 8, 128), (2000, 2048, 8, 128), (6144, 4096, 16, 0), (1029, 96, 16, 0),
        (64, 28672, 16, 0), (2048, 4096, 4, 64), (1024, 2048, 8, 64),
        (6144, 4096, 4, 64), (28672, 4096, 4, 64), (128256, 4096, 4, 64), (128256, 4096, 8, 64),
        (4096, 14336, 8, 64), (6144, 4096, 8, 64),
    ]
    applies = []
    for (n, k, bits, gs) in shapes:
        eps = fmt(bits)[0]
        if bits == 16 and k % 32 == 0:
            applies.append((n, k, bits, gs))
        elif bits in (4, 8) and k % eps == 0 and k % gs == 0:
            applies.append((n, k, bits, gs))
    fails = 0 if "--numerics" in sys.argv else check_distribution(applies)
    fails += check_numerics()
    print("OK" if fails == 0 else "FAILED")
    return 0 if fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
