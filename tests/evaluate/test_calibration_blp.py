"""Calibration test and best linear projection: HC3 SEs against statsmodels and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import t as student_t

from eocausal.errors import EstimationError, InputDataError
from eocausal.evaluate.calibration import (
    best_linear_projection,
    calibration_test,
    cluster_robust_hc3,
)


def brute_force_cluster_hc3(X, y, w, clusters):
    """sandwich::vcovCL(type = "HC3") written with explicit n_g x n_g inverses."""
    W = np.diag(w)
    A = np.linalg.inv(X.T @ W @ X)
    beta = A @ X.T @ W @ y
    e = y - X @ beta
    meat = np.zeros((X.shape[1], X.shape[1]))
    labels = np.unique(clusters)
    G = len(labels)
    for g in labels:
        rows = np.flatnonzero(clusters == g)
        Xg = X[rows]
        H = Xg @ A @ Xg.T @ np.diag(w[rows])
        adj = np.linalg.inv(np.eye(len(rows)) - H) @ (w[rows] * e[rows])
        u = np.sqrt((G - 1) / G) * (Xg.T @ adj)
        meat += G / (G - 1) * np.outer(u, u)
    return beta, A @ meat @ A


@pytest.fixture
def design():
    rng = np.random.default_rng(0)
    n = 120
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(size=n)])
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=n) * (1 + X[:, 2])
    w = rng.choice([0.5, 1.0, 2.0], n)
    clusters = rng.integers(0, 15, n)
    return X, y, w, clusters


def test_hc3_without_clusters_matches_statsmodels(design):
    X, y, w, _ = design
    fit = sm.WLS(y, X, weights=w).fit(cov_type="HC3")
    vcov = cluster_robust_hc3(X, y - X @ fit.params, w, None)
    np.testing.assert_allclose(vcov, fit.cov_params(), rtol=1e-10)
    # Singleton clusters are the same thing.
    vcov_single = cluster_robust_hc3(X, y - X @ fit.params, w, np.arange(len(y)))
    np.testing.assert_allclose(vcov_single, vcov, rtol=1e-12)


def test_clustered_hc3_matches_brute_force(design):
    X, y, w, clusters = design
    beta, expected = brute_force_cluster_hc3(X, y, w, clusters)
    _, codes = np.unique(clusters, return_inverse=True)
    vcov = cluster_robust_hc3(X, y - X @ beta, w, codes)
    np.testing.assert_allclose(vcov, expected, rtol=1e-9)


def test_blp_matches_statsmodels_and_brute_force(design):
    X, y, w, clusters = design
    res = best_linear_projection(y, X[:, 1:], sample_weight=w, feature_names=["x1", "x2"])
    fit = sm.WLS(y, X, weights=w).fit(cov_type="HC3")
    assert list(res.table["term"]) == ["intercept", "x1", "x2"]
    np.testing.assert_allclose(res.table["estimate"], fit.params, rtol=1e-10)
    np.testing.assert_allclose(res.table["std_err"], fit.bse, rtol=1e-10)
    # lmtest::coeftest: t distribution with n - k degrees of freedom.
    t_val = fit.params / fit.bse
    np.testing.assert_allclose(res.table["p_value"], 2 * student_t.sf(np.abs(t_val), len(y) - 3))
    assert res.df == len(y) - 3
    clustered = best_linear_projection(y, X[:, 1:], sample_weight=w, clusters=clusters)
    _, V = brute_force_cluster_hc3(X, y, w, clusters)
    np.testing.assert_allclose(clustered.table["std_err"], np.sqrt(np.diag(V)), rtol=1e-9)
    assert clustered.n_clusters == len(np.unique(clusters))
    json.dumps(clustered.to_dict())


def test_blp_intercept_only_is_the_aipw_mean():
    rng = np.random.default_rng(1)
    scores = rng.normal(loc=0.3, size=400)
    res = best_linear_projection(scores)
    np.testing.assert_allclose(res.table["estimate"].iloc[0], scores.mean())
    # HC3 for a mean: sqrt(sum e^2 / (1 - 1/n)^2) / n
    e = scores - scores.mean()
    np.testing.assert_allclose(
        res.table["std_err"].iloc[0], np.sqrt(np.sum((e / (1 - 1 / 400)) ** 2)) / 400
    )


def test_blp_recovers_known_projection():
    rng = np.random.default_rng(2)
    n = 3000
    A = rng.normal(size=(n, 2))
    scores = 1.0 + 2.0 * A[:, 0] + rng.normal(scale=3.0, size=n)
    res = best_linear_projection(scores, A)
    est, se = res.table["estimate"].to_numpy(), res.table["std_err"].to_numpy()
    assert np.all(np.abs(est - [1.0, 2.0, 0.0]) < 4 * se)
    assert list(res.table["term"]) == ["intercept", "A1", "A2"]


def _rct(rng, n):
    x = rng.normal(size=n)
    tau = 1.0 + np.maximum(x, 0)
    T = rng.binomial(1, 0.5, n)
    m = 0.5 * x + 0.5 * tau  # E[Y | X] with e = 0.5
    Y = 0.5 * x + T * tau + rng.normal(size=n)
    return x, tau, T, Y, m


def test_calibration_coefficients_with_known_truth():
    rng = np.random.default_rng(3)
    _, tau, T, Y, m = _rct(rng, 4000)
    good = calibration_test(Y, T, m, 0.5, tau)
    est = good.table["estimate"].to_numpy()
    se = good.table["std_err"].to_numpy()
    assert np.all(np.abs(est - 1.0) < 4 * se), good.table
    assert good.table["p_value"].iloc[1] < 1e-4  # heterogeneity detected
    # Predictions with twice the true spread are over-dispersed: beta ~ 0.5.
    wide = calibration_test(Y, T, m, 0.5, tau.mean() + 2 * (tau - tau.mean()))
    assert abs(wide.differential_prediction - 0.5) < 4 * wide.table["std_err"].iloc[1]


def test_calibration_matches_weighted_least_squares_and_one_sided_p():
    rng = np.random.default_rng(4)
    n = 500
    _, tau, T, Y, m = _rct(rng, n)
    tau_hat = tau + rng.normal(scale=0.3, size=n)
    e = np.full(n, 0.5)
    w = rng.choice([1.0, 2.0], n)
    clusters = rng.integers(0, 40, n)
    res = calibration_test(Y, T, m, e, tau_hat, sample_weight=w, clusters=clusters)
    mean_tau = np.average(tau_hat, weights=w)
    X = np.column_stack([(T - e) * mean_tau, (T - e) * (tau_hat - mean_tau)])
    beta, V = brute_force_cluster_hc3(X, Y - m, w, clusters)
    np.testing.assert_allclose(res.table["estimate"], beta, rtol=1e-9)
    np.testing.assert_allclose(res.table["std_err"], np.sqrt(np.diag(V)), rtol=1e-9)
    t_val = beta / np.sqrt(np.diag(V))
    np.testing.assert_allclose(res.table["p_value"], student_t.sf(t_val, n - 2), rtol=1e-9)
    assert res.df == n - 2
    json.dumps(res.to_dict())


def test_calibration_errors():
    rng = np.random.default_rng(5)
    x, tau, T, Y, m = _rct(rng, 50)
    with pytest.raises(EstimationError, match="constant"):
        calibration_test(Y, T, m, 0.5, np.ones(50))
    with pytest.raises(InputDataError, match="binary"):
        calibration_test(Y, T + 1, m, 0.5, tau)
    with pytest.raises(InputDataError, match="strictly between 0 and 1"):
        calibration_test(Y, T, m, 1.0, tau)
    with pytest.raises(InputDataError, match="one row per unit"):
        best_linear_projection(Y, np.ones((49, 1)))
    with pytest.raises(EstimationError, match="collinear"):
        best_linear_projection(Y, np.column_stack([x, 2 * x]))
