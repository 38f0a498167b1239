"""AIPW, Hajek IPW and overlap diagnostics against brute force and known truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from eocausal.errors import InputDataError, OverlapWarning
from eocausal.estimate import (
    aipw_ate,
    cluster_robust_se,
    dr_scores,
    estimate_propensity,
    hajek_ipw_ate,
    make_folds,
    overlap_diagnostics,
)

from .dgp import crossfit_linear_arms, linear_sim


def _tiny(seed=0, n=12):
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=n)
    T = np.array([0, 1] * (n // 2))
    e = rng.uniform(0.2, 0.8, size=n)
    mu0 = rng.normal(size=n)
    mu1 = rng.normal(size=n)
    return Y, T, e, mu0, mu1


def test_aipw_all_matches_brute_force_loop():
    Y, T, e, mu0, mu1 = _tiny()
    w = np.arange(1, 13, dtype=float)
    clusters = np.repeat([0, 1, 2, 3], 3)
    res = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, clusters=clusters, sample_weight=w)
    gamma = [
        mu1[i] - mu0[i] + T[i] * (Y[i] - mu1[i]) / e[i] - (1 - T[i]) * (Y[i] - mu0[i]) / (1 - e[i])
        for i in range(12)
    ]
    theta = sum(w[i] * gamma[i] for i in range(12)) / sum(w)
    sums = [sum(w[i] * (gamma[i] - theta) for i in range(12) if clusters[i] == c) for c in range(4)]
    se = np.sqrt(sum(s**2 for s in sums) / sum(w) ** 2 * 4 / 3)
    assert res.estimate == pytest.approx(theta, rel=1e-12)
    assert res.std_err == pytest.approx(se, rel=1e-12)
    assert res.n_clusters == 4
    assert res.ci_lower == pytest.approx(theta - 1.959963984540054 * se)


def test_grf_and_arm_parametrisations_agree_and_scores_match():
    Y, T, e, mu0, mu1 = _tiny(1)
    tau = mu1 - mu0
    m = e * mu1 + (1 - e) * mu0
    for target in ("all", "treated", "control", "overlap"):
        a = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target=target)
        b = aipw_ate(Y, T, e, outcome_hat=m, effect=tau, target=target)
        assert a.estimate == pytest.approx(b.estimate, rel=1e-12)
        assert a.std_err == pytest.approx(b.std_err, rel=1e-12)
    gamma = dr_scores(Y, T, e, m, tau)
    assert aipw_ate(Y, T, e, mu0=mu0, mu1=mu1).estimate == pytest.approx(gamma.mean())
    overlap = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target="overlap")
    h = e * (1 - e)
    assert overlap.estimate == pytest.approx(np.sum(h * gamma) / np.sum(h))


def test_att_and_atc_brute_force():
    Y, T, e, mu0, mu1 = _tiny(2)
    att = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target="treated").estimate
    num = sum((Y[i] - mu0[i]) if T[i] else -e[i] / (1 - e[i]) * (Y[i] - mu0[i]) for i in range(12))
    assert att == pytest.approx(num / T.sum())
    atc = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target="control").estimate
    num = sum((1 - e[i]) / e[i] * (Y[i] - mu1[i]) if T[i] else mu1[i] - Y[i] for i in range(12))
    assert atc == pytest.approx(num / (12 - T.sum()))


def test_unit_clusters_equal_no_clusters_and_invariances():
    Y, T, e, mu0, mu1 = _tiny(3)
    a = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1)
    b = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, clusters=np.arange(12))
    assert a.std_err == pytest.approx(b.std_err)
    c = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, sample_weight=np.full(12, 7.0))
    assert c.estimate == pytest.approx(a.estimate) and c.std_err == pytest.approx(a.std_err)
    perm = np.random.default_rng(0).permutation(12)
    d = aipw_ate(Y[perm], T[perm], e[perm], mu0=mu0[perm], mu1=mu1[perm])
    assert d.estimate == pytest.approx(a.estimate) and d.std_err == pytest.approx(a.std_err)
    json.dumps(a.to_dict())


def test_cluster_robust_se_formula():
    phi = np.array([1.0, -2.0, 0.5, 0.5, 3.0, -3.0])
    clusters = np.array(["a", "a", "b", "b", "c", "c"])
    se, C = cluster_robust_se(phi, 2.0, clusters)
    assert C == 3
    assert se == pytest.approx(np.sqrt(((-1) ** 2 + 1**2 + 0**2) * 1.5) / 2.0)


def _coverage(draws, n, n_clusters=None, use_clusters=True):
    hits = []
    for seed in range(draws):
        x, T, Y, _tau, e, cl = linear_sim(n, seed, n_clusters=n_clusters)
        folds = make_folds(n, 2, clusters=cl, seed=seed)
        mu0, mu1 = crossfit_linear_arms(x, T, Y, folds)
        res = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, clusters=cl if use_clusters else None)
        truth = 1.0  # population ATE
        hits.append(res.ci_lower <= truth <= res.ci_upper)
    return float(np.mean(hits))


def test_aipw_coverage_without_clusters():
    cover = _coverage(200, 400)
    assert 0.91 <= cover <= 0.99, cover


def test_aipw_coverage_with_clusters_and_naive_undercoverage():
    cover = _coverage(200, 400, n_clusters=40)
    assert 0.90 <= cover <= 0.99, cover
    naive = _coverage(200, 400, n_clusters=40, use_clusters=False)
    assert naive < cover - 0.1, (naive, cover)


def test_targets_recover_truth_at_large_n():
    n = 40_000
    x, T, Y, tau, e, _ = linear_sim(n, 7)
    mu0, mu1 = x, x + tau  # true arm means
    truths = {
        "all": tau.mean(),
        "treated": tau[T == 1].mean(),
        "control": tau[T == 0].mean(),
        "overlap": np.sum(e * (1 - e) * tau) / np.sum(e * (1 - e)),
    }
    for target, truth in truths.items():
        res = aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target=target)
        assert abs(res.estimate - truth) < 4 * res.std_err, (target, res.estimate, truth)
    assert truths["treated"] > truths["all"] > truths["control"]  # e increases with x, as tau


def test_aipw_input_errors():
    Y, T, e, mu0, mu1 = _tiny()
    with pytest.raises(InputDataError, match="target"):
        aipw_ate(Y, T, e, mu0=mu0, mu1=mu1, target="att")
    with pytest.raises(InputDataError, match="mu0"):
        aipw_ate(Y, T, e, mu1=mu1)
    bad = e.copy()
    bad[4] = 1.0
    with pytest.raises(InputDataError, match="rows 4"):
        aipw_ate(Y, T, bad, mu0=mu0, mu1=mu1)
    with pytest.raises(InputDataError, match="11 values"):
        aipw_ate(Y, T, e, mu0=mu0[:11], mu1=mu1)


def test_hajek_brute_force_and_seeded_bootstrap():
    Y, T, e, _, _ = _tiny(4, n=40)
    res = hajek_ipw_ate(Y, T, e, n_bootstrap=50, seed=3)
    v1 = T / e
    v0 = (1 - T) / (1 - e)
    assert res.estimate == pytest.approx(np.sum(v1 * Y) / v1.sum() - np.sum(v0 * Y) / v0.sum())
    again = hajek_ipw_ate(Y, T, e, n_bootstrap=50, seed=3)
    assert again.std_err == res.std_err
    json.dumps(res.to_dict())


def test_hajek_clips_and_reports():
    Y, T, e, _, _ = _tiny(5, n=40)
    e = e.copy()
    e[0] = 1e-6
    with pytest.warns(OverlapWarning, match="between 0.000"):
        res = hajek_ipw_ate(Y, T, e, n_bootstrap=20, seed=0, clip=(0.01, 0.99))
    assert res.n_clipped == 1 and res.clip == [0.01, 0.99]


def test_hajek_bootstrap_se_matches_linearisation_and_clusters_widen():
    n = 4000
    _x, T, Y, _tau, e, cl = linear_sim(n, 11, n_clusters=80, cluster_sd=1.5)
    res = hajek_ipw_ate(Y, T, e, n_bootstrap=400, seed=0)
    # Linearised (sandwich) SE of the Hajek estimator, each unit its own cluster.
    v1 = T / e / np.sum(T / e)
    v0 = (1 - T) / (1 - e) / np.sum((1 - T) / (1 - e))
    m1, m0 = np.sum(v1 * Y), np.sum(v0 * Y)
    infl = v1 * (Y - m1) - v0 * (Y - m0)
    lin_se = np.sqrt(np.sum(infl**2))
    assert res.std_err == pytest.approx(lin_se, rel=0.12)
    clustered = hajek_ipw_ate(Y, T, e, clusters=cl, n_bootstrap=400, seed=0)
    assert clustered.std_err > 1.5 * res.std_err
    assert clustered.n_clusters == 80


def test_overlap_diagnostics_values_and_warning():
    T = np.array([1, 1, 1, 0, 0, 0])
    e = np.full(6, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diag = overlap_diagnostics(e, T)
    assert diag.ok and diag.ess_treated == pytest.approx(3) and diag.ess_control == pytest.approx(3)
    e = np.array([0.02, 0.5, 0.5, 0.5, 0.97, 0.5])
    with pytest.warns(OverlapWarning, match=r"between 0.020 and 0.970.*target='overlap'"):
        diag = overlap_diagnostics(e, T)
    assert not diag.ok
    assert diag.share_low == pytest.approx(1 / 6) and diag.share_high == pytest.approx(1 / 6)
    v = 1 / np.array([0.02, 0.5, 0.5])
    assert diag.ess_treated == pytest.approx(v.sum() ** 2 / np.sum(v**2))
    assert diag.treated_quantiles[0] == pytest.approx(0.02)
    json.dumps(diag.to_dict())


def test_estimate_propensity_out_of_fold_and_clusters():
    rng = np.random.default_rng(0)
    n = 1500
    X = rng.normal(size=(n, 5))
    e = 1 / (1 + np.exp(-(X[:, 0] - 0.5 * X[:, 1])))
    T = rng.binomial(1, e)
    clusters = np.repeat(np.arange(150), 10)
    e_hat = estimate_propensity(X, T, clusters=clusters, seed=0, n_jobs=1)
    assert e_hat.shape == (n,) and ((e_hat > 0) & (e_hat < 1)).all()
    assert np.corrcoef(e_hat, e)[0, 1] > 0.95
    assert np.abs(e_hat - e).mean() < 0.05
    again = estimate_propensity(X, T, clusters=clusters, seed=0, n_jobs=1)
    np.testing.assert_array_equal(e_hat, again)
