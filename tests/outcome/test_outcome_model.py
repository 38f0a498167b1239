"""OutcomeModel: honest accuracy on spatial blocks, shrinkage, the calibration split, seeds, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from outcome_dgp import BLOCK_KM, SpatialWorld, linear_problem

from eocausal.errors import EocausalWarning, InputDataError
from eocausal.outcome import OutcomeModel, outcome_metrics, spatial_blocks
from eocausal.outcome.learners import fit_learner, predict

CV = "cross-fitted (all folds)"
CAL = "calibration split"


def _row(model: OutcomeModel, split: str) -> pd.Series:
    return model.metrics_.set_index("split").loc[split]


@pytest.fixture(scope="module")
def spatial_fits():
    world = SpatialWorld(0)
    xy, X, y = world.sample(600, seed=2, held_out=False)
    _, X_fresh, y_fresh = world.sample(3000, seed=3, held_out=True)
    blocked = OutcomeModel(random_state=0).fit(X, y, groups=spatial_blocks(xy, block_km=BLOCK_KM))
    random = OutcomeModel(random_state=0).fit(X, y, groups=np.arange(len(y)))
    return blocked, random, X_fresh, y_fresh


def test_blocked_cv_r2_is_honest_and_random_kfold_is_optimistic(spatial_fits):
    """Random K-fold lets nearby near-duplicates leak the spatial noise; blocks do not."""
    blocked, random, X_fresh, y_fresh = spatial_fits
    fresh = outcome_metrics(y_fresh, blocked.predict(X_fresh))["r2"]
    blocked_r2, random_r2 = _row(blocked, CV)["r2"], _row(random, CV)["r2"]
    # this world: blocked 0.27, fresh blocks 0.21, random K-fold 0.78. Over worlds 0-7 the
    # blocked CV R² minus the fresh-block R² ranged over [-0.20, +0.15] (mean +0.02), and the
    # random K-fold R² exceeded both by 0.45 or more; the best possible on fresh blocks is 0.53
    assert abs(blocked_r2 - fresh) < 0.2
    assert random_r2 > fresh + 0.4
    assert random_r2 > blocked_r2 + 0.4
    assert fresh < 1.25 / 2.34
    # the optimistic fit also picks a weaker penalty, and does worse on fresh blocks
    assert random.alpha_ < blocked.alpha_
    assert outcome_metrics(y_fresh, random.predict(X_fresh))["r2"] < fresh


def test_slope_is_below_one_and_matches_the_ridge_shrinkage():
    """Fresh-data slope of ridge predictions on truth = beta_hat' beta / var(y) ~ n/(n+alpha) R²*."""
    for seed in (0, 3):
        X, y, beta, draw = linear_problem(seed)
        model = OutcomeModel(random_state=seed).fit(X, y, groups=np.arange(len(y)) // 4)
        X_fresh, y_fresh = draw(20_000)
        slope = outcome_metrics(y_fresh, model.predict(X_fresh))["slope"]
        beta_hat = model.model_params_["coef"] / model.model_params_["scale"]
        var_y = beta @ beta + 4.0
        oracle = beta @ beta / var_y  # slope (= R²) of the best predictor X beta
        n_fit = int((~model.is_calibration_).sum())
        assert slope == pytest.approx(beta_hat @ beta / var_y, abs=0.02)
        assert slope == pytest.approx(n_fit / (n_fit + model.alpha_) * oracle, abs=0.05)
        assert slope < oracle - 0.04
        assert _row(model, CV)["slope"] < 1 and _row(model, CAL)["slope"] < 1


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(7)
    n = 240
    X = rng.normal(size=(n, 6))
    y = X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=n)
    groups = np.char.add("g", (np.arange(n) // 6).astype(str))
    return X, y, groups


@pytest.mark.parametrize("name", ["ridge", "hist_gradient_boosting", "mlp"])
def test_calibration_groups_are_never_used_for_fitting(small_problem, name):
    X, y, groups = small_problem
    model = OutcomeModel(model=name, n_folds=4, random_state=1).fit(X, y, groups=groups)
    cal = model.is_calibration_
    # whole groups, a share of the groups, never in a fold
    assert set(groups[cal]).isdisjoint(groups[~cal])
    assert len(set(groups[cal])) == int(np.ceil(0.2 * 40))
    assert (model.fold_[cal] == -1).all() and (model.fold_[~cal] >= 0).all()
    for k in range(4):
        assert set(groups[model.fold_ == k]).isdisjoint(groups[(model.fold_ != k) & ~cal])
    table = model.calibration_table_
    assert table["row"].tolist() == np.flatnonzero(cal).tolist()
    assert table["group"].tolist() == groups[cal].tolist()
    assert np.array_equal(table["truth"], y[cal])
    # calibration predictions come from the final model
    assert np.array_equal(table["predicted"], model.predict(X[cal]))
    assert np.array_equal(model.oof_prediction_[cal], model.predict(X[cal]))
    # changing the calibration outcomes changes nothing but the calibration truths
    y2 = y.copy()
    y2[cal] += 100.0
    other = OutcomeModel(model=name, n_folds=4, random_state=1).fit(X, y2, groups=groups)
    assert np.array_equal(other.oof_prediction_, model.oof_prediction_)
    assert all(np.array_equal(other.model_params_[k], v) for k, v in model.model_params_.items())
    # and a fold's outcomes do not move that fold's own out-of-fold predictions
    y3 = y.copy()
    y3[model.fold_ == 2] += 100.0
    moved = OutcomeModel(model=name, n_folds=4, random_state=1).fit(X, y3, groups=groups)
    assert np.array_equal(
        moved.oof_prediction_[model.fold_ == 2], model.oof_prediction_[model.fold_ == 2]
    )
    # the final model is the learner fitted on the non-calibration units alone
    model_seed = np.random.SeedSequence(1).generate_state(3)[2]  # (calibration, folds, model)
    refit = fit_learner(
        name,
        X[~cal],
        y[~cal],
        None,
        groups[~cal],
        seed=int(model_seed),
        alphas=np.logspace(-3, 4, 15),
        n_folds=4,
    )
    assert np.array_equal(predict(name, refit, X), model.predict(X))


def test_metrics_rows_follow_the_folds(small_problem):
    X, y, groups = small_problem
    model = OutcomeModel(n_folds=3, random_state=0).fit(X, y, groups=groups)
    m = model.metrics_
    assert m.columns.tolist() == ["split", "n", "r2", "rmse", "slope", "intercept"]
    assert m["split"].tolist() == ["fold 0", "fold 1", "fold 2", CV, CAL]
    for k in range(3):
        rows = model.fold_ == k
        expected = outcome_metrics(y[rows], model.oof_prediction_[rows])
        assert m.iloc[k][["n", "r2", "rmse", "slope"]].tolist() == pytest.approx(
            [expected["n"], expected["r2"], expected["rmse"], expected["slope"]]
        )
    assert m["n"].iloc[:3].sum() == m["n"].iloc[3] == (~model.is_calibration_).sum()


@pytest.mark.parametrize("name", ["ridge", "hist_gradient_boosting", "mlp"])
def test_same_seed_same_numbers(small_problem, name):
    X, y, groups = small_problem
    w = np.linspace(0.5, 2.0, len(y))
    a = OutcomeModel(model=name, random_state=5).fit(X, y, groups=groups, sample_weight=w)
    b = OutcomeModel(model=name, random_state=5).fit(X, y, groups=groups, sample_weight=w)
    c = OutcomeModel(model=name, random_state=6).fit(X, y, groups=groups, sample_weight=w)
    assert np.array_equal(a.oof_prediction_, b.oof_prediction_)
    assert np.array_equal(a.fold_, b.fold_)
    pd.testing.assert_frame_equal(a.metrics_, b.metrics_)
    assert not np.array_equal(a.is_calibration_, c.is_calibration_)


def test_sample_weights_act_as_duplication_for_ridge():
    """Integer weights = duplicated rows (kept in their group) for the ridge fit and its metrics."""
    rng = np.random.default_rng(4)
    n = 120
    X = rng.normal(size=(n, 3))
    y = X[:, 0] + rng.normal(size=n)
    groups = (np.arange(n) // 4).astype(str)
    w = rng.integers(1, 4, size=n)
    alphas = [0.1, 10.0, 1000.0]
    weighted = OutcomeModel(alphas=alphas, random_state=0).fit(X, y, groups=groups, sample_weight=w)
    dup = OutcomeModel(alphas=alphas, random_state=0).fit(
        np.repeat(X, w, axis=0), np.repeat(y, w), groups=np.repeat(groups, w)
    )
    # the calibration groups are drawn from the group labels, whatever their sizes
    assert np.array_equal(np.repeat(weighted.is_calibration_, w), dup.is_calibration_)
    assert weighted.alpha_ == dup.alpha_
    X_new = rng.normal(size=(50, 3))
    assert np.allclose(weighted.predict(X_new), dup.predict(X_new), atol=1e-10)


def test_alpha_at_the_edge_of_the_grid_warns():
    X, y, _, _ = linear_problem(0, sigma=0.01)
    with pytest.warns(EocausalWarning, match="edge of `alphas`"):
        OutcomeModel(alphas=[1.0, 10.0, 100.0], random_state=0).fit(
            X, y, groups=np.arange(len(y)) // 4
        )
    X, y, _, _ = linear_problem(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = OutcomeModel(random_state=0).fit(X, y, groups=np.arange(len(y)) // 4)
    assert 1e-3 < model.alpha_ < 1e4


def test_fit_errors_name_the_argument_and_the_fix(small_problem):
    X, y, groups = small_problem
    few = (np.arange(len(y)) // 30).astype(str)  # 8 groups
    with pytest.raises(InputDataError, match=r"8 distinct groups.*leaving 6 for n_folds=7"):
        OutcomeModel(n_folds=7).fit(X, y, groups=few)
    X_bad = X.copy()
    X_bad[[3, 9]] = np.nan
    with pytest.raises(InputDataError, match="rows 3, 9"):
        OutcomeModel().fit(X_bad, y, groups=groups)
    with pytest.raises(InputDataError, match="`y` has 239 values"):
        OutcomeModel().fit(X, y[:-1], groups=groups)
    with pytest.raises(InputDataError, match="one label per labelled location"):
        OutcomeModel().fit(X, y, groups=groups[:-1])
    with pytest.raises(InputDataError, match="`groups` is required"):
        OutcomeModel().fit(X, y, groups=None)
    with pytest.raises(InputDataError, match="model='ridge' only"):
        OutcomeModel(model="mlp", alphas=[1.0]).fit(X, y, groups=groups)
    with pytest.raises(InputDataError, match="'model' parameter"):
        OutcomeModel(model="forest").fit(X, y, groups=groups)
    with pytest.raises(InputDataError, match="'calibration_size'"):
        OutcomeModel(calibration_size=0.0).fit(X, y, groups=groups)
    model = OutcomeModel(random_state=0).fit(X, y, groups=groups)
    with pytest.raises(InputDataError, match="fitted with 6"):
        model.predict(X[:, :5])
