"""Benchmark: eocausal CausalForest vs econml CausalForestDML defaults (METHODS.md section 3).

Simulated problem: X ~ N(0, I_p), e(x) = logistic(0.5 x3), tau(x) = max(x1, 0) +
0.5 tanh(x2 x4), mu(x) = sin(x3) + 0.5 x5^2, noise N(0, 1), held-out test set.
(x1..x5 are columns 0..4.) Both estimators run in the same process on the same
data; the table reports fit + predict time and held-out MSE of tau, then the
time and peak-memory curve of eocausal's forest over n.

Usage::

    python benchmarks/cate.py                  # n=4000, p=64, test 2000, curve up to 100k
    python benchmarks/cate.py --max-n 20000    # cap the curve
    python benchmarks/cate.py --quick          # a few seconds
    python benchmarks/cate.py --no-compare --no-curve --coverage-draws 1000  # AIPW coverage only
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing

from eocausal.simulate import simulate_cate_problem  # noqa: E402


def run_ours(X, T, Y, X_test, *, n_estimators: int, seed: int):
    from eocausal.estimate import CausalForest

    t0 = time.perf_counter()
    model = CausalForest(n_estimators=n_estimators, random_state=seed).fit(X, T, Y)
    pred = model.effect(X_test)
    return time.perf_counter() - t0, pred


def run_econml(X, T, Y, X_test, *, seed: int):
    from econml.dml import CausalForestDML

    t0 = time.perf_counter()
    model = CausalForestDML(discrete_treatment=True, random_state=seed)
    model.fit(Y, T, X=X)
    pred = model.effect(X_test)
    return time.perf_counter() - t0, np.asarray(pred).ravel()


def compare(n: int, p: int, n_test: int, n_estimators: int, seed: int) -> None:
    X, T, Y, _, _ = simulate_cate_problem(n, p, seed=seed)
    X_test, _, _, tau_test, _ = simulate_cate_problem(n_test, p, seed=seed + 1)
    rows = []
    t_ours, pred = run_ours(X, T, Y, X_test, n_estimators=n_estimators, seed=seed)
    rows.append(("eocausal CausalForest", t_ours, float(np.mean((pred - tau_test) ** 2))))
    t_econ, pred = run_econml(X, T, Y, X_test, seed=seed)
    rows.append(
        ("econml CausalForestDML (defaults)", t_econ, float(np.mean((pred - tau_test) ** 2)))
    )
    print(f"\nCATE on METHODS.md section 3: n={n}, p={p}, test={n_test}, seed={seed}")
    print(f"{'estimator':<36}{'fit+predict s':>15}{'MSE(tau)':>12}")
    for name, t, mse in rows:
        print(f"{name:<36}{t:>15.2f}{mse:>12.4f}")
    print(
        f"speed-up (econml / eocausal): {t_econ / t_ours:.2f}x; "
        f"MSE ratio (eocausal / econml): {rows[0][2] / rows[1][2]:.3f}"
    )


def aipw_coverage(draws: int, n: int, n_clusters: int | None, seed: int) -> tuple[float, float]:
    """Coverage of 95% AIPW intervals for the population ATE (= 1) over repeated draws.

    x ~ N(0, 1); e = logistic(0.5 x) (known); tau = 1 + x (+ cluster effect);
    Y = x (+ cluster effect) + W tau + N(0, 1); arm regressions by cross-fitted
    OLS on [1, x] (2 folds, clusters kept together). Returns (coverage with
    cluster-robust SEs, coverage with unit-level SEs).
    """
    from eocausal.estimate import aipw_ate, fold_splits, make_folds

    hits = np.zeros((draws, 2), dtype=bool)
    for r in range(draws):
        rng = np.random.default_rng(seed + r)
        x = rng.normal(size=n)
        e = 1 / (1 + np.exp(-0.5 * x))
        T = rng.binomial(1, e)
        tau = 1 + x
        noise = rng.normal(size=n)
        clusters = None
        if n_clusters:
            clusters = rng.integers(0, n_clusters, size=n)
            noise += rng.normal(size=n_clusters)[clusters]
            tau = tau + rng.normal(size=n_clusters)[clusters]
        Y = x + T * tau + noise
        Z = np.column_stack([np.ones(n), x])
        mu = np.empty((2, n))
        for train, test in fold_splits(make_folds(n, 2, clusters=clusters, seed=r)):
            for arm in (0, 1):
                rows = train[T[train] == arm]
                mu[arm, test] = Z[test] @ np.linalg.lstsq(Z[rows], Y[rows], rcond=None)[0]
        for j, cl in enumerate((clusters, None)):
            res = aipw_ate(Y, T, e, mu0=mu[0], mu1=mu[1], clusters=cl)
            hits[r, j] = res.ci_lower <= 1.0 <= res.ci_upper
    return float(hits[:, 0].mean()), float(hits[:, 1].mean())


def coverage_table(draws: int, n: int, seed: int) -> None:
    print(f"\nAIPW 95% CI coverage of the population ATE: {draws} draws, n={n}")
    print(f"{'design':<34}{'cluster-robust SE':>19}{'unit SE':>10}")
    for label, n_clusters in (("no clusters", None), ("40 clusters (correlated Y, tau)", 40)):
        robust, unit = aipw_coverage(draws, n, n_clusters, seed)
        print(f"{label:<34}{robust:>19.3f}{unit:>10.3f}")
    print(
        f"(binomial sd of a coverage of 0.95 over {draws} draws: {np.sqrt(0.95 * 0.05 / draws):.3f})"
    )


def _current_rss_mb() -> float:
    """Resident set size of this process now (Linux ``/proc``), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _fit_once(n: int, p: int, n_estimators: int, seed: int) -> None:
    """Child-process body of :func:`curve`: fit once, print seconds, peak RSS and growth."""
    from eocausal.estimate import CausalForest

    X, T, Y, _, _ = simulate_cate_problem(n, p, seed=seed)
    before = _current_rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _current_rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    CausalForest(n_estimators=n_estimators, random_state=seed).fit(X, T, Y)
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _current_rss_mb())
    print(f"{elapsed} {peak[0]} {peak[0] - before}")


def curve(ns: list[int], p: int, n_estimators: int, seed: int) -> None:
    """Fit time and peak memory over n; each n in a fresh process so peaks do not mix."""
    print(f"\neocausal CausalForest scaling: p={p}, n_estimators={n_estimators}")
    print(f"{'n':>9}{'fit s':>10}{'peak RSS MB':>14}{'RSS growth in fit MB':>23}")
    for n in ns:
        cmd = [
            sys.executable,
            __file__,
            "--fit-once",
            str(n),
            "--p",
            str(p),
            "--n-estimators",
            str(n_estimators),
            "--seed",
            str(seed),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        elapsed, peak, growth = (float(v) for v in out[-3:])
        print(f"{n:>9}{elapsed:>10.2f}{peak:>14.1f}{growth:>23.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--p", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-n", type=int, default=100_000, help="cap of the scaling curve")
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument(
        "--coverage-draws",
        type=int,
        default=1000,
        help="draws of the AIPW coverage simulation (0 skips it)",
    )
    parser.add_argument("--coverage-n", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--fit-once", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.fit_once is not None:
        _fit_once(args.fit_once, args.p, args.n_estimators, args.seed)
        return
    if args.quick:
        args.n, args.p, args.n_test, args.n_estimators, args.max_n = 600, 10, 300, 40, 1000
        args.coverage_draws = 100
    if not args.no_compare:
        compare(args.n, args.p, args.n_test, args.n_estimators, args.seed)
    if args.coverage_draws:
        coverage_table(args.coverage_draws, args.coverage_n, args.seed)
    if not args.no_curve:
        ns = [n for n in (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000) if n <= args.max_n]
        curve(ns, args.p, args.n_estimators, args.seed)


if __name__ == "__main__":
    main()
