"""Corrections of a predicted outcome fitted on a labelled calibration set.

- :class:`LinearCalibration`: regress the prediction on the truth,
  :math:`\\hat Y = m + kY`, and invert, :math:`\\tilde Y = (\\hat Y - m)/k`.
- :class:`TweedieCorrection`: :math:`\\tilde Y = \\hat Y - \\sigma^2\\,
  \\frac{d}{d\\hat y}\\log \\hat p(\\hat Y)` with :math:`\\sigma` the SD of the
  prediction error and :math:`\\hat p` a Gaussian KDE of predictions.
- :func:`make_correction` / :func:`fit_correction`: build a correction by name
  ("none", "linear", "tweedie") from optional prototypes, and fit it.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special, stats
from sklearn.base import BaseEstimator, clone

from eocausal.debias._checks import (
    check_common_params,
    check_pair,
    warn_small,
    warn_support,
)
from eocausal.errors import CalibrationWarning, ConfigError, EstimationError, InputDataError
from eocausal.validation import check_is_fitted, check_outcome

__all__ = [
    "METHODS",
    "LinearCalibration",
    "TweedieCorrection",
    "fit_correction",
    "make_correction",
]

#: Correction names accepted by :func:`~eocausal.debias.debias_outcome` and
#: :func:`~eocausal.debias.select_correction`.
METHODS = ("none", "linear", "tweedie")

# Above this many (query x sample) kernel evaluations the KDE score is computed
# on a grid and interpolated instead of at every prediction.
_EXACT_KDE_LIMIT = 2e7
_KDE_GRID_POINTS = 4096


# --------------------------------------------------------------------------- linear calibration


class LinearCalibration(BaseEstimator):
    """Linear calibration correction (LCC) of predicted outcomes.

    Fits :math:`\\hat Y = m + k Y + \\varepsilon` by OLS on a labelled
    calibration set and inverts it on the study units.

    Parameters
    ----------
    zero_slope_tol : float, default=0.02
        Raise :class:`~eocausal.errors.EstimationError` when
        :math:`|k|` is below this value or below two standard errors (the
        prediction carries no usable signal about the truth).
    warn_slope_below : float, default=0.2
        Emit a :class:`~eocausal.errors.CalibrationWarning` when :math:`k`
        is below this value (the inversion multiplies noise by :math:`1/k`).
    min_calibration_size : int, default=100
        Warn when the calibration set is smaller.
    max_outside_fraction : float, default=0.01
        Warn in ``transform`` when more than this fraction of the predictions
        lies outside the range of the calibration predictions. (For a
        calibration set of size n drawn from the study population about
        2/(n+1) fall outside by chance.)

    Attributes
    ----------
    intercept_ : float
        :math:`m`.
    slope_ : float
        :math:`k` (the shrinkage factor; 1 means no attenuation).
    intercept_se_, slope_se_ : float
        OLS standard errors of :math:`m` and :math:`k`.
    residual_sd_ : float
        SD of :math:`\\hat Y - m - kY` on the calibration set.
    n_calibration_ : int
    support_ : tuple of float
        (min, max) of the calibration predictions.

    Notes
    -----
    .. math::

        \\tilde Y_i = (\\hat Y_i - m) / k,

    so an effect estimated on :math:`\\tilde Y` equals the naive effect
    divided by :math:`k`. Valid when :math:`E[\\hat Y \\mid Y, W] = m + kY`:
    the prediction error does not depend on treatment given the outcome, and
    the calibration set shares the study population's measurement model.

    References
    ----------
    Pettersson, Jerzak, Daoud (2026), "One Map, Many Trials", AAAI.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.linspace(-2, 2, 200)
    >>> lcc = LinearCalibration().fit(0.5 + 0.6 * y, y)
    >>> round(lcc.slope_, 3), round(float(lcc.transform([1.1])[0]), 3)
    (0.6, 1.0)
    """

    def __init__(
        self,
        *,
        zero_slope_tol=0.02,
        warn_slope_below=0.2,
        min_calibration_size=100,
        max_outside_fraction=0.01,
    ):
        self.zero_slope_tol = zero_slope_tol
        self.warn_slope_below = warn_slope_below
        self.min_calibration_size = min_calibration_size
        self.max_outside_fraction = max_outside_fraction

    def fit(self, predicted, truth) -> LinearCalibration:
        """Fit :math:`\\hat Y = m + kY` on the calibration set.

        Parameters
        ----------
        predicted : array-like of shape (n_calibration,)
            Model predictions for the labelled calibration units.
        truth : array-like of shape (n_calibration,)
            Their measured outcomes.

        Returns
        -------
        self : LinearCalibration
        """
        check_common_params(self)
        if not (isinstance(self.zero_slope_tol, (int, float)) and self.zero_slope_tol >= 0):
            raise ConfigError(
                f"The 'zero_slope_tol' parameter of LinearCalibration must be a float >= 0. "
                f"Got {self.zero_slope_tol!r} instead."
            )
        pred, tru = check_pair(predicted, truth, "predicted", "truth")
        n = pred.size
        warn_small(n, self.min_calibration_size, "LinearCalibration")
        design = np.column_stack([np.ones(n), tru])
        coef, *_ = np.linalg.lstsq(design, pred, rcond=None)
        resid = pred - design @ coef
        s2 = float(resid @ resid) / (n - 2)
        cov = s2 * np.linalg.inv(design.T @ design)
        m, k = float(coef[0]), float(coef[1])
        k_se = float(np.sqrt(cov[1, 1]))
        if abs(k) < self.zero_slope_tol or abs(k) < 2 * k_se:
            raise EstimationError(
                f"LinearCalibration: the slope of the predictions on the truth is k = {k:.4g} "
                f"(SE {k_se:.3g}), indistinguishable from zero, so the map cannot be inverted. The "
                "predictions carry no usable signal about the outcome on this calibration set; check "
                "that predictions and truths are aligned unit by unit, or use ppi_ate() with fresh labels."
            )
        if k < self.warn_slope_below:
            warnings.warn(
                f"LinearCalibration: slope k = {k:.3f} is below {self.warn_slope_below}; the correction "
                f"multiplies effects and noise by 1/k = {1 / k:.2f}. Expect wide intervals.",
                CalibrationWarning,
                stacklevel=2,
            )
        self.intercept_, self.slope_ = m, k
        self.intercept_se_, self.slope_se_ = float(np.sqrt(cov[0, 0])), k_se
        self.residual_sd_ = float(np.sqrt(s2))
        self.n_calibration_ = n
        self.support_ = (float(pred.min()), float(pred.max()))
        return self

    def transform(self, predicted) -> np.ndarray:
        """Return the corrected outcomes :math:`(\\hat Y - m)/k`, shape (n,)."""
        check_is_fitted(self, "slope_")
        pred = check_outcome(predicted, name="predicted")
        warn_support(pred, self.support_, self.max_outside_fraction, "LinearCalibration")
        return (pred - self.intercept_) / self.slope_

    def diagnostics(self) -> dict:
        """JSON-serialisable summary of the fitted calibration."""
        check_is_fitted(self, "slope_")
        return {
            "intercept": self.intercept_,
            "slope": self.slope_,
            "intercept_se": self.intercept_se_,
            "slope_se": self.slope_se_,
            "residual_sd": self.residual_sd_,
            "n_calibration": self.n_calibration_,
            "support": list(self.support_),
        }


# --------------------------------------------------------------------------- Tweedie


def _kde_bandwidth(sample: np.ndarray, bandwidth) -> float:
    """Gaussian KDE bandwidth (SD of the kernel) chosen like scipy.stats.gaussian_kde."""
    if np.ptp(sample) == 0:
        raise EstimationError(
            "TweedieCorrection: all predictions used for the density are equal; a KDE needs spread."
        )
    kde = stats.gaussian_kde(sample, bw_method=bandwidth)
    return float(np.sqrt(kde.covariance[0, 0]))


def _kde_score_exact(
    points: np.ndarray, sample: np.ndarray, h: float, step: float | None
) -> np.ndarray:
    """d/dx log p(x) of a Gaussian KDE, analytically (step None) or by central difference."""
    out = np.empty(points.size)
    chunk = max(1, int(2e7 // max(sample.size, 1)))
    for start in range(0, points.size, chunk):
        x = points[start : start + chunk, None]
        if step is None:
            u = (sample[None, :] - x) / h
            a = -0.5 * u * u
            a -= a.max(axis=1, keepdims=True)
            k = np.exp(a)
            out[start : start + chunk] = (k * u).sum(axis=1) / (h * k.sum(axis=1))
        else:
            d = step * h

            def logp(z):
                u = (sample[None, :] - z) / h
                return special.logsumexp(-0.5 * u * u, axis=1)

            out[start : start + chunk] = (logp(x + d) - logp(x - d)) / (2 * d)
    return out


def _kde_score(points: np.ndarray, sample: np.ndarray, h: float, step: float | None) -> np.ndarray:
    if points.size * sample.size <= _EXACT_KDE_LIMIT:
        return _kde_score_exact(points, sample, h, step)
    grid = np.linspace(points.min() - h, points.max() + h, _KDE_GRID_POINTS)
    return np.interp(points, grid, _kde_score_exact(grid, sample, h, step))


class TweedieCorrection(BaseEstimator):
    """Tweedie correction of predicted outcomes.

    Parameters
    ----------
    sigma_source : {"calibration", "validation_residuals"}, default="calibration"
        Which labelled data give :math:`\\sigma`: the SD of
        ``predicted - truth`` on the calibration set passed to ``fit``
        (the authors' package), or the SD of ``residuals`` passed to ``fit``
        (prediction minus truth on the predictor's own held-out validation
        split; the authors' simulation notebook and paper pipeline).
    density_source : {"target_predictions", "calibration_predictions"}, default="target_predictions"
        Which predictions the KDE :math:`\\hat p` is fitted on: the
        predictions being corrected (passed to ``transform``; the authors'
        notebook, and Tweedie's formula proper, which uses the marginal density
        of the values being corrected), or the calibration predictions passed
        to ``fit`` (the authors' package and paper pipeline).
    step : float or None, default=1e-3
        Central-difference step for :math:`\\frac{d}{d\\hat y}\\log\\hat p`,
        as a fraction of the KDE bandwidth (the authors use a small finite
        difference). ``None`` uses the exact derivative of the Gaussian KDE.
    bandwidth : {"scott", "silverman"} or float, default="scott"
        ``bw_method`` of :class:`scipy.stats.gaussian_kde` (a float is the
        factor multiplying the sample SD).
    min_calibration_size : int, default=100
        Warn when the calibration set is smaller.
    max_outside_fraction : float, default=0.01
        Warn in ``transform`` when more than this fraction of predictions lies
        outside the range of the calibration predictions.

    Attributes
    ----------
    sigma_ : float
        :math:`\\sigma`.
    n_calibration_ : int
    n_residuals_ : int
        Number of residuals :math:`\\sigma` was computed from.
    support_ : tuple of float
        (min, max) of the calibration predictions.
    bandwidth_ : float or None
        Kernel SD of the calibration-prediction KDE (``None`` when the density
        comes from the target predictions; it is then chosen per call).
    density_sample_ : ndarray of shape (n_calibration,) or None
        Calibration predictions the KDE is built on, when
        ``density_source="calibration_predictions"``.

    Notes
    -----
    .. math::

        \\tilde Y_i = \\hat Y_i - \\sigma^2 \\, \\frac{d}{d\\hat y}\\log \\hat p(\\hat y)\\Big|_{\\hat y = \\hat Y_i},
        \\qquad \\hat p(y) = \\frac{1}{n h}\\sum_j \\phi\\Big(\\frac{y - \\hat Y_j}{h}\\Big).

    Tweedie's formula gives the posterior mean of a quantity observed with
    Gaussian noise as observation + :math:`\\sigma^2` score; predictions that
    behave like such posterior means are un-shrunk by stepping the other way.
    In the Gaussian case (prior and noise Gaussian) the correction is exact
    and coincides with linear calibration. Effects estimated on
    :math:`\\tilde Y` by IPW equal IPW(:math:`\\hat Y`) minus :math:`\\sigma^2`
    IPW(score).

    The KDE costs O(n_target x n_density); above 2e7 kernel evaluations the
    score is evaluated on a 4,096-point grid and interpolated.

    References
    ----------
    Efron (2011), "Tweedie's formula and selection bias", JASA.
    Pettersson, Jerzak, Daoud (2026), "One Map, Many Trials", AAAI.
    """

    def __init__(
        self,
        *,
        sigma_source="calibration",
        density_source="target_predictions",
        step=1e-3,
        bandwidth="scott",
        min_calibration_size=100,
        max_outside_fraction=0.01,
    ):
        self.sigma_source = sigma_source
        self.density_source = density_source
        self.step = step
        self.bandwidth = bandwidth
        self.min_calibration_size = min_calibration_size
        self.max_outside_fraction = max_outside_fraction

    def _check_params(self) -> None:
        check_common_params(self)
        if self.sigma_source not in ("calibration", "validation_residuals"):
            raise ConfigError(
                "The 'sigma_source' parameter of TweedieCorrection must be one of "
                f"'calibration', 'validation_residuals'. Got {self.sigma_source!r} instead."
            )
        if self.density_source not in ("target_predictions", "calibration_predictions"):
            raise ConfigError(
                "The 'density_source' parameter of TweedieCorrection must be one of "
                f"'target_predictions', 'calibration_predictions'. Got {self.density_source!r} instead."
            )
        if self.step is not None and not (
            isinstance(self.step, (int, float)) and 0 < self.step <= 1
        ):
            raise ConfigError(
                "The 'step' parameter of TweedieCorrection must be a float in (0, 1] (a fraction of "
                f"the KDE bandwidth) or None (exact derivative). Got {self.step!r} instead."
            )
        bw = self.bandwidth
        if not (
            bw in ("scott", "silverman")
            or (isinstance(bw, (int, float)) and not isinstance(bw, bool) and bw > 0)
        ):
            raise ConfigError(
                "The 'bandwidth' parameter of TweedieCorrection must be 'scott', 'silverman' or a "
                f"positive float. Got {bw!r} instead."
            )

    def fit(self, predicted, truth, *, residuals=None) -> TweedieCorrection:
        """Estimate :math:`\\sigma` (and the KDE, if built from calibration predictions).

        Parameters
        ----------
        predicted : array-like of shape (n_calibration,)
            Predictions for the labelled calibration units.
        truth : array-like of shape (n_calibration,)
            Their measured outcomes.
        residuals : array-like of shape (n_residuals,), default=None
            Prediction minus truth on the predictor's held-out validation
            split; required when ``sigma_source="validation_residuals"`` and
            refused otherwise.

        Returns
        -------
        self : TweedieCorrection
        """
        self._check_params()
        pred, tru = check_pair(predicted, truth, "predicted", "truth")
        warn_small(pred.size, self.min_calibration_size, "TweedieCorrection")
        if self.sigma_source == "validation_residuals":
            if residuals is None:
                raise ConfigError(
                    "TweedieCorrection(sigma_source='validation_residuals') needs `residuals` "
                    "(prediction minus truth on the predictor's validation split) in fit(); pass them "
                    "or set sigma_source='calibration'."
                )
            res = check_outcome(residuals, name="residuals")
            if res.size < 3:
                raise InputDataError(f"`residuals` needs at least 3 values; got {res.size}.")
        else:
            if residuals is not None:
                raise ConfigError(
                    "`residuals` were given but sigma_source='calibration' takes sigma from the "
                    "calibration pairs; set sigma_source='validation_residuals' to use them."
                )
            res = pred - tru
        self.sigma_ = float(np.std(res, ddof=1))
        self.n_residuals_ = int(res.size)
        self.n_calibration_ = int(pred.size)
        self.support_ = (float(pred.min()), float(pred.max()))
        if self.density_source == "calibration_predictions":
            self.density_sample_ = pred.copy()
            self.bandwidth_ = _kde_bandwidth(pred, self.bandwidth)
        else:
            self.density_sample_ = None
            self.bandwidth_ = None
        return self

    def density_score(self, predicted) -> np.ndarray:
        """Return :math:`\\frac{d}{d\\hat y}\\log\\hat p(\\hat Y_i)` for each prediction, shape (n,)."""
        check_is_fitted(self, "sigma_")
        pred = check_outcome(predicted, name="predicted")
        if self.density_source == "calibration_predictions":
            sample, h = self.density_sample_, self.bandwidth_
        else:
            if pred.size < 2:
                raise InputDataError(
                    "density_source='target_predictions' fits the KDE on the predictions being "
                    f"corrected and needs at least 2 of them; got {pred.size}. Use "
                    "density_source='calibration_predictions' to correct single units."
                )
            sample, h = pred, _kde_bandwidth(pred, self.bandwidth)
        return _kde_score(pred, sample, h, self.step)

    def transform(self, predicted) -> np.ndarray:
        """Return the corrected outcomes :math:`\\hat Y - \\sigma^2 \\cdot` score, shape (n,)."""
        check_is_fitted(self, "sigma_")
        pred = check_outcome(predicted, name="predicted")
        warn_support(pred, self.support_, self.max_outside_fraction, "TweedieCorrection")
        return pred - self.sigma_**2 * self.density_score(pred)

    def diagnostics(self) -> dict:
        """JSON-serialisable summary of the fitted correction."""
        check_is_fitted(self, "sigma_")
        return {
            "sigma": self.sigma_,
            "sigma_source": self.sigma_source,
            "density_source": self.density_source,
            "step": self.step,
            "bandwidth": self.bandwidth
            if isinstance(self.bandwidth, str)
            else float(self.bandwidth),
            "calibration_kde_bandwidth": self.bandwidth_,
            "n_calibration": self.n_calibration_,
            "n_residuals": self.n_residuals_,
            "support": list(self.support_),
        }


class _Identity(BaseEstimator):
    """The "none" correction: the prediction itself."""

    def fit(self, predicted, truth, **_):
        self.n_calibration_ = int(np.size(predicted))
        return self

    def transform(self, predicted):
        return check_outcome(predicted, name="predicted")

    def diagnostics(self) -> dict:
        return {"n_calibration": self.n_calibration_}


def make_correction(
    method: str, linear: LinearCalibration | None, tweedie: TweedieCorrection | None
) -> BaseEstimator:
    """An unfitted correction named ``method``, cloned from a prototype when one is given."""
    if method == "linear":
        return clone(linear) if linear is not None else LinearCalibration()
    if method == "tweedie":
        return clone(tweedie) if tweedie is not None else TweedieCorrection()
    if method == "none":
        return _Identity()
    raise ConfigError(
        f"unknown debiasing method {method!r}; choose one of {', '.join(METHODS)} or 'auto'."
    )


def fit_correction(
    est: BaseEstimator, pred: np.ndarray, truth: np.ndarray, residuals: np.ndarray | None
) -> BaseEstimator:
    """Fit ``est`` on calibration pairs; ``residuals`` go to a Tweedie fed by validation residuals."""
    if isinstance(est, TweedieCorrection) and est.sigma_source == "validation_residuals":
        return est.fit(pred, truth, residuals=residuals)
    return est.fit(pred, truth)
