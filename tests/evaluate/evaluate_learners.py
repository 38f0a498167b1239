"""A small CATE learner that follows eocausal's learner contract, for the evaluation tests.

A T-learner on ordinary least squares per arm, cross-fitted so that every
training unit gets out-of-fold ``effect_oof_``, ``outcome_oof_``,
``propensity_oof_`` and ``dr_scores_``. It also records which rows it was
fitted on, so tests can check that evaluation units were never seen.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LinearRegression

from eocausal.splitting import make_folds


class LinearTLearner(BaseEstimator):
    """OLS T-learner with cross-fitted nuisances; ``propensity`` may be known."""

    def __init__(self, *, n_folds=5, propensity=None, random_state=0):
        self.n_folds = n_folds
        self.propensity = propensity
        self.random_state = random_state

    @staticmethod
    def _arms(X, T, Y, w):
        fits = []
        for arm in (0, 1):
            rows = T == arm
            fits.append(
                LinearRegression().fit(
                    X[rows], Y[rows], sample_weight=None if w is None else w[rows]
                )
            )
        return fits

    def fit(self, X, T, Y, *, clusters=None, sample_weight=None):
        X, T, Y = np.asarray(X, float), np.asarray(T, int), np.asarray(Y, float)
        n = len(T)
        folds = make_folds(n, self.n_folds, clusters=clusters, stratify=T, seed=self.random_state)
        mu0, mu1, e = np.empty(n), np.empty(n), np.empty(n)
        for k in range(self.n_folds):
            test, train = folds == k, folds != k
            w = None if sample_weight is None else np.asarray(sample_weight)[train]
            f0, f1 = self._arms(X[train], T[train], Y[train], w)
            mu0[test], mu1[test] = f0.predict(X[test]), f1.predict(X[test])
            e[test] = T[train].mean() if self.propensity is None else 0.0
        if self.propensity is not None:
            e = np.broadcast_to(np.asarray(self.propensity, float), (n,)).copy()
        tau = mu1 - mu0
        m = e * mu1 + (1 - e) * mu0
        self.effect_oof_ = tau
        self.outcome_oof_ = m
        self.propensity_oof_ = e
        self.dr_scores_ = tau + (T - e) / (e * (1 - e)) * (Y - m - tau * (T - e))
        self.models_ = self._arms(X, T, Y, sample_weight)
        self.fitted_rows_ = X.copy()
        return self

    def effect(self, X):
        X = np.asarray(X, float)
        return self.models_[1].predict(X) - self.models_[0].predict(X)
