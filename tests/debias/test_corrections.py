"""Corrections and their selection: known shrinkage, exact formulas, warnings, errors (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone

from eocausal.debias import (
    LinearCalibration,
    TweedieCorrection,
    corrections,
    debias_outcome,
    select_correction,
)
from eocausal.errors import (
    CalibrationWarning,
    ConfigError,
    EstimationError,
    InputDataError,
    NotFittedError,
)


def test_linear_calibration_recovers_k(linear_shrink):
    *_, yc, yhc = linear_shrink
    lcc = LinearCalibration().fit(yhc, yc)
    assert abs(lcc.slope_ - 0.62) < 3 * lcc.slope_se_
    assert abs(lcc.intercept_ - 0.3) < 3 * lcc.intercept_se_
    y = np.linspace(-2, 2, 5)
    np.testing.assert_allclose(lcc.transform(lcc.intercept_ + lcc.slope_ * y), y)


def test_selection_picks_tweedie_for_nonlinear_shrink(bimodal_posterior):
    *_, yc, yhc = bimodal_posterior
    sel = select_correction(yhc, yc, seed=0)
    assert sel.method == "tweedie"
    assert sel.scores["tweedie"]["rmse"] < sel.scores["linear"]["rmse"] < sel.scores["none"]["rmse"]


def test_selection_picks_linear_for_linear_shrink(linear_shrink):
    *_, yc, yhc = linear_shrink
    sel = select_correction(yhc, yc, seed=0)
    assert sel.method == "linear"
    assert sel.scores["linear"]["slope"] == pytest.approx(1.0, abs=0.05)
    assert sel.scores["none"]["slope"] == pytest.approx(0.62, abs=0.05)
    again = select_correction(yhc, yc, seed=0)
    assert again.scores == sel.scores  # same seed, same numbers
    json.dumps(sel.to_dict())
    tilt = select_correction(yhc, yc, seed=0, design="tilt", n_draws=4)
    assert tilt.design == "tilt" and tilt.scores["linear"]["slope"] == pytest.approx(1.0, abs=0.1)
    assert tilt.scores["linear"]["n_contrasts"] == tilt.n_contrasts == 5 * 4
    assert tilt.scores == select_correction(yhc, yc, seed=0, design="tilt", n_draws=4).scores


def test_auto_method_reports_selection(bimodal_posterior):
    _, _, yh, yc, yhc = bimodal_posterior
    res = debias_outcome(yh, calibration_predicted=yhc, calibration_truth=yc, method="auto", seed=0)
    assert res.method == "tweedie"
    assert res.diagnostics["selection"]["method"] == "tweedie"
    assert res.corrected.shape == yh.shape
    d = res.to_dict()
    json.dumps(d)
    assert "corrected" not in d and len(res.to_dict(include_values=True)["corrected"]) == yh.size


def test_kde_score_matches_scipy_and_difference_matches_analytic():
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(400) * 2 + 1
    x = np.linspace(-4, 6, 57)
    kde = stats.gaussian_kde(sample)
    h = np.sqrt(kde.covariance[0, 0])
    d = 1e-4
    brute = (kde.logpdf(x + d) - kde.logpdf(x - d)) / (2 * d)
    analytic = corrections._kde_score(x, sample, h, None)
    central = corrections._kde_score(x, sample, h, 1e-3)
    np.testing.assert_allclose(analytic, brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(central, analytic, rtol=1e-6, atol=1e-7)


def test_kde_grid_path_matches_exact(monkeypatch):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal(3000)
    exact = corrections._kde_score(pred, pred, 0.2, None)
    monkeypatch.setattr(corrections, "_EXACT_KDE_LIMIT", 10.0)
    grid = corrections._kde_score(pred, pred, 0.2, None)
    np.testing.assert_allclose(grid, exact, atol=2e-3 * np.abs(exact).max())


def test_tweedie_transform_formula_and_options():
    rng = np.random.default_rng(2)
    yc = rng.standard_normal(300)
    yhc = 0.7 * yc + rng.normal(0, 0.4, 300)
    target = 0.7 * rng.standard_normal(500) + rng.normal(0, 0.4, 500)
    resid = rng.normal(0, 0.55, 200)

    tw = TweedieCorrection(
        sigma_source="calibration", density_source="calibration_predictions"
    ).fit(yhc, yc)
    assert tw.sigma_ == pytest.approx(np.std(yhc - yc, ddof=1))
    kde = stats.gaussian_kde(yhc)
    d = 1e-5
    score = (kde.logpdf(target + d) - kde.logpdf(target - d)) / (2 * d)
    np.testing.assert_allclose(
        tw.transform(target), target - tw.sigma_**2 * score, rtol=1e-5, atol=1e-6
    )

    tw2 = TweedieCorrection(sigma_source="validation_residuals").fit(yhc, yc, residuals=resid)
    assert tw2.sigma_ == pytest.approx(np.std(resid, ddof=1)) and tw2.n_residuals_ == 200
    kde_t = stats.gaussian_kde(target)
    score_t = (kde_t.logpdf(target + d) - kde_t.logpdf(target - d)) / (2 * d)
    np.testing.assert_allclose(
        tw2.transform(target), target - tw2.sigma_**2 * score_t, rtol=1e-5, atol=1e-6
    )
    assert tw2.diagnostics()["density_source"] == "target_predictions"


# --------------------------------------------------------------------------- warnings


def test_small_calibration_set_warns():
    rng = np.random.default_rng(4)
    y = rng.standard_normal(60)
    with pytest.warns(CalibrationWarning, match="only 60 labelled units"):
        LinearCalibration().fit(0.6 * y + rng.normal(0, 0.3, 60), y)
    with pytest.warns(CalibrationWarning, match="only 60 labelled units"):
        TweedieCorrection().fit(0.6 * y + rng.normal(0, 0.3, 60), y)


def test_outside_support_warns_and_counts():
    rng = np.random.default_rng(5)
    y = rng.standard_normal(500)
    lcc = LinearCalibration().fit(0.6 * y + rng.normal(0, 0.3, 500), y)
    inside = np.linspace(-0.5, 0.5, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        lcc.transform(inside)  # no warning
    with pytest.warns(CalibrationWarning, match=r"10 of 110 predictions \(9.1%\) lie outside"):
        lcc.transform(np.concatenate([inside, np.full(10, 50.0)]))


def test_weak_slope_warns_and_zero_slope_raises():
    rng = np.random.default_rng(6)
    y = rng.standard_normal(400)
    with pytest.warns(CalibrationWarning, match="slope k = 0.1"):
        LinearCalibration().fit(0.15 * y + rng.normal(0, 0.05, 400), y)
    with pytest.raises(EstimationError, match="indistinguishable from zero"):
        LinearCalibration().fit(rng.normal(0, 1, 400), y)


def test_bad_inputs_raise_clear_errors():
    y = np.linspace(0, 1, 200)
    with pytest.raises(InputDataError, match="got 200 and 199"):
        LinearCalibration().fit(y, y[:-1])
    bad = y.copy()
    bad[[3, 17]] = np.nan
    with pytest.raises(InputDataError, match=r"2 NaN or infinite values at rows 3, 17"):
        TweedieCorrection().fit(bad, y)
    with pytest.raises(InputDataError, match="constant"):
        LinearCalibration().fit(y, np.ones(200))
    with pytest.raises(InputDataError, match="one-dimensional"):
        LinearCalibration().fit(np.ones((20, 10)), y)
    with pytest.raises(ConfigError, match="unknown debiasing method 'ols'"):
        debias_outcome(y, calibration_predicted=y, calibration_truth=y, method="ols")
    with pytest.raises(ConfigError, match="'sigma_source' parameter"):
        TweedieCorrection(sigma_source="train").fit(y, y)
    with pytest.raises(ConfigError, match="needs `residuals`"):
        TweedieCorrection(sigma_source="validation_residuals").fit(y, y)
    with pytest.raises(ConfigError, match="set sigma_source='validation_residuals'"):
        TweedieCorrection().fit(y, y, residuals=y)
    with pytest.raises(ConfigError, match="'step' parameter"):
        TweedieCorrection(step=0.0).fit(y, y)
    with pytest.raises(ConfigError, match="`candidates`"):
        select_correction(y, y, candidates=("none", "isotonic"))
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LinearCalibration().transform(y)
    with pytest.raises(NotFittedError):
        TweedieCorrection().density_score(y)


def test_sklearn_conventions():
    est = TweedieCorrection(sigma_source="validation_residuals", step=None, bandwidth=0.3)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert not hasattr(cloned, "sigma_")
    lcc = LinearCalibration(warn_slope_below=0.1)
    y = np.linspace(-1, 1, 150)
    assert lcc.fit(0.5 * y + 0.01 * np.sin(40 * y), y) is lcc
    json.dumps(lcc.diagnostics())


def test_debias_module_does_not_import_torch():
    code = "import sys, eocausal.debias; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
