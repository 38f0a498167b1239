"""Data-generating processes with known effects, shared by the estimation tests."""

from __future__ import annotations

import numpy as np


def linear_sim(n: int, seed: int, *, n_clusters: int | None = None, cluster_sd: float = 1.0):
    """Confounded design with linear arm means and a known propensity.

    x ~ N(0, 1); e = logistic(0.5 x); tau = 1 + x (+ v_c); Y = x + u_c + W tau + N(0, 1),
    where u_c, v_c ~ N(0, cluster_sd²) are shared within a cluster, so both the
    outcomes and the effects are correlated within clusters. The population
    ATE is 1 in every case. Returns x, T, Y, tau, e, clusters (None without clusters).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = 1.0 / (1.0 + np.exp(-0.5 * x))
    T = rng.binomial(1, e)
    tau = 1.0 + x
    noise = rng.normal(size=n)
    clusters = None
    if n_clusters is not None:
        clusters = rng.integers(0, n_clusters, size=n)
        noise = noise + cluster_sd * rng.normal(size=n_clusters)[clusters]
        tau = tau + cluster_sd * rng.normal(size=n_clusters)[clusters]
    Y = x + T * tau + noise
    return x, T, Y, tau, e, clusters


def crossfit_linear_arms(x, T, Y, folds):
    """Out-of-fold OLS of Y on [1, x] within each arm: returns mu0, mu1."""
    Z = np.column_stack([np.ones_like(x), x])
    mu = np.empty((2, len(x)))
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        for arm in (0, 1):
            rows = train & (T == arm)
            beta = np.linalg.lstsq(Z[rows], Y[rows], rcond=None)[0]
            mu[arm, test] = Z[test] @ beta
    return mu[0], mu[1]
