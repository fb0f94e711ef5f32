#!/usr/bin/env python3
"""How far off does Prometheus' histogram_quantile read with a given seconds-bucket layout?

Simulates the classic-histogram path a dashboard takes: samples from latency distributions a
Rust service produces (5 us .. 30 s: log-normal at many medians and spreads, uniform work
times, bimodal cache hit/miss, exact zeros), counted into `le` buckets, then Prometheus 2.42's
bucketQuantile (linear interpolation inside the bucket; a first bucket with upper bound <= 0
answers 0), against the exact nearest-rank quantile of the same samples. Relative error with
values under 0.05 ms counted as 0.05 ms (as scripts/fidelity.sh does). Stdlib only, seeded.

Then the same for byte layouts (constant body sizes from 0 B to 1 GiB, log-normal sizes),
floor 1 byte.

usage: python3 scripts/bucket-layouts.py
"""
import math
import random
import statistics

FLOOR = 50e-6
QUANTILES = (0.5, 0.95, 0.99)


def decades(mantissas, lo_exp, hi_exp, lo, hi):
    out = [m * 10.0 ** e for e in range(lo_exp, hi_exp + 1) for m in mantissas]
    return sorted(b for b in out if lo * 0.999 <= b <= hi * 1.001)


LAYOUTS = {
    "OpenTelemetry advice (5 ms .. 10 s)":
        [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0],
    "0 + x10 (1-10, 10 us .. 10 s)": [0.0] + decades([1], -5, 1, 10e-6, 10),
    "0 + 1-3 per decade (x3.3, 5 us .. 30 s)": [0.0] + decades([1, 3], -6, 1, 5e-6, 30),
    "0 + 1-2.5-5 (5 us .. 25 s)": [0.0] + decades([1, 2.5, 5], -6, 1, 5e-6, 25),
    "0 + 1-2-5 (5 us .. 20 s)": [0.0] + decades([1, 2, 5], -6, 1, 5e-6, 20),
    "0 + x2 (4 us .. 32 s)": [0.0] + [2.0 ** e for e in range(-18, 6)],
    "0 + 1-1.5-2-3-5-7 (5 us .. 30 s)": [0.0] + decades([1, 1.5, 2, 3, 5, 7], -6, 1, 5e-6, 30),
    "0 + x1.41 (4 us .. 32 s)": [0.0] + [2.0 ** (e / 2) for e in range(-36, 11)],
    # The series budget (22 bounds, 25 series): no `0`, two powers of two fewer.
    "x2 (4 us .. 8 s)": [2.0 ** e for e in range(-18, 4)],
    "x2 (8 us .. 16 s)": [2.0 ** e for e in range(-17, 5)],
    "x2 (15 us .. 32 s)": [2.0 ** e for e in range(-16, 6)],
}


def distributions(rng, n=2000):
    """(name, samples) pairs, seconds."""
    out = []
    for median in (5e-6, 20e-6, 50e-6, 120e-6, 400e-6, 1e-3, 3e-3, 10e-3, 40e-3, 150e-3,
                   600e-3, 2.0, 8.0):
        for sigma in (0.1, 0.3, 0.7, 1.2):
            s = [min(30.0, rng.lognormvariate(math.log(median), sigma)) for _ in range(n)]
            out.append((f"lognormal m={median:g} s={sigma}", s))
        hit, miss = median, median * 20
        s = [rng.lognormvariate(math.log(hit if rng.random() < 0.9 else miss), 0.2)
             for _ in range(n)]
        out.append((f"bimodal 90% {hit:g} / 10% {miss:g}", [min(30.0, v) for v in s]))
    for lo in (20e-6, 1e-3, 20e-3, 1.0):
        out.append((f"uniform {lo:g}..{6 * lo:g}", [rng.uniform(lo, 6 * lo) for _ in range(n)]))
    # Output time of one-frame bodies: mostly exact zeros, some microseconds.
    out.append(("zeros + 5% tiny", [0.0 if rng.random() < 0.95 else rng.uniform(1e-6, 30e-6)
                                    for _ in range(n)]))
    return out


def exact_quantile(sorted_s, q):
    return sorted_s[max(0, math.ceil(q * len(sorted_s)) - 1)]


def prom_quantile(bounds, sorted_s, q):
    """Prometheus 2.42 bucketQuantile over cumulative `le` buckets (+Inf last)."""
    import bisect
    cum = [bisect.bisect_right(sorted_s, b) for b in bounds] + [len(sorted_s)]
    ups = list(bounds) + [math.inf]
    rank = q * cum[-1]
    b = next(i for i, c in enumerate(cum) if c >= rank)
    if b == len(ups) - 1:
        return ups[-2]
    if b == 0 and ups[0] <= 0:
        return ups[0]
    start = 0.0 if b == 0 else ups[b - 1]
    count = cum[b] - (cum[b - 1] if b > 0 else 0)
    rank -= cum[b - 1] if b > 0 else 0
    return start + (ups[b] - start) * (rank / count)


def rel(shown, exact, floor=None):
    floor = FLOOR if floor is None else floor
    shown, exact = max(shown, floor), max(exact, floor)
    return abs(shown - exact) / exact


BYTE_LAYOUTS = {
    "old: 100 .. 1e8 (x10)": [100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8],
    "0 + x4 (16 B .. 4 GiB)": [0.0] + [4.0 ** e for e in range(2, 17)],
    "0 + 1-2-5 (10 B .. 5 GB)": [0.0] + decades([1, 2, 5], 1, 9, 10, 5e9),
    "0 + x2 (8 B .. 4 GiB)": [0.0] + [2.0 ** e for e in range(3, 33)],
}


def byte_distributions(rng):
    out = [(f"constant {c} B", [float(c)] * 500)
           for c in (0, 12, 31, 200, 1500, 8192, 65536, 1 << 20, 1 << 30)]
    for m in (20, 300, 4000, 60000, 1e6, 5e7, 1e9):
        for sigma in (0.3, 1.0):
            out.append((f"lognormal {m:g} B s={sigma}",
                        [min(4e9, rng.lognormvariate(math.log(m), sigma)) for _ in range(2000)]))
    return out


def report(layouts, dists, floor):
    print(f"{'layout':<38} {'buckets':>7} {'series':>6} {'median':>7} {'p90':>7} {'max':>7}  worst cell")
    for name, bounds in layouts.items():
        errs = []
        for dname, s in dists:
            for q in QUANTILES:
                errs.append((rel(prom_quantile(bounds, s, q), exact_quantile(s, q), floor), dname, q))
        errs.sort()
        e = [x[0] for x in errs]
        worst = errs[-1]
        # series per label set: one per finite bucket, +Inf, _sum, _count
        print(f"{name:<38} {len(bounds):>7} {len(bounds) + 3:>6} {statistics.median(e):>6.1%} "
              f"{e[int(0.9 * len(e))]:>6.1%} {e[-1]:>6.1%}  {worst[1]} p{worst[2] * 100:g}")


def main():
    rng = random.Random(14)
    dists = [(name, sorted(s)) for name, s in distributions(rng)]
    print(f"seconds: {len(dists)} distributions x {len(QUANTILES)} quantiles, 2000 samples each, "
          f"floor 0.05 ms\n")
    report(LAYOUTS, dists, FLOOR)
    bdists = [(name, sorted(s)) for name, s in byte_distributions(random.Random(3))]
    print(f"\nbytes: {len(bdists)} distributions x {len(QUANTILES)} quantiles, floor 1 B\n")
    report(BYTE_LAYOUTS, bdists, 1.0)


if __name__ == "__main__":
    main()
