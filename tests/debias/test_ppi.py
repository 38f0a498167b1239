"""PPI++ for the ATE: published formulas, ppi-python agreement, clusters and weights."""

from __future__ import annotations

import json

import numpy as np
import ppi_py
import pytest

from eocausal.debias import ppi_ate
from eocausal.errors import InputDataError

from .dgp import TAU, rct, shrink


def _labelled(rng, y, n_labels):
    truth = np.full(y.size, np.nan)
    lab = rng.choice(y.size, n_labels, replace=False)
    truth[lab] = y[lab]
    return truth


def test_ppi_matches_published_formulas_and_ppi_python(linear_shrink):
    w, y, yh, _, _ = linear_shrink
    truth = _labelled(np.random.default_rng(9), y, 300)
    a = w / 0.5 - (1 - w) / 0.5
    mask = np.isfinite(truth)
    z, zh, zu = a[mask] * y[mask], a[mask] * yh[mask], a[~mask] * yh[~mask]

    r0 = ppi_ate(yh, w, truth, propensity=0.5, lam=0.0)
    assert r0.estimate == pytest.approx(z.mean()) == pytest.approx(r0.classical)
    r1 = ppi_ate(yh, w, truth, propensity=0.5, lam=1.0)
    assert r1.estimate == pytest.approx(zu.mean() + (z - zh).mean())
    r = ppi_ate(yh, w, truth, propensity=0.5)
    lam = np.cov(z, zh)[0, 1] / ((1 + z.size / zu.size) * np.var(np.concatenate([zh, zu]), ddof=1))
    # the cluster-summed variance gives the published lambda up to O(n^-1/2) ...
    assert r.lam == pytest.approx(np.clip(lam, 0, 1), abs=0.1)
    # ... and minimises the reported SE exactly (brute force over a grid)
    grid = np.linspace(0, 1, 101)
    ses = [ppi_ate(yh, w, truth, propensity=0.5, lam=float(g)).std_err for g in grid]
    assert r.std_err <= min(ses) + 1e-12
    assert abs(grid[int(np.argmin(ses))] - r.lam) <= 0.01
    assert r.estimate == pytest.approx(r.lam * zu.mean() + (z - r.lam * zh).mean())
    # ppi-python (no clusters, no weights): same point estimate, same interval up to C/(C-1)
    lo, hi = (float(np.ravel(v)[0]) for v in ppi_py.ppi_mean_ci(z, zh, zu, alpha=0.05, lam=r.lam))
    assert r.estimate == pytest.approx(
        float(np.ravel(ppi_py.ppi_mean_pointestimate(z, zh, zu, lam=r.lam))[0])
    )
    assert r.ci_upper - r.ci_lower == pytest.approx(hi - lo, rel=2e-3)
    assert abs(r.estimate - TAU) < 2 * r.std_err
    assert r.std_err < r.classical_se  # predictions help
    assert r.n_labeled == 300 and r.n_unlabeled == y.size - 300 and r.n_clusters == y.size
    json.dumps(r.to_dict())


def test_ppi_cluster_se_matches_monte_carlo():
    """Cluster-randomised trial, labels on a random 20 % of units: clustered SE ~ MC sd."""
    rng = np.random.default_rng(10)
    n_clusters, size = 60, 20
    cl = np.repeat(np.arange(n_clusters), size)
    est, se, unit_se = [], [], []
    for _ in range(300):
        w = rng.permutation(np.repeat([0, 1], n_clusters // 2))[cl]
        y = TAU * w + rng.normal(size=n_clusters)[cl] + rng.normal(size=cl.size)
        truth = _labelled(rng, y, 240)
        r = ppi_ate(shrink(rng, y, 0.6, 0.5), w, truth, randomized=True, clusters=cl)
        est.append(r.estimate)
        se.append(r.std_err)
        unit_se.append(ppi_ate(shrink(rng, y, 0.6, 0.5), w, truth, randomized=True).std_err)
    mc_sd = np.std(est, ddof=1)
    assert abs(np.mean(est) - TAU) < 4 * mc_sd / np.sqrt(len(est))
    assert np.mean(se) == pytest.approx(mc_sd, rel=0.2), (np.mean(se), mc_sd)
    assert np.mean(unit_se) < 0.7 * mc_sd


def test_ppi_weights_equal_duplicated_rows_and_scale_free():
    rng = np.random.default_rng(11)
    w, y = rct(rng, 400)
    yh = shrink(rng, y, 0.6, 0.5)
    truth = _labelled(rng, y, 80)
    cl = np.arange(400) // 4
    wt = rng.integers(1, 4, 400)
    rows = np.repeat(np.arange(400), wt)
    a = ppi_ate(yh, w, truth, propensity=0.5, clusters=cl, sample_weight=wt)
    b = ppi_ate(yh[rows], w[rows], truth[rows], propensity=0.5, clusters=cl[rows])
    s = ppi_ate(yh, w, truth, propensity=0.5, clusters=cl, sample_weight=2.5 * wt)
    for other in (b, s):
        for f in ("estimate", "std_err", "lam", "classical", "classical_se", "naive"):
            assert getattr(other, f) == pytest.approx(getattr(a, f), rel=1e-9), f


def test_ppi_input_errors():
    rng = np.random.default_rng(12)
    w, y = rct(rng, 200)
    truth = _labelled(rng, y, 50)
    with pytest.raises(InputDataError, match="pass the known assignment probability"):
        ppi_ate(y, w, truth)
    few = np.full(200, np.nan)
    few[:5] = 1.0
    with pytest.raises(InputDataError, match="at least 10 labelled"):
        ppi_ate(y, w, few, randomized=True)
    with pytest.raises(InputDataError, match="infinite values at rows"):
        ppi_ate(y, w, np.where(np.arange(200) == 3, np.inf, truth), randomized=True)
