"""Benchmark: what CausalForest.effect_interval covers (METHODS.md sections 3 and 9).

Design: METHODS.md section 3 (``eocausal.simulate.simulate_cate_problem``),
n training units, a fixed test set; each replication draws a fresh training
set and fits ``CausalForest`` with a fresh seed. Per setting of
(``n_estimators``, ``trees_per_bag``) the table reports, over all replications
and test points x:

- ``cover tau``: share of 95% intervals that contain tau(x), with the standard
  error across replications;
- ``cover E``: share that contain the forest's expected prediction E[tau_hat(x)],
  estimated at each x by the mean of tau_hat(x) over the *other* replications
  (leave-one-out, so the target does not include the interval's own centre);
- ``width``: mean interval width;
- ``sd ratio``: (mean estimated sd of tau_hat(x) over replications and x) /
  (mean over x of the Monte Carlo sd of tau_hat(x) across replications); 1 means
  the little-bags variance is right on average; ``sd ratio med``: the median
  over x of the same ratio taken point by point;
- ``sd CV``: mean over x of the coefficient of variation of the estimated sd
  across replications (the noise of the variance estimate);
- ``abs(bias)/sd``: mean over x of |mean tau_hat(x) - tau(x)| / Monte Carlo sd;
  with R replications the estimated bias carries noise of about sd / sqrt(R);
- ``MSE``: mean squared error of tau_hat on the test set.

Each cell carries its number of replications.

Usage::

    python benchmarks/cate_intervals.py                        # n=2000, p=10, 40 replications
    python benchmarks/cate_intervals.py --replications 10      # quicker
    python benchmarks/cate_intervals.py --settings 200:4,200:8,400:8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing

from eocausal.estimate import CausalForest  # noqa: E402
from eocausal.simulate import simulate_cate_problem  # noqa: E402


def parse_settings(text: str) -> list[tuple[int, int]]:
    """``"200:4,200:8"`` -> ``[(200, 4), (200, 8)]`` (n_estimators:trees_per_bag)."""
    out = []
    for item in text.split(","):
        n_est, per_bag = item.split(":")
        out.append((int(n_est), int(per_bag)))
    return out


def simulate(
    n: int,
    p: int,
    n_test: int,
    replications: int,
    settings: list[tuple[int, int]],
    alpha: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point estimates, estimated sds and interval bounds: arrays (setting, replication, x)."""
    X_test, _, _, tau_test, _ = simulate_cate_problem(n_test, p, seed=seed)
    z = stats.norm.ppf(1 - alpha / 2)
    shape = (len(settings), replications, n_test)
    point, sd, lower, upper = (np.empty(shape) for _ in range(4))
    for r in range(replications):
        t0 = time.perf_counter()
        X, T, Y, _, _ = simulate_cate_problem(n, p, seed=seed + 1 + r)
        for s, (n_est, per_bag) in enumerate(settings):
            model = CausalForest(
                n_estimators=n_est, trees_per_bag=per_bag, random_state=seed + 1 + r
            ).fit(X, T, Y)
            point[s, r] = model.effect(X_test)
            lower[s, r], upper[s, r] = model.effect_interval(X_test, alpha=alpha)
            sd[s, r] = (upper[s, r] - lower[s, r]) / (2 * z)
        print(f"replication {r + 1}/{replications}: {time.perf_counter() - t0:.1f} s", flush=True)
    return tau_test, point, sd, np.stack([lower, upper])


def summarise(tau, point, sd, bounds) -> dict[str, tuple[float, float]]:
    """Metrics of one setting; values are (estimate, standard error across replications or nan)."""
    lower, upper = bounds
    R = point.shape[0]
    covers_tau = (lower <= tau) & (tau <= upper)
    loo_mean = (point.sum(axis=0) - point) / (R - 1)
    covers_mean = (lower <= loo_mean) & (loo_mean <= upper)
    mc_sd = point.std(axis=0, ddof=1)
    bias = point.mean(axis=0) - tau

    def across_reps(per_rep):
        return float(per_rep.mean()), float(per_rep.std(ddof=1) / np.sqrt(R))

    nan = float("nan")
    return {
        "cover tau": across_reps(covers_tau.mean(axis=1)),
        "cover E": across_reps(covers_mean.mean(axis=1)),
        "width": across_reps((upper - lower).mean(axis=1)),
        "sd ratio": (float(sd.mean() / mc_sd.mean()), nan),
        "sd ratio med": (float(np.median(sd.mean(axis=0) / mc_sd)), nan),
        "sd CV": (float(np.mean(sd.std(axis=0, ddof=1) / sd.mean(axis=0))), nan),
        "abs(bias)/sd": (float(np.mean(np.abs(bias) / mc_sd)), nan),
        "MSE": across_reps(((point - tau) ** 2).mean(axis=1)),
    }


def bias_line(tau, point) -> str:
    """Other summaries of abs(bias) / Monte Carlo sd over the test points."""
    mc_sd = point.std(axis=0, ddof=1)
    bias = point.mean(axis=0) - tau
    ratio = np.abs(bias) / mc_sd
    rms = np.sqrt(np.mean(bias**2)) / np.sqrt(np.mean(mc_sd**2))
    return (
        f"median abs(bias)/sd {np.median(ratio):.2f}, share of points with abs(bias) > sd "
        f"{np.mean(ratio > 1):.3f}, RMS bias / RMS sd {rms:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--p", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--replications", type=int, default=40)
    parser.add_argument(
        "--settings",
        default="200:4,200:8,400:8",
        help="comma-separated n_estimators:trees_per_bag (default: the default forest, "
        "8 trees per bag with the same trees, 8 per bag with the same 50 bags)",
    )
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", type=Path, default=None, help="write the raw arrays (.npz)")
    args = parser.parse_args()
    if args.replications < 3:
        parser.error("--replications must be at least 3 (leave-one-out means and sds)")
    settings = parse_settings(args.settings)
    t0 = time.perf_counter()
    tau, point, sd, bounds = simulate(
        args.n, args.p, args.n_test, args.replications, settings, args.alpha, args.seed
    )
    elapsed = time.perf_counter() - t0
    if args.save is not None:
        np.savez(args.save, tau=tau, point=point, sd=sd, bounds=bounds, settings=settings)
    R = args.replications
    level = round(100 * (1 - args.alpha))
    print(
        f"\nCausalForest.effect_interval ({level}%) on METHODS.md section 3: n={args.n}, "
        f"p={args.p}, test points={args.n_test}, seed={args.seed}; {elapsed:.0f} s on "
        f"{platform.machine()} with {len(os.sched_getaffinity(0))} cores"
    )
    columns = [
        "cover tau",
        "cover E",
        "width",
        "sd ratio",
        "sd ratio med",
        "sd CV",
        "abs(bias)/sd",
        "MSE",
    ]
    header = "| trees | per bag | bags | " + " | ".join(columns) + " |"
    print(header)
    print("|" + "---|" * (3 + len(columns)))
    for s, (n_est, per_bag) in enumerate(settings):
        res = summarise(tau, point[s], sd[s], bounds[:, s])
        cells = []
        for col in columns:
            value, se = res[col]
            text = f"{value:.3f}" if np.isnan(se) else f"{value:.3f} ± {se:.3f}"
            cells.append(f"{text} (R={R})")
        print(f"| {n_est} | {per_bag} | {n_est // per_bag} | " + " | ".join(cells) + " |")
    print("± : standard error across replications; R: replications behind each cell.")
    for s, (n_est, per_bag) in enumerate(settings):
        print(f"{n_est} trees, {per_bag} per bag (R={R}): {bias_line(tau, point[s])}")


if __name__ == "__main__":
    main()
