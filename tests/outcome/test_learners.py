"""The exported learners predict exactly what scikit-learn predicts; known-truth accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor

from eocausal.outcome import OutcomeModel
from eocausal.outcome.learners import export_hgb, export_mlp, predict, ridge_path


def test_ridge_path_equals_sklearn_ridge_with_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)) * rng.uniform(0.5, 5, size=8) + 3.0
    y = X @ rng.normal(size=8) + rng.normal(size=120)
    w = rng.uniform(0.2, 3.0, size=120)
    alphas = np.array([0.01, 1.0, 50.0])
    mean, scale, coef, intercept = ridge_path(X, y, w, alphas)
    assert np.allclose(mean, np.average(X, axis=0, weights=w))
    Z = (X - mean) / scale
    for j, alpha in enumerate(alphas):
        ref = Ridge(alpha=alpha, solver="svd").fit(Z, y, sample_weight=w)
        assert np.allclose(coef[:, j], ref.coef_, atol=1e-10)
        assert intercept[j] == pytest.approx(ref.intercept_, abs=1e-10)


def test_exported_boosting_predicts_exactly_as_sklearn():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 4))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2 + 0.1 * rng.normal(size=400)
    est = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    X_new = rng.normal(size=(300, 4)) * 2
    X_new[:5, 0] = np.nan  # missing values follow the learned direction
    assert np.array_equal(
        predict("hist_gradient_boosting", export_hgb(est), X_new), est.predict(X_new)
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_exported_mlp_predicts_as_sklearn():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 6))
    y = X[:, 0] - np.abs(X[:, 1])
    est = MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=50, random_state=0).fit(X, y)
    params = {
        **export_mlp(est),
        "mean": np.zeros(6),
        "scale": np.ones(6),
        "y_mean": np.asarray(0.0),
        "y_scale": np.asarray(1.0),
    }
    assert np.allclose(predict("mlp", params, X), est.predict(X), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore::eocausal.errors.EocausalWarning")
def test_nonlinear_learners_reach_the_best_possible_r2():
    """y = 2|x0| + N(0, 0.5²): best R² = 4(1 - 2/pi) / (4(1 - 2/pi) + 0.25) = 0.85; a linear fit gets 0."""
    rng = np.random.default_rng(3)
    n = 800
    X = rng.normal(size=(n, 5))
    y = 2 * np.abs(X[:, 0]) + 0.5 * rng.normal(size=n)
    groups = np.arange(n) // 8
    best = 4 * (1 - 2 / np.pi) / (4 * (1 - 2 / np.pi) + 0.25)
    X_fresh = rng.normal(size=(5000, 5))
    y_fresh = 2 * np.abs(X_fresh[:, 0]) + 0.5 * rng.normal(size=5000)
    for name in ("hist_gradient_boosting", "mlp"):
        m = OutcomeModel(model=name, random_state=0).fit(X, y, groups=groups)
        cv_r2 = m.metrics_.set_index("split").loc["cross-fitted (all folds)", "r2"]
        fresh = 1 - np.mean((y_fresh - m.predict(X_fresh)) ** 2) / np.var(y_fresh)
        assert best - 0.12 < cv_r2 <= best + 0.03, (name, cv_r2)
        assert fresh == pytest.approx(cv_r2, abs=0.06), name
    ridge = OutcomeModel(random_state=0).fit(X, y, groups=groups)
    assert ridge.metrics_["r2"].iloc[-2] < 0.05
