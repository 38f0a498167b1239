"""AIPW, Hajek IPW and overlap diagnostics against brute force and known truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from eocausal.errors import InputDataError, OverlapWarning
from sklearn.linear_model import LogisticRegression

from eocausal.estimate import (
    aipw_ate,
    cluster_robust_se,
    dr_scores,
    estimate_propensity,
    hajek_ipw_ate,
    hajek_weights,
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
    res = hajek_ipw_ate(Y, T, e, se="bootstrap", n_bootstrap=50, seed=3)
    v1 = T / e
    v0 = (1 - T) / (1 - e)
    assert res.estimate == pytest.approx(np.sum(v1 * Y) / v1.sum() - np.sum(v0 * Y) / v0.sum())
    again = hajek_ipw_ate(Y, T, e, se="bootstrap", n_bootstrap=50, seed=3)
    assert again.std_err == res.std_err and res.se_method == "bootstrap"
    assert hajek_weights(T, e) @ Y == pytest.approx(res.estimate, rel=1e-12)
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
    res = hajek_ipw_ate(Y, T, e, se="bootstrap", n_bootstrap=400, seed=0)
    # Linearised (sandwich) SE of the Hajek estimator, each unit its own cluster.
    v1 = T / e / np.sum(T / e)
    v0 = (1 - T) / (1 - e) / np.sum((1 - T) / (1 - e))
    m1, m0 = np.sum(v1 * Y), np.sum(v0 * Y)
    infl = v1 * (Y - m1) - v0 * (Y - m0)
    lin_se = np.sqrt(np.sum(infl**2))
    assert res.std_err == pytest.approx(lin_se, rel=0.12)
    influence = hajek_ipw_ate(Y, T, e)
    assert influence.std_err == pytest.approx(lin_se * np.sqrt(n / (n - 1)), rel=1e-10)
    clustered = hajek_ipw_ate(Y, T, e, clusters=cl, se="bootstrap", n_bootstrap=400, seed=0)
    assert clustered.std_err > 1.5 * res.std_err
    assert clustered.n_clusters == 80
    assert hajek_ipw_ate(Y, T, e, clusters=cl).std_err == pytest.approx(clustered.std_err, rel=0.15)


def test_hajek_influence_se_brute_force_with_weights_and_clusters():
    Y, T, e, _, _ = _tiny(6, n=12)
    w = np.arange(1, 13, dtype=float)
    clusters = np.repeat([0, 1, 2, 3], 3)
    res = hajek_ipw_ate(Y, T, e, clusters=clusters, sample_weight=w)
    a1 = [w[i] * T[i] / e[i] for i in range(12)]
    a0 = [w[i] * (1 - T[i]) / (1 - e[i]) for i in range(12)]
    mu1 = sum(a1[i] * Y[i] for i in range(12)) / sum(a1)
    mu0 = sum(a0[i] * Y[i] for i in range(12)) / sum(a0)
    phi = [a1[i] * (Y[i] - mu1) / sum(a1) - a0[i] * (Y[i] - mu0) / sum(a0) for i in range(12)]
    sums = [sum(phi[i] for i in range(12) if clusters[i] == c) for c in range(4)]
    assert res.estimate == pytest.approx(mu1 - mu0, rel=1e-12)
    assert res.std_err == pytest.approx(np.sqrt(sum(s**2 for s in sums) * 4 / 3), rel=1e-12)
    assert res.n_clusters == 4 and res.n_bootstrap == 0 and res.se_method == "influence"


def test_hajek_integer_weights_equal_duplicated_rows_and_scale_free():
    rng = np.random.default_rng(8)
    n = 200
    x = rng.normal(size=(n, 2))
    e = 1 / (1 + np.exp(-x[:, 0] + 0.5 * x[:, 1]))
    T = rng.binomial(1, e)
    Y = T + x[:, 0] + rng.normal(size=n)
    cl = np.arange(n) // 4
    wt = rng.integers(1, 5, n)
    rows = np.repeat(np.arange(n), wt)
    for feats in (None, x):
        kw = {"propensity_features": feats}
        a = hajek_ipw_ate(Y, T, e, clusters=cl, sample_weight=wt, **kw)
        b = hajek_ipw_ate(Y[rows], T[rows], e[rows], clusters=cl[rows],
                          propensity_features=None if feats is None else feats[rows])  # fmt: skip
        c = hajek_ipw_ate(Y, T, e, clusters=cl, sample_weight=wt / 7.0, **kw)
        for other in (b, c):
            assert other.estimate == pytest.approx(a.estimate, rel=1e-12)
            assert other.std_err == pytest.approx(a.std_err, rel=1e-10)
    assert a.se_method == "influence, propensity estimated"
    with pytest.raises(InputDataError, match="se='influence'"):
        hajek_ipw_ate(Y, T, e, propensity_features=x, se="bootstrap")


def _logistic_mle(x, T, iterations=30):
    """Unpenalised logistic regression of each row of T on [1, x] (rows are replications), by Newton."""
    Z = np.stack([np.ones_like(x), x], axis=-1)  # (reps, n, 2)
    beta = np.zeros((x.shape[0], 2))
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.einsum("rnk,rk->rn", Z, beta)))
        grad = np.einsum("rnk,rn->rk", Z, T - p)
        hess = np.einsum("rnk,rn,rnl->rkl", Z, p * (1 - p), Z)
        beta += np.linalg.solve(hess, grad[..., None])[..., 0]
    return 1 / (1 + np.exp(-np.einsum("rnk,rk->rn", Z, beta)))


def test_hajek_estimated_logistic_propensity_projected_se_is_right():
    """ê from a logistic fit: the projected SE matches the Monte Carlo sd; known-ê SE overstates it."""
    rng = np.random.default_rng(9)
    n, reps = 1000, 400
    x = rng.normal(size=(reps, n))
    T = rng.binomial(1, 1 / (1 + np.exp(-x)))
    Y = T + 2 * x + rng.normal(size=(reps, n))
    e_hat = _logistic_mle(x, T)
    sklearn_fit = LogisticRegression(C=np.inf).fit(x[0][:, None], T[0])
    np.testing.assert_allclose(e_hat[0], sklearn_fit.predict_proba(x[0][:, None])[:, 1], atol=1e-4)
    est, projected, known = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        for r in range(reps):
            p = hajek_ipw_ate(Y[r], T[r], e_hat[r], propensity_features=x[r])
            est.append(p.estimate)
            projected.append(p.std_err)
            known.append(hajek_ipw_ate(Y[r], T[r], e_hat[r]).std_err)
    mc_sd = np.std(est, ddof=1)
    assert abs(np.mean(est) - 1.0) < 4 * mc_sd / np.sqrt(reps)
    assert np.mean(projected) == pytest.approx(mc_sd, rel=0.12), (np.mean(projected), mc_sd)
    assert np.mean(known) > 1.25 * mc_sd  # treating ê as known is conservative here
