"""Coverage of the standard errors of effects on a corrected (debiased) predicted outcome.

Simulations with a known effect (tau = 1) for each inference path of
:mod:`eocausal.debias`; every cell prints its number of replications, the
coverage of the 95 % interval, the mean reported SE, the Monte Carlo SD of
the estimate and the bias in units of that SD.

Cells:

- ``cluster-linear`` / ``cluster-tweedie``: cluster-randomised trial, 60
  clusters of 40 units, cluster random effect SD 1; ``debiased_ate`` with
  ``clusters`` (linear calibration k = 0.6; Tweedie on posterior-mean-shaped
  predictions with k = 0.6), 500 calibration pairs.
- ``small-cal``: randomised trial of 2,000 units, 120 calibration pairs,
  k = 0.4: the calibration part of the SE dominates.
- ``aipw``: observational (e = logistic(0.5 x)), 2,000 units, 120 pairs,
  k = 0.4; ``debiased_aipw_ate`` with nuisances cross-fitted on the
  corrected outcome (OLS per arm, 2 folds) and a logistic ê.
- ``obs-logistic``: C ~ N(0,1), e = logistic(0.75 C),
  Y = W + 2C + N(0,1), 2,000 units; corrected Hajek IPW with ê from an
  unpenalised logistic regression on C, SE projected on the logistic scores
  (``propensity_features``), against the same estimate with ê treated as
  known.
- ``obs-crossfit``: as above with ê from
  :func:`eocausal.estimate.estimate_propensity` (cross-fitted ridge
  logistic, the pipeline's choice), SE projected.
- ``obs-limited-overlap`` (no target): the audit's e = logistic(1.5 C), whose
  propensities reach about 0.01; even the true-propensity influence SE
  under-covers at n = 2,000 (limited overlap, not the projection).

Run::

    python benchmarks/inference.py            # 1,000 replications per cell (Tweedie and obs-crossfit 300)
    python benchmarks/inference.py --quick    # a fifth of those, 100 bootstrap draws
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from eocausal.debias import TweedieCorrection, debiased_aipw_ate, debiased_ate
from eocausal.errors import CalibrationWarning, OverlapWarning
from eocausal.estimate import estimate_propensity

TAU = 1.0
Z95 = 1.959963984540054


def _linear_pairs(rng, y, k, noise_sd, m=0.3):
    return m + k * y + rng.normal(0, noise_sd, y.size)


def _cluster_trial(rng, n_clusters=60, size=40):
    """Cluster-randomised: W per cluster, Y = W + u_c + N(0,1), u_c ~ N(0,1)."""
    w_c = rng.permutation(np.repeat([0, 1], n_clusters // 2))
    cl = np.repeat(np.arange(n_clusters), size)
    y = TAU * w_c[cl] + rng.normal(size=n_clusters)[cl] + rng.normal(size=cl.size)
    return w_c[cl], y, cl


def _cal_truth(rng, m):
    """Calibration units drawn from the same population as the trial (independent units)."""
    return TAU * rng.binomial(1, 0.5, m) + rng.normal(size=m) + rng.normal(size=m)


def cell_cluster_linear(rng, n_boot):
    w, y, cl = _cluster_trial(rng)
    yc = _cal_truth(rng, 500)
    r = debiased_ate(
        _linear_pairs(rng, y, 0.6, 0.5), w, randomized=True, clusters=cl, method="linear",
        calibration_predicted=_linear_pairs(rng, yc, 0.6, 0.5), calibration_truth=yc,
        n_bootstrap=n_boot, seed=int(rng.integers(1 << 31)),
    )  # fmt: skip
    return {"": (r.estimate, r.std_err)}


def cell_cluster_tweedie(rng, n_boot):
    """Predictions shaped like posterior means E[Y | Y + N(0, v)] (Gaussian approximation)."""
    w, y, cl = _cluster_trial(rng)
    yc = _cal_truth(rng, 500)
    mu, s2 = 0.5 * TAU, 2.0 + 0.25 * TAU**2  # pooled mean and variance of Y
    v = s2 * (1 / 0.6 - 1)  # k = s2 / (s2 + v) = 0.6

    def predict(t):
        return mu + 0.6 * (t + rng.normal(0, np.sqrt(v), t.size) - mu)

    r = debiased_ate(
        predict(y), w, randomized=True, clusters=cl, method="tweedie",
        tweedie=TweedieCorrection(step=None),  # exact KDE derivative: one pass, 4x faster
        calibration_predicted=predict(yc), calibration_truth=yc, n_bootstrap=n_boot,
        seed=int(rng.integers(1 << 31)),
    )  # fmt: skip
    return {"": (r.estimate, r.std_err)}


def cell_small_cal(rng, n_boot):
    n = 2000
    w = rng.binomial(1, 0.5, n)
    y = TAU * w + rng.normal(size=n)
    yc = TAU * rng.binomial(1, 0.5, 120) + rng.normal(size=120)
    r = debiased_ate(
        _linear_pairs(rng, y, 0.4, 0.6), w, propensity=0.5, method="linear",
        calibration_predicted=_linear_pairs(rng, yc, 0.4, 0.6), calibration_truth=yc,
        n_bootstrap=n_boot, seed=int(rng.integers(1 << 31)),
    )  # fmt: skip
    return {"": (r.estimate, r.std_err), "sampling SE only": (r.estimate, r.sampling_se)}


def _logistic(x, w):
    fit = LogisticRegression(C=np.inf).fit(x[:, None], w)
    return fit.predict_proba(x[:, None])[:, 1]


def _crossfit_arms(x, w, y, n_folds=2, rng=None):
    """Out-of-fold OLS of y on [1, x] within each arm."""
    folds = rng.permutation(np.arange(x.size) % n_folds)
    z = np.column_stack([np.ones_like(x), x])
    mu = np.empty((2, x.size))
    for k in range(n_folds):
        test = folds == k
        for arm in (0, 1):
            rows = ~test & (w == arm)
            mu[arm, test] = z[test] @ np.linalg.lstsq(z[rows], y[rows], rcond=None)[0]
    return mu[0], mu[1]


def cell_aipw(rng, n_boot):
    from eocausal.debias import debias_outcome

    n = 2000
    x = rng.normal(size=n)
    w = rng.binomial(1, 1 / (1 + np.exp(-0.5 * x)))
    y = TAU * w + x + rng.normal(size=n)
    xc = rng.normal(size=120)
    yc = TAU * rng.binomial(1, 1 / (1 + np.exp(-0.5 * xc))) + xc + rng.normal(size=120)
    pred, cal_p = _linear_pairs(rng, y, 0.4, 0.6), _linear_pairs(rng, yc, 0.4, 0.6)
    cal = {"calibration_predicted": cal_p, "calibration_truth": yc, "method": "linear"}
    corrected = debias_outcome(pred, **cal).corrected
    e = _logistic(x, w)
    mu0, mu1 = _crossfit_arms(x, w, corrected, rng=rng)
    r = debiased_aipw_ate(
        pred, w, e, outcome_hat=e * mu1 + (1 - e) * mu0, effect=mu1 - mu0, n_bootstrap=n_boot,
        seed=int(rng.integers(1 << 31)), **cal,
    )  # fmt: skip
    return {"": (r.estimate, r.std_err), "sampling SE only": (r.estimate, r.sampling_se)}


def _audit_obs(rng, slope=0.75):
    n = 2000
    c = rng.normal(size=n)
    w = rng.binomial(1, 1 / (1 + np.exp(-slope * c)))
    y = TAU * w + 2 * c + rng.normal(size=n)
    cc = rng.normal(size=500)
    yc = TAU * rng.binomial(1, 1 / (1 + np.exp(-slope * cc))) + 2 * cc + rng.normal(size=500)
    return c, w, _linear_pairs(rng, y, 0.6, 0.5), yc, _linear_pairs(rng, yc, 0.6, 0.5)


def cell_obs_limited_overlap(rng, n_boot):
    """The audit's e = logistic(1.5 C) (e down to about 0.01): no linearised SE is accurate."""
    c, w, pred, yc, cal_p = _audit_obs(rng, slope=1.5)
    kw = {"calibration_predicted": cal_p, "calibration_truth": yc, "method": "linear",
          "n_bootstrap": n_boot, "seed": int(rng.integers(1 << 31))}  # fmt: skip
    proj = debiased_ate(pred, w, propensity=_logistic(c, w), propensity_features=c, **kw)
    true = debiased_ate(pred, w, propensity=1 / (1 + np.exp(-1.5 * c)), **kw)
    return {"logistic ê, SE projected": (proj.estimate, proj.std_err),
            "true e (known)": (true.estimate, true.std_err)}  # fmt: skip


def cell_obs_logistic(rng, n_boot):
    c, w, pred, yc, cal_p = _audit_obs(rng)
    e = _logistic(c, w)
    kw = {"calibration_predicted": cal_p, "calibration_truth": yc, "method": "linear",
          "n_bootstrap": n_boot, "seed": int(rng.integers(1 << 31))}  # fmt: skip
    proj = debiased_ate(pred, w, propensity=e, propensity_features=c, **kw)
    known = debiased_ate(pred, w, propensity=e, **kw)
    return {
        "SE projected on logistic scores": (proj.estimate, proj.std_err),
        "ê treated as known (rejected)": (known.estimate, known.std_err),
    }


def cell_obs_crossfit(rng, n_boot):
    c, w, pred, yc, cal_p = _audit_obs(rng)
    e = estimate_propensity(c[:, None], w, seed=int(rng.integers(1 << 31)), n_jobs=1)
    kw = {"calibration_predicted": cal_p, "calibration_truth": yc, "method": "linear",
          "n_bootstrap": n_boot, "seed": int(rng.integers(1 << 31))}  # fmt: skip
    proj = debiased_ate(pred, w, propensity=e, propensity_features=c, **kw)
    known = debiased_ate(pred, w, propensity=e, **kw)
    return {
        "SE projected on logistic scores": (proj.estimate, proj.std_err),
        "ê treated as known": (known.estimate, known.std_err),
    }


# name: (label, simulation, share of --reps: the KDE and the nested propensity CV cost more)
CELLS = {
    "cluster-linear": ("corrected IPW, linear, 60 clusters x 40", cell_cluster_linear, 1.0),
    "cluster-tweedie": ("corrected IPW, Tweedie, 60 clusters x 40", cell_cluster_tweedie, 0.3),
    "small-cal": ("corrected IPW, linear, 120 pairs, k = 0.4", cell_small_cal, 1.0),
    "aipw": ("corrected AIPW, linear, 120 pairs, k = 0.4", cell_aipw, 1.0),
    "obs-logistic": ("observational corrected IPW, logistic ê", cell_obs_logistic, 1.0),
    "obs-crossfit": ("observational corrected IPW, cross-fitted ridge ê", cell_obs_crossfit, 0.3),
    "obs-limited-overlap": ("audit design e = logistic(1.5 C), no target", cell_obs_limited_overlap, 0.5),
}
OBSERVATIONAL = ("obs-logistic", "obs-crossfit")
TARGETED = tuple(name for name in CELLS if name != "obs-limited-overlap")


def run_cell(fn, reps, n_boot, seed):
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {}
    for _ in range(reps):
        for variant, (est, se) in fn(rng, n_boot).items():
            rows.setdefault(variant, []).append((est, se))
    out = {}
    for variant, vals in rows.items():
        est, se = np.asarray(vals).T
        sd = est.std(ddof=1)
        out[variant] = {
            "reps": reps,
            "coverage": float(np.mean(np.abs(est - TAU) <= Z95 * se)),
            "mean_se": float(se.mean()),
            "mc_sd": float(sd),
            "bias_sd": float((est.mean() - TAU) / sd),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of the replications, 100 draws")
    ap.add_argument("--reps", type=int, default=None, help="replications per cell (default 1000)")
    ap.add_argument("--n-bootstrap", type=int, default=None, help="calibration bootstrap draws")
    ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    reps = args.reps or (200 if args.quick else 1000)
    n_boot = args.n_bootstrap or (100 if args.quick else 200)
    warnings.simplefilter("ignore", CalibrationWarning)
    warnings.simplefilter("ignore", OverlapWarning)  # e = logistic(1.5 C) has tails by design
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}; calibration bootstrap {n_boot} draws; tau = {TAU}")  # fmt: skip
    print("| cell | SE | reps | coverage | mean SE | MC SD | bias / MC SD | time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    failures = []
    for name in args.cells:
        label, fn, share = CELLS[name]
        n = max(int(reps * share), 50)
        t0 = time.perf_counter()
        res = run_cell(fn, n, n_boot, args.seed + list(CELLS).index(name))
        dt = time.perf_counter() - t0
        for variant, r in res.items():
            print(f"| {label} | {variant or 'total (sampling + calibration)'} | {r['reps']} | "
                  f"{r['coverage']:.3f} | {r['mean_se']:.4f} | {r['mc_sd']:.4f} | "
                  f"{r['bias_sd']:+.3f} | {dt:.0f} |", flush=True)  # fmt: skip
            reported = variant in ("", "SE projected on logistic scores") and name in TARGETED
            biased = name in OBSERVATIONAL and abs(r["bias_sd"]) > 0.1 and reported
            if reported and (biased or not 0.92 <= r["coverage"] <= 0.98):
                failures.append(f"{name}: {variant or 'total'}")
    print("targets: coverage in [0.92, 0.98] for the reported SE, |bias| <= 0.1 MC SD (observational);",
          "missed: " + ", ".join(failures) if failures else "all met")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
