"""Benchmark: RATE (AUTOC + TOC curve) with the half-sample bootstrap.

Compares ``eocausal.evaluate.rate`` with a naive numpy implementation that
re-sorts every bootstrap replicate (the in-run baseline), and with grf's R
implementation through the anchor figure of METHODS.md (about 6 s for
n = 100,000 and R = 200 on a 2-core machine of this kind; about 0.4 s for
n = 10,000). grf/R is not installed here, so the anchor is that figure, not a
measurement.

Examples
--------
python benchmarks/rate.py --quick
python benchmarks/rate.py --n 100000 --n-bootstrap 200 --scaling 1000,10000,100000,1000000
python benchmarks/rate.py --n 1000000 --n-bootstrap 200 --scaling "" --repeat 3
python benchmarks/rate.py --size-power --sims 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from eocausal.evaluate import rate

GRF_ANCHOR_S = {10_000: 0.4, 100_000: 6.0}


def naive_rate(scores, priorities, *, n_bootstrap, q, seed):
    """Textbook implementation: every replicate subsets, re-sorts and re-groups ties."""

    def statistic(s, p):
        order = np.argsort(-p, kind="stable")
        s, p = s[order], p[order]
        _, start, counts = np.unique(-p, return_index=True, return_counts=True)
        means = np.add.reduceat(s, np.sort(start)) / counts[np.argsort(start)]
        s = np.repeat(means, counts[np.argsort(start)])
        n = s.size
        cum = np.cumsum(s)
        ate = cum[-1] / n
        toc = cum / np.arange(1, n + 1) - ate
        autoc = toc.mean()
        grid = []
        for frac in q:
            m = int(np.floor(frac * n + 1e-12))
            head = cum[m - 1] if m > 0 else 0.0
            grid.append((head + (frac * n - m) * s[min(m, n - 1)]) / (frac * n) - ate)
        return np.r_[autoc, grid]

    rng = np.random.default_rng(seed)
    n = scores.size
    point = statistic(scores, priorities)
    reps = np.empty((n_bootstrap, point.size))
    for b in range(n_bootstrap):
        keep = rng.choice(n, n // 2, replace=False)
        reps[b] = statistic(scores[keep], priorities[keep])
    return point, reps.std(axis=0, ddof=1)


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return np.maximum(x, 0) + rng.normal(size=n), x


def timed(fn, repeat):
    """Best wall-clock and best process CPU time over ``repeat`` runs, and the output."""
    best, best_cpu = np.inf, np.inf
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, out


def speed(n, n_bootstrap, repeat, with_naive):
    scores, prio = data(n)
    ours_s, ours_cpu, res = timed(
        lambda: rate(scores, prio, n_bootstrap=n_bootstrap, seed=1), repeat
    )
    row = {
        "n": n,
        "R": n_bootstrap,
        "eocausal_s": ours_s,
        "eocausal_cpu": ours_cpu,
        "naive_s": np.nan,
        "naive_cpu": np.nan,
        "agree": "",
    }
    if with_naive:
        naive_s, naive_cpu, (point, _) = timed(
            lambda: naive_rate(
                scores, prio, n_bootstrap=n_bootstrap, q=res.toc["q"].to_numpy(), seed=1
            ),
            1,
        )
        row["naive_s"], row["naive_cpu"] = naive_s, naive_cpu
        same = np.allclose(point, np.r_[res.estimate, res.toc["estimate"]], rtol=1e-9, atol=1e-12)
        row["agree"] = "yes" if same else "NO"
    return row


def size_power(n_sims, n, n_bootstrap):
    out = {}
    for label, effect, seed in (
        ("size (tau constant)", lambda x: np.full_like(x, 0.5), 1),
        ("power (tau = 0.75 x)", lambda x: 0.75 * x, 2),
    ):
        rng = np.random.default_rng(seed)
        reject = 0
        for sim in range(n_sims):
            x = rng.uniform(size=n)
            scores = effect(x) + rng.normal(scale=2.0, size=n)
            res = rate(scores, x, n_bootstrap=n_bootstrap, seed=sim)
            reject += abs(res.ratio) > 1.96
        out[label] = reject / n_sims
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="units for the headline timing")
    parser.add_argument("--n-bootstrap", type=int, default=200, help="bootstrap replicates R")
    parser.add_argument(
        "--scaling",
        default="1000,10000,100000,1000000",
        help="comma-separated sizes for the scaling table",
    )
    parser.add_argument(
        "--naive-max",
        type=int,
        default=100_000,
        help="largest n for which the naive baseline is also run",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timings keep the best of this many runs"
    )
    parser.add_argument(
        "--size-power", action="store_true", help="also run the size/power simulation"
    )
    parser.add_argument("--sims", type=int, default=200, help="simulations for --size-power")
    parser.add_argument("--quick", action="store_true", help="small sizes; runs in a few seconds")
    args = parser.parse_args()
    if args.quick:
        args.n, args.n_bootstrap, args.scaling, args.repeat, args.sims = (
            10_000,
            50,
            "1000,10000",
            1,
            40,
        )

    head = speed(args.n, args.n_bootstrap, args.repeat, with_naive=args.n <= args.naive_max)
    print(f"RATE (AUTOC + TOC on 10 q), n = {args.n:,}, R = {args.n_bootstrap}")
    print(
        "  (wall = elapsed time; cpu = this process's CPU time, less sensitive to a loaded machine)"
    )
    print(
        f"  eocausal          wall {head['eocausal_s']:8.3f} s   cpu {head['eocausal_cpu']:8.3f} s"
    )
    if np.isfinite(head["naive_s"]):
        print(
            f"  naive numpy       wall {head['naive_s']:8.3f} s   cpu {head['naive_cpu']:8.3f} s   "
            f"ratio naive / eocausal = {head['naive_s'] / head['eocausal_s']:.1f}x (wall), "
            f"{head['naive_cpu'] / head['eocausal_cpu']:.1f}x (cpu); "
            f"point estimates agree: {head['agree']}"
        )
    anchor = GRF_ANCHOR_S.get(args.n) if args.n_bootstrap == 200 else None
    if anchor is not None:
        print(
            f"  grf 2.6 (anchor)  wall {anchor:8.3f} s   ratio grf / eocausal = "
            f"{anchor / head['eocausal_s']:.1f}x (wall), {anchor / head['eocausal_cpu']:.1f}x (cpu)"
            "   (METHODS.md figure, not run here)"
        )

    print(f"\nScaling (R = {args.n_bootstrap})")
    print(
        f"{'n':>10} {'eoc wall s':>11} {'eoc cpu s':>10} {'naive wall s':>13} {'naive/eoc':>10} {'agree':>6}"
    )
    for n in [int(v) for v in args.scaling.split(",") if v]:
        row = speed(n, args.n_bootstrap, args.repeat, with_naive=n <= args.naive_max)
        ratio = row["naive_s"] / row["eocausal_s"]
        naive = f"{row['naive_s']:13.3f}" if np.isfinite(row["naive_s"]) else f"{'-':>13}"
        ratio_s = f"{ratio:9.1f}x" if np.isfinite(ratio) else f"{'-':>10}"
        print(
            f"{n:>10,} {row['eocausal_s']:11.3f} {row['eocausal_cpu']:10.3f} {naive} {ratio_s} "
            f"{row['agree']:>6}"
        )

    if args.size_power:
        print(
            f"\nSize and power: {args.sims} simulations, n = 1,000, R = {args.n_bootstrap}, "
            "DR scores = tau(x) + N(0, 2^2), priorities = x ~ U(0, 1), reject if |ratio| > 1.96"
        )
        for label, value in size_power(args.sims, 1000, args.n_bootstrap).items():
            print(f"  {label:<22} {value:6.3f}")


if __name__ == "__main__":
    main()
