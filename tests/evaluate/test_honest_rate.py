"""Honest RATE protocols: no evaluation unit is ever seen by the prioritisation model."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
from evaluate_learners import LinearTLearner
from scipy.stats import norm

from eocausal.errors import EstimationError
from eocausal.evaluate import rate, rate_sequential_cv, rate_single_split


def simulate(rng, n, heterogeneity=1.0, clusters=None):
    X = rng.normal(size=(n, 3))
    T = rng.binomial(1, 0.5, n)
    tau = 0.5 + heterogeneity * X[:, 0]
    Y = X[:, 1] + T * tau + rng.normal(size=n)
    return X, T, Y


class RecordingLearner(LinearTLearner):
    """Remembers the feature rows of every fit (class-level log across clones)."""

    log: ClassVar[list] = []

    def fit(self, X, T, Y, *, clusters=None, sample_weight=None):
        RecordingLearner.log.append(np.asarray(X).copy())
        return super().fit(X, T, Y, clusters=clusters, sample_weight=sample_weight)


def _row_set(rows):
    return {tuple(r) for r in np.round(rows, 12)}


def test_single_split_is_honest_and_detects_heterogeneity():
    rng = np.random.default_rng(0)
    X, T, Y = simulate(rng, 800)
    RecordingLearner.log = []
    res = rate_single_split(RecordingLearner(), X, T, Y, seed=1)
    train, ev = res.train_index, res.eval_index
    assert np.intersect1d(train, ev).size == 0 and train.size + ev.size == 800
    # First fit: the prioritiser, on training rows only; second: the evaluator, on evaluation rows.
    assert _row_set(RecordingLearner.log[0]) == _row_set(X[train])
    assert _row_set(RecordingLearner.log[1]) == _row_set(X[ev])
    # The result is rate() on the evaluation units' DR scores and priorities.
    evaluator = LinearTLearner().fit(X[ev], T[ev], Y[ev])
    np.testing.assert_allclose(res.dr_scores, evaluator.dr_scores_)
    direct = rate(res.dr_scores, res.priorities, n_bootstrap=0)
    np.testing.assert_allclose(res.rate.estimate, direct.estimate)
    assert res.rate.ratio > 3
    json.dumps(res.to_dict())


def test_single_split_keeps_clusters_whole_and_is_reproducible():
    rng = np.random.default_rng(1)
    X, T, Y = simulate(rng, 600)
    clusters = rng.integers(0, 60, 600)
    a = rate_single_split(LinearTLearner(), X, T, Y, clusters=clusters, seed=3, n_bootstrap=50)
    b = rate_single_split(LinearTLearner(), X, T, Y, clusters=clusters, seed=3, n_bootstrap=50)
    assert not set(clusters[a.train_index]) & set(clusters[a.eval_index])
    assert a.rate.n_clusters == len(set(clusters[a.eval_index]))
    assert a.rate.estimate == b.rate.estimate and a.rate.std_err == b.rate.std_err


def test_known_propensity_array_is_cut_to_each_part():
    rng = np.random.default_rng(2)
    X, T, Y = simulate(rng, 400)
    e = np.full(400, 0.5)
    res = rate_single_split(LinearTLearner(propensity=e), X, T, Y, seed=0, n_bootstrap=20)
    assert res.dr_scores.shape == (res.eval_index.size,)


def test_sequential_cv_fits_on_earlier_folds_only():
    rng = np.random.default_rng(3)
    X, T, Y = simulate(rng, 750)
    RecordingLearner.log = []
    res = rate_sequential_cv(RecordingLearner(), X, T, Y, n_folds=5, seed=2, n_bootstrap=50)
    folds = res.fold_ids
    # Fit 0: DR scores on everyone; fit k (k >= 1): folds 0 .. k-1, evaluated on fold k.
    assert _row_set(RecordingLearner.log[0]) == _row_set(X)
    for k in range(1, 5):
        assert _row_set(RecordingLearner.log[k]) == _row_set(X[folds < k])
        assert res.folds[k - 1].n == int((folds == k).sum())
    t = np.array([f.estimate / f.std_err for f in res.folds])
    np.testing.assert_allclose(res.t_statistics, t)
    np.testing.assert_allclose(res.statistic, t.sum() / 2.0)
    np.testing.assert_allclose(res.p_value, 2 * norm.sf(abs(res.statistic)))
    assert res.statistic > 3
    json.dumps(res.to_dict())


def test_sequential_cv_size_under_no_heterogeneity():
    rng = np.random.default_rng(4)
    rejections = 0
    n_sims = 30
    for sim in range(n_sims):
        X, T, Y = simulate(rng, 400, heterogeneity=0.0)
        res = rate_sequential_cv(LinearTLearner(), X, T, Y, n_folds=4, seed=sim, n_bootstrap=50)
        rejections += res.p_value < 0.05
    # Expected 1.5 of 30 at a 5% level; 6 or more has probability < 0.5% for a valid test.
    assert rejections <= 5


def test_learner_without_dr_scores_is_refused():
    class NoScores(LinearTLearner):
        def fit(self, X, T, Y, *, clusters=None, sample_weight=None):
            super().fit(X, T, Y)
            del self.dr_scores_
            return self

    rng = np.random.default_rng(5)
    X, T, Y = simulate(rng, 100)
    with pytest.raises(EstimationError, match="dr_scores_"):
        rate_single_split(NoScores(), X, T, Y, seed=0)


def test_with_the_package_t_learner_and_calibration():
    from eocausal.estimate import TLearner
    from eocausal.evaluate import calibration_test

    rng = np.random.default_rng(6)
    n = 800
    X = rng.normal(size=(n, 3))
    T = rng.binomial(1, 0.5, n)
    Y = X[:, 1] + T * (2.0 * (X[:, 0] > 0)) + rng.normal(size=n)
    learner = TLearner(n_estimators=60, propensity=0.5, n_jobs=1, random_state=0)
    res = rate_single_split(learner, X, T, Y, seed=0, n_bootstrap=100)
    assert res.rate.ratio > 2.5
    ev = res.eval_index
    model = learner.fit(X[ev], T[ev], Y[ev])
    calib = calibration_test(
        Y[ev], T[ev], model.outcome_oof_, model.propensity_oof_, model.effect_oof_
    )
    assert calib.table["p_value"].iloc[1] < 0.01
