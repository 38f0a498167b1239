"""Effects on a corrected outcome: estimates and standard errors against known truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from eocausal.debias import (
    LinearCalibration,
    TweedieCorrection,
    correction_bootstrap,
    debias_outcome,
    debiased_aipw_ate,
    debiased_ate,
)
from eocausal.errors import (
    CalibrationWarning,
    ConfigError,
    EstimationError,
    InputDataError,
    OverlapWarning,
)
from eocausal.estimate import hajek_weights

from .dgp import TAU, rct, shrink


def _logistic(x, w):
    x = x.reshape(len(w), -1)
    return LogisticRegression(C=np.inf).fit(x, w).predict_proba(x)[:, 1]


# --------------------------------------------------------------------------- known shrinkage


def test_linear_correction_recovers_ate(linear_shrink):
    w, _, yh, yc, yhc = linear_shrink
    lcc = LinearCalibration().fit(yhc, yc)
    res = debiased_ate(
        yh, w, calibration_predicted=yhc, calibration_truth=yc, propensity=0.5,
        method="linear", n_bootstrap=100, seed=1,
    )  # fmt: skip
    # naive is attenuated by k: far from tau, close to 0.62 tau
    assert abs(res.naive - 0.62 * TAU) < 3 * res.naive_se
    assert abs(res.naive - TAU) > 8 * res.naive_se
    assert abs(res.estimate - TAU) < 2 * res.std_err
    assert res.std_err == pytest.approx(np.hypot(res.sampling_se, res.calibration_se))
    assert res.calibration_se > 0 and res.bootstrap_failures == 0
    assert json.loads(json.dumps(res.to_dict()))["diagnostics"]["bootstrap_failures"] == 0
    # effect on the corrected outcome is the naive effect divided by k, exactly
    assert res.estimate == pytest.approx(res.naive / lcc.slope_, rel=1e-12)
    assert "sampling part" in res.se_note and "100 refits of the linear" in res.se_note


def test_linear_calibration_ci_covers_over_replications():
    """Monte Carlo: mean corrected ATE is unbiased and 95 % intervals cover about 95 %."""
    rng = np.random.default_rng(3)
    est, cover = [], []
    for _ in range(40):
        w, y = rct(rng, 1000)
        _, yc = rct(rng, 300)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)  # beyond the n=300 support
            r = debiased_ate(
                shrink(rng, y, 0.62, 0.5), w, calibration_predicted=shrink(rng, yc, 0.62, 0.5),
                calibration_truth=yc, randomized=True, method="linear", n_bootstrap=60,
                seed=int(rng.integers(1 << 31)),
            )  # fmt: skip
        est.append(r.estimate)
        cover.append(r.ci_lower <= TAU <= r.ci_upper)
    est = np.asarray(est)
    assert abs(est.mean() - TAU) < 3 * est.std(ddof=1) / np.sqrt(est.size)
    assert np.mean(cover) >= 0.85


def test_tweedie_exact_for_gaussian_posterior_means():
    """Y ~ N(mu, s^2), Yhat = E[Y | Y + N(0, v)]: Tweedie inverts the shrink, and equals LCC."""
    rng = np.random.default_rng(7)
    w, y = rct(rng, 3000)
    _, yc = rct(rng, 800)
    mu, s2, v = 0.5 * TAU, 1.0 + 0.25 * TAU**2, 1.0  # pooled mean and variance of Y
    k = s2 / (s2 + v)
    yh = mu + k * (y + rng.normal(0, np.sqrt(v), y.size) - mu)
    yhc = mu + k * (yc + rng.normal(0, np.sqrt(v), yc.size) - mu)
    tw = TweedieCorrection(step=None).fit(yhc, yc)
    assert tw.sigma_ == pytest.approx(np.sqrt(s2 * (1 - k)), rel=0.06)
    res = debiased_ate(
        yh, w, calibration_predicted=yhc, calibration_truth=yc, randomized=True,
        method="tweedie", tweedie=TweedieCorrection(step=None), n_bootstrap=100, seed=2,
    )  # fmt: skip
    assert abs(res.estimate - TAU) < 2 * res.std_err
    assert abs(res.naive - k * TAU) < 3 * res.naive_se
    # in the Gaussian case Tweedie and linear calibration coincide (up to KDE smoothing)
    lcc = LinearCalibration().fit(yhc, yc).transform(yh)
    assert np.corrcoef(lcc, tw.transform(yh))[0, 1] > 0.995


def test_tweedie_recovers_nonlinear_shrink_where_linear_fails(bimodal_posterior):
    w, _, yh, yc, yhc = bimodal_posterior
    kw = {"calibration_predicted": yhc, "calibration_truth": yc, "n_bootstrap": 100, "seed": 4}
    tw = debiased_ate(yh, w, method="tweedie", randomized=True, **kw)
    lin = debiased_ate(yh, w, method="linear", randomized=True, **kw)
    assert abs(tw.naive - TAU) > 4 * tw.naive_se
    assert abs(tw.estimate - TAU) < 2 * tw.std_err
    assert abs(lin.estimate - TAU) > 2 * lin.std_err  # the map's shrink is not linear


# --------------------------------------------------------------------------- audit defects


def _observational(rng, n=2000, m=500):
    """C ~ N(0,1), e = logistic(1.5 C), Y = W + 2C + N(0,1); Yhat = 0.3 + 0.6 Y + N(0, 0.5^2)."""
    c = rng.normal(size=n)
    w = rng.binomial(1, 1 / (1 + np.exp(-1.5 * c)))
    y = TAU * w + 2 * c + rng.normal(size=n)
    cc = rng.normal(size=m)
    yc = TAU * rng.binomial(1, 1 / (1 + np.exp(-1.5 * cc))) + 2 * cc + rng.normal(size=m)
    return c, w, shrink(rng, y, 0.6, 0.5), yc, shrink(rng, yc, 0.6, 0.5)


def test_observational_needs_the_propensity():
    """(a) Audit: the treated share gave 3.27 for an effect of 1; the estimated propensity recovers 1."""
    c, w, yh, yc, yhc = _observational(np.random.default_rng(0))
    kw = {"calibration_predicted": yhc, "calibration_truth": yc, "method": "linear",
          "n_bootstrap": 100}  # fmt: skip
    with pytest.warns(OverlapWarning):
        res = debiased_ate(yh, w, propensity=_logistic(c, w), propensity_features=c, **kw)
    assert abs(res.estimate - TAU) < 2 * res.std_err, (res.estimate, res.std_err)
    assert res.propensity_source == "given, estimated from propensity_features"
    unadjusted = debiased_ate(yh, w, randomized=True, **kw)
    assert unadjusted.estimate - TAU > 10 * unadjusted.std_err  # confounded: about 3


def test_propensity_none_is_an_error_unless_randomized():
    """(d) No silent fallback to the treated share."""
    rng = np.random.default_rng(1)
    w, y = rct(rng, 300)
    kw = {"calibration_predicted": y, "calibration_truth": y, "method": "none"}
    with pytest.raises(InputDataError, match="pass the known assignment probability.*randomized=True"):
        debiased_ate(y, w, **kw)
    with pytest.raises(ConfigError, match="`randomized` must be True or False"):
        debiased_ate(y, w, randomized="yes", **kw)
    res = debiased_ate(y, w, randomized=True, **kw)
    assert res.estimate == pytest.approx(y[w == 1].mean() - y[w == 0].mean())
    assert res.calibration_se == 0 and res.n_bootstrap == 0
    assert res.propensity_source == "treated share (randomized)"


def _cluster_trial(rng, reps, n_clusters=60, size=40):
    """(reps, n) cluster-randomised trials: Y = W + u_c + N(0,1), u_c ~ N(0,1), half the clusters treated."""
    w_c = np.argsort(rng.random((reps, n_clusters)), axis=1) < n_clusters // 2
    cl = np.repeat(np.arange(n_clusters), size)
    u = rng.normal(size=(reps, n_clusters))
    y = TAU * w_c[:, cl] + u[:, cl] + rng.normal(size=(reps, cl.size))
    return w_c[:, cl].astype(np.int64), y, cl


def test_clustered_se_matches_monte_carlo_sd():
    """(b) Audit: MC sd 0.271 but a unit-level SE of 0.063; the cluster-summed SE is right."""
    rng = np.random.default_rng(2)
    reps, m = 2000, 500
    w, y, cl = _cluster_trial(rng, reps)
    yh = shrink(rng, y, 0.6, 0.5)
    yc = rng.normal(0.5, 1.5, (reps, m))
    yhc = shrink(rng, yc, 0.6, 0.5)
    # Monte Carlo of the corrected estimate, vectorised: difference in means / fitted slope
    k_hat = np.sum((yc - yc.mean(1, keepdims=True)) * yhc, axis=1) / np.sum(
        (yc - yc.mean(1, keepdims=True)) ** 2, axis=1
    )
    naive = (yh * w).sum(1) / w.sum(1) - (yh * (1 - w)).sum(1) / (1 - w).sum(1)
    mc_sd = np.std(naive / k_hat, ddof=1)
    assert abs(np.mean(naive / k_hat) - TAU) < 4 * mc_sd / np.sqrt(reps)
    reported, unit_level = [], []
    for r in range(25):
        kw = {"calibration_predicted": yhc[r], "calibration_truth": yc[r], "method": "linear",
              "randomized": True, "n_bootstrap": 50, "seed": r}  # fmt: skip
        reported.append(debiased_ate(yh[r], w[r], clusters=cl, **kw).std_err)
        unit_level.append(debiased_ate(yh[r], w[r], **kw).std_err)
    assert np.mean(reported) == pytest.approx(mc_sd, rel=0.2), (np.mean(reported), mc_sd)
    assert np.mean(unit_level) < 0.4 * mc_sd  # the defect this replaces


def _aipw_problem(rng, n=4000, m=120):
    x = rng.normal(size=n)
    w = rng.binomial(1, 1 / (1 + np.exp(-0.5 * x)))
    y = TAU * w + x + rng.normal(size=n)
    yc = TAU * rng.binomial(1, 0.5, m) + rng.normal(size=m) * np.sqrt(2)
    return x, w, shrink(rng, y, 0.4, 0.6), yc, shrink(rng, yc, 0.4, 0.6)


def _crossfit_arms(x, w, y, rng):
    folds = rng.permutation(np.arange(x.size) % 2)
    z = np.column_stack([np.ones_like(x), x])
    mu = np.empty((2, x.size))
    for k in (0, 1):
        for arm in (0, 1):
            rows = (folds != k) & (w == arm)
            mu[arm, folds == k] = z[folds == k] @ np.linalg.lstsq(z[rows], y[rows], rcond=None)[0]
    return mu[0], mu[1]


def test_aipw_se_includes_the_correction():
    """(c) 120 calibration pairs, k = 0.4: the calibration part dominates, and the total matches MC."""
    rng = np.random.default_rng(3)
    estimates, reported, sampling = [], [], []
    for r in range(300):
        x, w, yh, yc, yhc = _aipw_problem(rng)
        e_true = 1 / (1 + np.exp(-0.5 * x))
        cal = {"calibration_predicted": yhc, "calibration_truth": yc, "method": "linear"}
        corrected = debias_outcome(yh, **cal).corrected
        mu0, mu1 = _crossfit_arms(x, w, corrected, rng)
        nuis = {"outcome_hat": e_true * mu1 + (1 - e_true) * mu0, "effect": mu1 - mu0}
        if r < 30:
            res = debiased_aipw_ate(yh, w, e_true, n_bootstrap=60, seed=r, **nuis, **cal)
            reported.append(res.std_err)
            sampling.append(res.sampling_se)
            estimates.append(res.estimate)
        else:
            gamma = (mu1 - mu0 + w * (corrected - mu1) / e_true
                     - (1 - w) * (corrected - mu0) / (1 - e_true))  # fmt: skip
            estimates.append(gamma.mean())
    mc_sd = np.std(estimates, ddof=1)
    assert abs(np.mean(estimates) - TAU) < 4 * mc_sd / np.sqrt(len(estimates))
    assert np.mean(reported) == pytest.approx(mc_sd, rel=0.2), (np.mean(reported), mc_sd)
    assert np.mean(sampling) < 0.7 * mc_sd  # the sampling part alone is far too small


# --------------------------------------------------------------------------- weights


def test_integer_weights_equal_duplicated_rows_and_scale_does_not_matter():
    """(e) With clusters (duplicates stay in their cluster) and an estimated propensity."""
    rng = np.random.default_rng(4)
    c, w, yh, yc, yhc = _observational(rng, n=300, m=200)
    e = _logistic(c, w)
    cl = np.arange(300) // 3
    wt = rng.integers(1, 4, 300)
    rows = np.repeat(np.arange(300), wt)
    kw = {"calibration_predicted": yhc, "calibration_truth": yc, "method": "linear",
          "n_bootstrap": 50, "seed": 0}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        a = debiased_ate(yh, w, propensity=e, propensity_features=c, clusters=cl,
                         sample_weight=wt, **kw)  # fmt: skip
        b = debiased_ate(yh[rows], w[rows], propensity=e[rows], propensity_features=c[rows],
                         clusters=cl[rows], **kw)  # fmt: skip
        s = debiased_ate(yh, w, propensity=e, propensity_features=c, clusters=cl,
                         sample_weight=wt * 0.37, **kw)  # fmt: skip
    for other in (b, s):
        for f in ("estimate", "naive", "sampling_se", "naive_se", "calibration_se", "std_err"):
            assert getattr(other, f) == pytest.approx(getattr(a, f), rel=1e-9), f
    unweighted = debiased_ate(yh, w, propensity=e, clusters=cl, **kw)
    assert unweighted.estimate != pytest.approx(a.estimate, rel=1e-3)


# --------------------------------------------------------------------------- calibration bootstrap


def test_correction_bootstrap_linear_replicates_are_refitted_slopes():
    rng = np.random.default_rng(5)
    w, y = rct(rng, 500)
    _, yc = rct(rng, 150)
    yh, yhc = shrink(rng, y, 0.5, 0.4), shrink(rng, yc, 0.5, 0.4)
    v = hajek_weights(w, 0.5)
    boot = correction_bootstrap(
        lambda t: np.array([v @ t, t.mean()]), yh, calibration_predicted=yhc,
        calibration_truth=yc, method="linear", n_bootstrap=80, seed=3,
    )  # fmt: skip
    assert boot.replicates.shape == (80, 2) and boot.std_err.shape == (2,)
    # brute force: the same draws, slope refitted by hand; the effect is (v @ yh) / k_b
    draw = np.random.default_rng(3)
    for b in range(5):
        idx = draw.integers(0, 150, 150)
        k_b = np.polyfit(yc[idx], yhc[idx], 1)[0]
        assert boot.replicates[b, 0] == pytest.approx((v @ yh) / k_b, rel=1e-9)
    assert boot.combine([0.3, 0.0]) == pytest.approx(np.hypot([0.3, 0.0], boot.std_err))
    again = correction_bootstrap(
        lambda t: np.array([v @ t, t.mean()]), yh, calibration_predicted=yhc,
        calibration_truth=yc, method="linear", n_bootstrap=80, seed=3,
    )  # fmt: skip
    np.testing.assert_array_equal(boot.replicates, again.replicates)
    json.dumps(boot.to_dict())


def test_correction_bootstrap_errors():
    rng = np.random.default_rng(6)
    y = rng.normal(size=60)
    # prediction = b y + noise orthogonal to [1, y], with b exactly 2.5 SEs: the full set fits,
    # but a third of the resamples have a slope within 2 SEs of zero
    noise = rng.normal(size=60)
    design = np.column_stack([np.ones(60), y])
    noise -= design @ np.linalg.lstsq(design, noise, rcond=None)[0]
    b = 2.5 * np.sqrt(noise @ noise / 58 / np.sum((y - y.mean()) ** 2))
    weak = b * y + noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        assert LinearCalibration(zero_slope_tol=0).fit(weak, y).slope_ == pytest.approx(b)
        with pytest.raises(EstimationError, match="could not be refitted on"):
            correction_bootstrap(np.mean, weak, calibration_predicted=weak, calibration_truth=y,
                                 method="linear", linear=LinearCalibration(zero_slope_tol=0),
                                 n_bootstrap=100)  # fmt: skip
    with pytest.raises(ConfigError, match="pass its chosen `method`"):
        correction_bootstrap(np.mean, y, calibration_predicted=y, calibration_truth=y, method="auto")
    with pytest.raises(InputDataError, match="same shape every time"):
        sizes = iter(range(1, 1000))
        correction_bootstrap(lambda t: np.ones(next(sizes)), y, calibration_predicted=0.5 * y + 0.1 * weak,
                             calibration_truth=y, method="linear", n_bootstrap=5)  # fmt: skip


def test_calibration_clusters_carry_a_block_level_error_into_the_se():
    """Pairs of one spatial block share a regional distortion of the map (slope and shift), so the
    slope's error is clustered: the block bootstrap's SE matches the Monte Carlo SD of the corrected
    estimate, the pair bootstrap's falls short."""
    from eocausal.debias import correction_bootstrap

    rng = np.random.default_rng(11)
    study = rng.normal(1.0, 1.0, 400)  # fixed study predictions; the statistic is their corrected mean

    def draw():
        groups = np.repeat(np.arange(12), 30)
        slope = 0.5 + rng.normal(0.0, 0.12, 12)[groups]
        truth = rng.normal(0.0, 1.0, groups.size)
        pred = 0.2 + slope * truth + rng.normal(0.0, 0.15, 12)[groups] + rng.normal(0.0, 0.3, groups.size)
        return pred, truth, groups

    estimates, se_pairs, se_blocks = [], [], []
    for _ in range(120):
        pred, truth, groups = draw()
        kw = {"calibration_predicted": pred, "calibration_truth": truth, "method": "linear",
              "n_bootstrap": 60, "seed": 0}
        blocks = correction_bootstrap(np.mean, study, calibration_clusters=groups, **kw)
        pairs = correction_bootstrap(np.mean, study, **kw)
        estimates.append(blocks.estimate[0])
        se_blocks.append(blocks.std_err[0])
        se_pairs.append(pairs.std_err[0])
    mc_sd = np.std(estimates)
    assert np.mean(se_blocks) == pytest.approx(mc_sd, rel=0.25)
    assert np.mean(se_pairs) < 0.7 * mc_sd
    with pytest.raises(InputDataError, match="single group"):
        correction_bootstrap(np.mean, study, calibration_clusters=np.zeros(360), **kw)
