"""Tests for eocausal.debias: known shrinkage, exact formulas, warnings, errors (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.base import clone

from eocausal import debias
from eocausal.debias import (
    LinearCalibration,
    TweedieCorrection,
    debias_outcome,
    debiased_ate,
    ppi_ate,
    select_correction,
)
from eocausal.errors import (
    CalibrationWarning,
    ConfigError,
    EstimationError,
    InputDataError,
    NotFittedError,
)

TAU = 1.0


def _rct(rng, n, *, kind="gauss", tau=TAU):
    """Randomised trial: W ~ Bernoulli(0.5), Y = tau W + C with C Gaussian or bimodal."""
    w = (rng.random(n) < 0.5).astype(np.int64)
    if kind == "gauss":
        c = rng.standard_normal(n)
    else:
        c = np.where(rng.random(n) < 0.5, -2.0, 2.0) + 0.5 * rng.standard_normal(n)
    return w, tau * w + c


def _posterior_mean(z, prior_sample, noise_sd):
    """E[Y | Z = z] for Z = Y + N(0, noise_sd^2), Y distributed as `prior_sample` (brute force)."""
    u = -0.5 * ((z[:, None] - prior_sample[None, :]) / noise_sd) ** 2
    u -= u.max(axis=1, keepdims=True)
    k = np.exp(u)
    return (k * prior_sample).sum(axis=1) / k.sum(axis=1)


@pytest.fixture(scope="module")
def linear_shrink():
    """Predictions Yhat = 0.3 + 0.62 Y + N(0, 0.5^2) in study and calibration sets."""
    rng = np.random.default_rng(11)
    w, y = _rct(rng, 3000)
    _, yc = _rct(rng, 800)
    yh = 0.3 + 0.62 * y + rng.normal(0, 0.5, y.size)
    yhc = 0.3 + 0.62 * yc + rng.normal(0, 0.5, yc.size)
    return w, y, yh, yc, yhc


@pytest.fixture(scope="module")
def bimodal_posterior():
    """Predictions are exact posterior means E[Y | Y + noise] under a bimodal population: nonlinear shrink."""
    rng = np.random.default_rng(5)
    _, prior = _rct(rng, 6000, kind="bimodal")
    w, y = _rct(rng, 3000, kind="bimodal")
    _, yc = _rct(rng, 800, kind="bimodal")
    yh = _posterior_mean(y + rng.standard_normal(y.size), prior, 1.0)
    yhc = _posterior_mean(yc + rng.standard_normal(yc.size), prior, 1.0)
    return w, y, yh, yc, yhc


# --------------------------------------------------------------------------- known shrinkage


def test_linear_calibration_recovers_k_and_ate(linear_shrink):
    w, _, yh, yc, yhc = linear_shrink
    lcc = LinearCalibration().fit(yhc, yc)
    assert abs(lcc.slope_ - 0.62) < 3 * lcc.slope_se_
    assert abs(lcc.intercept_ - 0.3) < 3 * lcc.intercept_se_
    res = debiased_ate(
        yh,
        w,
        calibration_predicted=yhc,
        calibration_truth=yc,
        method="linear",
        n_bootstrap=100,
        seed=1,
    )
    # naive is attenuated by k: far from tau, close to 0.62 tau
    assert abs(res.naive - 0.62 * TAU) < 3 * res.naive_se
    assert abs(res.naive - TAU) > 8 * res.naive_se
    # corrected recovers the truth within its standard error (2 SE: a 95 % check)
    assert abs(res.corrected - TAU) < 2 * res.corrected_se
    assert res.calibration_se > 0 and res.corrected_se > res.sampling_se
    assert json.loads(json.dumps(res.to_dict()))["diagnostics"]["bootstrap_failures"] == 0
    # effect on the corrected outcome is the naive effect divided by k, exactly
    assert res.corrected == pytest.approx(res.naive / lcc.slope_, rel=1e-12)


def test_linear_calibration_ci_covers_over_replications():
    """Monte Carlo: mean corrected ATE is unbiased and 95 % intervals cover about 95 %."""
    rng = np.random.default_rng(3)
    est, cover = [], []
    for _ in range(40):
        w, y = _rct(rng, 1000)
        _, yc = _rct(rng, 300)
        yh = 0.3 + 0.62 * y + rng.normal(0, 0.5, y.size)
        yhc = 0.3 + 0.62 * yc + rng.normal(0, 0.5, yc.size)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", CalibrationWarning
            )  # a few predictions beyond n=300 support
            r = debiased_ate(
                yh,
                w,
                calibration_predicted=yhc,
                calibration_truth=yc,
                method="linear",
                n_bootstrap=60,
                seed=int(rng.integers(1 << 31)),
            )
        est.append(r.corrected)
        cover.append(r.ci_lower <= TAU <= r.ci_upper)
    est = np.asarray(est)
    assert abs(est.mean() - TAU) < 3 * est.std(ddof=1) / np.sqrt(est.size)
    assert np.mean(cover) >= 0.85


def test_tweedie_exact_for_gaussian_posterior_means():
    """Y ~ N(mu, s^2), Yhat = E[Y | Y + N(0, v)]: Tweedie inverts the shrink, and equals LCC."""
    rng = np.random.default_rng(7)
    w, y = _rct(rng, 3000)
    _, yc = _rct(rng, 800)
    mu, s2, v = 0.5 * TAU, 1.0 + 0.25 * TAU**2, 1.0  # pooled mean and variance of Y
    k = s2 / (s2 + v)
    yh = mu + k * (y + rng.normal(0, np.sqrt(v), y.size) - mu)
    yhc = mu + k * (yc + rng.normal(0, np.sqrt(v), yc.size) - mu)
    tw = TweedieCorrection(step=None).fit(yhc, yc)
    assert tw.sigma_ == pytest.approx(np.sqrt(s2 * (1 - k)), rel=0.06)
    res = debiased_ate(
        yh,
        w,
        calibration_predicted=yhc,
        calibration_truth=yc,
        method="tweedie",
        tweedie=TweedieCorrection(step=None),
        n_bootstrap=100,
        seed=2,
    )
    assert abs(res.corrected - TAU) < 2 * res.corrected_se
    assert abs(res.naive - k * TAU) < 3 * res.naive_se
    # in the Gaussian case Tweedie and linear calibration coincide (up to KDE smoothing)
    lcc = LinearCalibration().fit(yhc, yc).transform(yh)
    assert np.corrcoef(lcc, tw.transform(yh))[0, 1] > 0.995


def test_tweedie_recovers_nonlinear_shrink_where_linear_fails(bimodal_posterior):
    w, _, yh, yc, yhc = bimodal_posterior
    kw = {"calibration_predicted": yhc, "calibration_truth": yc, "n_bootstrap": 100, "seed": 4}
    tw = debiased_ate(yh, w, method="tweedie", **kw)
    lin = debiased_ate(yh, w, method="linear", **kw)
    assert abs(tw.naive - TAU) > 4 * tw.naive_se
    assert abs(tw.corrected - TAU) < 2 * tw.corrected_se
    assert abs(lin.corrected - TAU) > 2 * lin.corrected_se  # the map's shrink is not linear
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


# --------------------------------------------------------------------------- exact formulas


def test_kde_score_matches_scipy_and_difference_matches_analytic():
    rng = np.random.default_rng(0)
    sample = rng.standard_normal(400) * 2 + 1
    x = np.linspace(-4, 6, 57)
    kde = stats.gaussian_kde(sample)
    h = np.sqrt(kde.covariance[0, 0])
    d = 1e-4
    brute = (kde.logpdf(x + d) - kde.logpdf(x - d)) / (2 * d)
    analytic = debias._kde_score(x, sample, h, None)
    central = debias._kde_score(x, sample, h, 1e-3)
    np.testing.assert_allclose(analytic, brute, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(central, analytic, rtol=1e-6, atol=1e-7)


def test_kde_grid_path_matches_exact(monkeypatch):
    rng = np.random.default_rng(1)
    pred = rng.standard_normal(3000)
    exact = debias._kde_score(pred, pred, 0.2, None)
    monkeypatch.setattr(debias, "_EXACT_KDE_LIMIT", 10.0)
    grid = debias._kde_score(pred, pred, 0.2, None)
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


def test_ppi_matches_published_formulas_and_recovers_ate(linear_shrink):
    w, y, yh, _, _ = linear_shrink
    rng = np.random.default_rng(9)
    truth = np.full(y.size, np.nan)
    lab = rng.choice(y.size, 300, replace=False)
    truth[lab] = y[lab]
    e = np.full(y.size, 0.5)
    a = w / e - (1 - w) / (1 - e)
    mask = np.isfinite(truth)
    z, zh, zu = a[mask] * y[mask], a[mask] * yh[mask], a[~mask] * yh[~mask]

    r0 = ppi_ate(yh, w, truth, propensity=0.5, lam=0.0)
    assert r0.estimate == pytest.approx(z.mean()) == pytest.approx(r0.classical)
    r1 = ppi_ate(yh, w, truth, propensity=0.5, lam=1.0)
    assert r1.estimate == pytest.approx(zu.mean() + (z - zh).mean())
    r = ppi_ate(yh, w, truth, propensity=0.5)
    lam = np.cov(z, zh)[0, 1] / ((1 + z.size / zu.size) * np.var(np.concatenate([zh, zu]), ddof=1))
    assert r.lam == pytest.approx(np.clip(lam, 0, 1))
    assert r.estimate == pytest.approx(r.lam * zu.mean() + (z - r.lam * zh).mean())
    assert abs(r.estimate - TAU) < 2 * r.se
    assert r.se < r.classical_se  # predictions help
    assert r.n_labeled == 300 and r.n_unlabeled == y.size - 300
    json.dumps(r.to_dict())


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


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    y = np.linspace(0, 1, 200)
    with pytest.raises(InputDataError, match="got 200 and 199"):
        LinearCalibration().fit(y, y[:-1])
    bad = y.copy()
    bad[[3, 17]] = np.nan
    with pytest.raises(InputDataError, match=r"2 non-finite value\(s\) at positions \[3, 17\]"):
        TweedieCorrection().fit(bad, y)
    with pytest.raises(InputDataError, match="constant"):
        LinearCalibration().fit(y, np.ones(200))
    with pytest.raises(InputDataError, match="one-dimensional"):
        LinearCalibration().fit(np.ones((20, 10)), y)
    w = np.tile([0, 1], 100)
    with pytest.raises(InputDataError, match="binary 0/1; positions \\[0\\]"):
        debiased_ate(
            y, np.r_[2, w[1:]], calibration_predicted=y, calibration_truth=y, method="none"
        )
    with pytest.raises(InputDataError, match="strictly inside"):
        debiased_ate(
            y,
            w,
            propensity=np.r_[0.0, np.full(199, 0.5)],
            calibration_predicted=y,
            calibration_truth=y,
            method="none",
        )
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
    truth = np.full(200, np.nan)
    truth[:5] = 1.0
    with pytest.raises(InputDataError, match="at least 10 labelled"):
        ppi_ate(y, w, truth)


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
