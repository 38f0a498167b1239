"""Debiasing effects estimated on predicted outcomes (maps predicted from imagery).

A map :math:`\\hat Y` predicted from imagery (a wealth index, a yield) shrinks
toward the mean, so treatment effects estimated on it are attenuated. This
module corrects the predicted outcome with a small labelled *calibration* set
(pairs of prediction and truth), following Pettersson, Jerzak and Daoud
(2026), and offers prediction-powered inference as the comparator when a few
fresh labels exist in the study population itself.

- :class:`LinearCalibration`: regress the prediction on the truth,
  :math:`\\hat Y = m + kY`, and invert, :math:`\\tilde Y = (\\hat Y - m)/k`.
- :class:`TweedieCorrection`: :math:`\\tilde Y = \\hat Y - \\sigma^2\\,
  \\frac{d}{d\\hat y}\\log \\hat p(\\hat Y)` with :math:`\\sigma` the SD of the
  prediction error and :math:`\\hat p` a Gaussian KDE of predictions.
- :func:`select_correction`: choose between corrections by cross-validated
  pseudo-contrasts of known size on the calibration set.
- :func:`debias_outcome`: the single entry point (corrected outcome per unit
  plus diagnostics); :func:`debiased_ate`: naive and corrected ATEs side by
  side, with a standard error that includes the calibration uncertainty.
- :func:`ppi_ate`: PPI++ (Angelopoulos, Duchi, Zrnic 2023) for the ATE, using
  ``ppi-python``.

This module never imports torch.

References
----------
.. [1] Pettersson, M. B., Jerzak, C. T., Daoud, A. (2026). One Map, Many
   Trials: Satellite-Based Causal Inference with Debiased Predicted Outcomes.
   AAAI 2026.
.. [2] Efron, B. (2011). Tweedie's formula and selection bias. JASA 106(496).
.. [3] Angelopoulos, A. N., Bates, S., Fannjiang, C., Jordan, M. I., Zrnic, T.
   (2023). Prediction-powered inference. Science 382(6671).
.. [4] Angelopoulos, A. N., Duchi, J. C., Zrnic, T. (2023). PPI++: Efficient
   prediction-powered inference. arXiv:2311.01453.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats
from sklearn.base import BaseEstimator, clone

from eocausal.errors import (
    CalibrationWarning,
    ConfigError,
    EstimationError,
    InputDataError,
    NotFittedError,
)

__all__ = [
    "METHODS",
    "DebiasResult",
    "DebiasedATE",
    "LinearCalibration",
    "PPIResult",
    "SelectionResult",
    "TweedieCorrection",
    "debias_outcome",
    "debiased_ate",
    "ppi_ate",
    "select_correction",
]

#: Correction names accepted by :func:`debias_outcome` and :func:`select_correction`.
METHODS = ("none", "linear", "tweedie")

# Above this many (query x sample) kernel evaluations the KDE score is computed
# on a grid and interpolated instead of at every prediction.
_EXACT_KDE_LIMIT = 2e7
_KDE_GRID_POINTS = 4096


# --------------------------------------------------------------------------- validation


def _validate_vector(values: Any, name: str, *, allow_nan: bool = False) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, or raise naming the bad entries."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputDataError(
            f"`{name}` must be numeric; could not convert it to floats ({exc})."
        ) from exc
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise InputDataError(
            f"`{name}` must be one-dimensional (one value per unit); got shape {arr.shape}."
        )
    bad = ~np.isfinite(arr) if not allow_nan else np.isinf(arr)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise InputDataError(
            f"`{name}` has {idx.size} non-finite value(s) at positions {idx[:10].tolist()}"
            f"{' ...' if idx.size > 10 else ''}; drop or impute those units first and report them as excluded."
        )
    return arr


def _validate_pair(
    predicted: Any, truth: Any, pred_name: str, truth_name: str, *, min_size: int = 3
):
    pred = _validate_vector(predicted, pred_name)
    tru = _validate_vector(truth, truth_name)
    if pred.shape != tru.shape:
        raise InputDataError(
            f"`{pred_name}` and `{truth_name}` must have one value per calibration unit each; "
            f"got {pred.size} and {tru.size}."
        )
    if pred.size < min_size:
        raise InputDataError(
            f"the calibration set needs at least {min_size} labelled units; got {pred.size}."
        )
    if np.ptp(tru) == 0:
        raise InputDataError(
            f"`{truth_name}` is constant ({tru[0]!r}); a calibration set needs varying truths."
        )
    return pred, tru


def _validate_treatment(treatment: Any, n: int) -> np.ndarray:
    w = np.asarray(treatment)
    if w.ndim != 1 or w.size != n:
        raise InputDataError(
            f"`treatment` must have one value per unit ({n}); got shape {w.shape}."
        )
    bad = ~np.isin(w, (0, 1))
    if bad.any():
        idx = np.flatnonzero(bad)
        raise InputDataError(
            f"`treatment` must be binary 0/1; positions {idx[:10].tolist()} hold {np.unique(w[bad])[:5].tolist()}."
        )
    w = w.astype(np.int64)
    if w.min() == w.max():
        raise InputDataError(
            "`treatment` has a single arm; an effect needs treated and control units."
        )
    return w


def _validate_propensity(propensity: Any, w: np.ndarray) -> np.ndarray:
    if propensity is None:
        return np.full(w.shape, w.mean())
    e = np.asarray(propensity, dtype=np.float64)
    if e.ndim == 0:
        e = np.full(w.shape, float(e))
    if e.shape != w.shape:
        raise InputDataError(
            f"`propensity` must be a float or one value per unit ({w.size}); got shape {e.shape}."
        )
    bad = ~((e > 0) & (e < 1))
    if bad.any():
        idx = np.flatnonzero(bad)
        raise InputDataError(
            f"`propensity` must lie strictly inside (0, 1); positions {idx[:10].tolist()} do not "
            "(clip or trim units without overlap first)."
        )
    return e


def _check_fitted(est: BaseEstimator, attr: str) -> None:
    if not hasattr(est, attr):
        raise NotFittedError(
            f"This {type(est).__name__} instance is not fitted yet. "
            "Call 'fit' with calibration predictions and truths before using it."
        )


def _warn_small(n: int, min_size: int, who: str) -> None:
    if n < min_size:
        warnings.warn(
            f"{who}: the calibration set has only {n} labelled units (fewer than {min_size}); the "
            "correction is noisy. Use debiased_ate() for a standard error that includes the "
            "calibration uncertainty, or label more units.",
            CalibrationWarning,
            stacklevel=3,
        )


def _warn_support(
    pred: np.ndarray, support: tuple[float, float], max_fraction: float, who: str
) -> None:
    """Warn when more than ``max_fraction`` of ``pred`` lies outside ``support``."""
    lo, hi = support
    outside = int(np.count_nonzero((pred < lo) | (pred > hi)))
    if outside > max_fraction * pred.size:
        warnings.warn(
            f"{who}: {outside} of {pred.size} predictions ({outside / pred.size:.1%}) lie outside the "
            f"calibration support [{lo:.4g}, {hi:.4g}]; the correction extrapolates there. Check that the "
            "calibration set comes from the same population and map as the study units.",
            CalibrationWarning,
            stacklevel=3,
        )


def _check_common_params(est: BaseEstimator) -> None:
    name = type(est).__name__
    if not (
        isinstance(est.min_calibration_size, (int, np.integer)) and est.min_calibration_size >= 0
    ):
        raise ConfigError(
            f"The 'min_calibration_size' parameter of {name} must be an int >= 0. "
            f"Got {est.min_calibration_size!r} instead."
        )
    if not (
        isinstance(est.max_outside_fraction, (int, float)) and 0 <= est.max_outside_fraction <= 1
    ):
        raise ConfigError(
            f"The 'max_outside_fraction' parameter of {name} must be a float in [0, 1]. "
            f"Got {est.max_outside_fraction!r} instead."
        )


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
        _check_common_params(self)
        if not (isinstance(self.zero_slope_tol, (int, float)) and self.zero_slope_tol >= 0):
            raise ConfigError(
                f"The 'zero_slope_tol' parameter of LinearCalibration must be a float >= 0. "
                f"Got {self.zero_slope_tol!r} instead."
            )
        pred, tru = _validate_pair(predicted, truth, "predicted", "truth")
        n = pred.size
        _warn_small(n, self.min_calibration_size, "LinearCalibration")
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
        _check_fitted(self, "slope_")
        pred = _validate_vector(predicted, "predicted")
        _warn_support(pred, self.support_, self.max_outside_fraction, "LinearCalibration")
        return (pred - self.intercept_) / self.slope_

    def diagnostics(self) -> dict:
        """JSON-serialisable summary of the fitted calibration."""
        _check_fitted(self, "slope_")
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
        _check_common_params(self)
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
        pred, tru = _validate_pair(predicted, truth, "predicted", "truth")
        _warn_small(pred.size, self.min_calibration_size, "TweedieCorrection")
        if self.sigma_source == "validation_residuals":
            if residuals is None:
                raise ConfigError(
                    "TweedieCorrection(sigma_source='validation_residuals') needs `residuals` "
                    "(prediction minus truth on the predictor's validation split) in fit(); pass them "
                    "or set sigma_source='calibration'."
                )
            res = _validate_vector(residuals, "residuals")
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
        _check_fitted(self, "sigma_")
        pred = _validate_vector(predicted, "predicted")
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
        _check_fitted(self, "sigma_")
        pred = _validate_vector(predicted, "predicted")
        _warn_support(pred, self.support_, self.max_outside_fraction, "TweedieCorrection")
        return pred - self.sigma_**2 * self.density_score(pred)

    def diagnostics(self) -> dict:
        """JSON-serialisable summary of the fitted correction."""
        _check_fitted(self, "sigma_")
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
    """The "none" candidate: the prediction itself (used in selection only)."""

    def fit(self, predicted, truth, **_):
        self.n_calibration_ = int(np.size(predicted))
        return self

    def transform(self, predicted):
        return _validate_vector(predicted, "predicted")

    def diagnostics(self) -> dict:
        return {"n_calibration": self.n_calibration_}


def _make_correction(
    method: str, linear: LinearCalibration | None, tweedie: TweedieCorrection | None
):
    if method == "linear":
        return clone(linear) if linear is not None else LinearCalibration()
    if method == "tweedie":
        return clone(tweedie) if tweedie is not None else TweedieCorrection()
    if method == "none":
        return _Identity()
    raise ConfigError(
        f"unknown debiasing method {method!r}; choose one of {', '.join(METHODS)} or 'auto'."
    )


def _fit_correction(est, pred, truth, residuals):
    if isinstance(est, TweedieCorrection) and est.sigma_source == "validation_residuals":
        return est.fit(pred, truth, residuals=residuals)
    return est.fit(pred, truth)


# --------------------------------------------------------------------------- IPW helpers


def _hajek(y: np.ndarray, w: np.ndarray, e: np.ndarray) -> tuple[float, np.ndarray]:
    """Hajek IPW difference and its per-unit influence function (mean zero)."""
    a1, a0 = w / e, (1 - w) / (1 - e)
    mu1, mu0 = np.sum(a1 * y) / a1.sum(), np.sum(a0 * y) / a0.sum()
    infl = a1 * (y - mu1) / a1.mean() - a0 * (y - mu0) / a0.mean()
    return float(mu1 - mu0), infl


def _hajek_se(infl: np.ndarray) -> float:
    n = infl.size
    return float(np.sqrt(np.sum(infl**2)) / n)


# --------------------------------------------------------------------------- PPI


@dataclass
class PPIResult:
    """Prediction-powered ATE (PPI++) with a few fresh labels.

    Attributes
    ----------
    estimate, se, ci_lower, ci_upper : float
        PPI++ point estimate, standard error and (1 - alpha) interval.
    lam : float
        Power-tuning parameter (0 = labels only, 1 = plain PPI).
    classical, classical_se : float
        The same estimand from the labelled units alone.
    naive : float
        The estimand computed from predictions on all units (biased).
    n_labeled, n_unlabeled : int
    alpha : float
    """

    estimate: float
    se: float
    ci_lower: float
    ci_upper: float
    lam: float
    classical: float
    classical_se: float
    naive: float
    n_labeled: int
    n_unlabeled: int
    alpha: float

    def to_dict(self) -> dict:
        return {
            k: (float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in self.__dict__.items()
        }


def ppi_ate(predicted, treatment, truth, *, propensity=None, alpha=0.05, lam=None) -> PPIResult:
    """ATE by prediction-powered inference (PPI++) when a few study units are labelled.

    Parameters
    ----------
    predicted : array-like of shape (n,)
        Predicted outcome of every study unit.
    treatment : array-like of shape (n,)
        Binary treatment.
    truth : array-like of shape (n,)
        Measured outcome where a fresh label exists, NaN elsewhere. The
        labelled units must be a random subsample of the study units.
    propensity : float or array-like of shape (n,), default=None
        Treatment probabilities (known design or estimated). ``None`` uses the
        treated share (a completely randomised trial).
    alpha : float, default=0.05
        Interval level.
    lam : float, default=None
        PPI++ power-tuning parameter; ``None`` estimates the optimal value
        (clipped to [0, 1]), 1 gives plain PPI, 0 the labelled units alone.

    Returns
    -------
    PPIResult

    Notes
    -----
    The ATE is the mean of the Horvitz-Thompson pseudo-outcome
    :math:`Z_i = a_i Y_i`, :math:`a_i = W_i/e_i - (1-W_i)/(1-e_i)`, so PPI++
    for a mean applies with :math:`\\hat Z_i = a_i \\hat Y_i` (labelled set
    :math:`L`, :math:`n = |L|`, unlabelled :math:`U`, :math:`N = |U|`):

    .. math::

        \\hat\\tau = \\lambda\\,\\overline{\\hat Z}_U + \\overline{(Z - \\lambda\\hat Z)}_L,
        \\qquad \\lambda = \\frac{\\widehat{\\mathrm{Cov}}_L(Z, \\hat Z)}
        {(1 + n/N)\\,\\widehat{\\mathrm{Var}}_{L \\cup U}(\\hat Z)} \\in [0, 1].

    The estimate and interval come from ``ppi_py.ppi_mean_pointestimate`` and
    ``ppi_py.ppi_mean_ci`` (ppi-python) with this :math:`\\lambda`; it is
    computed here (the formula above, as in PPI++ for a mean) so that it can
    be reported. Horvitz-Thompson rather than Hajek weighting keeps the
    estimand a plain mean, which is what ppi-python's mean routines handle.

    References
    ----------
    Angelopoulos, Duchi, Zrnic (2023), "PPI++: Efficient prediction-powered
    inference", arXiv:2311.01453.
    """
    import ppi_py  # heavy import (numba); only when PPI is used

    pred = _validate_vector(predicted, "predicted")
    w = _validate_treatment(treatment, pred.size)
    tru = _validate_vector(truth, "truth", allow_nan=True)
    if tru.shape != pred.shape:
        raise InputDataError(
            f"`truth` must have one entry per unit (NaN where unlabelled): got {tru.size}, expected {pred.size}."
        )
    e = _validate_propensity(propensity, w)
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ConfigError(f"`alpha` must be a float in (0, 1); got {alpha!r}.")
    lab = np.isfinite(tru)
    n, n_unl = int(lab.sum()), int((~lab).sum())
    if n < 10 or n_unl < 1:
        raise InputDataError(
            f"ppi_ate needs at least 10 labelled and 1 unlabelled unit; got {n} labelled and {n_unl} unlabelled."
        )
    if w[lab].min() == w[lab].max():
        raise InputDataError(
            "the labelled units all sit in one treatment arm; label units in both arms."
        )
    a = w / e - (1 - w) / (1 - e)
    z_l, zh_l, zh_u = a[lab] * tru[lab], a[lab] * pred[lab], a[~lab] * pred[~lab]
    if lam is None:
        cov = np.cov(z_l, zh_l)[0, 1]
        var = np.var(np.concatenate([zh_l, zh_u]), ddof=1)
        lam = float(np.clip(cov / ((1 + n / n_unl) * var), 0.0, 1.0)) if var > 0 else 0.0
    elif not (isinstance(lam, (int, float)) and 0 <= lam <= 1):
        raise ConfigError(f"`lam` must be None or a float in [0, 1]; got {lam!r}.")
    est = float(np.ravel(ppi_py.ppi_mean_pointestimate(z_l, zh_l, zh_u, lam=lam))[0])
    lo, hi = (
        float(np.ravel(v)[0]) for v in ppi_py.ppi_mean_ci(z_l, zh_l, zh_u, alpha=alpha, lam=lam)
    )
    zq = stats.norm.ppf(1 - alpha / 2)
    return PPIResult(
        estimate=est,
        se=(hi - lo) / (2 * zq),
        ci_lower=lo,
        ci_upper=hi,
        lam=float(lam),
        classical=float(z_l.mean()),
        classical_se=float(z_l.std(ddof=1) / np.sqrt(n)),
        naive=float(np.mean(a * pred)),
        n_labeled=n,
        n_unlabeled=n_unl,
        alpha=alpha,
    )


# --------------------------------------------------------------------------- selection


@dataclass
class SelectionResult:
    """Outcome of :func:`select_correction`.

    Attributes
    ----------
    method : str
        The candidate with the smallest RMSE on the pseudo-contrasts.
    scores : dict
        Per candidate: ``rmse``, ``bias``, ``mae``, ``slope`` and ``intercept``
        of estimated on known pseudo-contrasts, ``n_contrasts``; a candidate
        that could not be fitted on some fold has ``error`` instead.
    design : str
        "shift" or "tilt".
    n_folds, n_calibration, n_contrasts : int
    seed : int or None
    """

    method: str
    scores: dict
    design: str
    n_folds: int
    n_calibration: int
    n_contrasts: int
    seed: int | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _shift_weights(y: np.ndarray, density_sample: np.ndarray, delta: float) -> np.ndarray:
    """Importance weights p(y - delta) / p(y) (Gaussian KDE of ``density_sample``), normalised.

    Reweighting units by them turns the distribution of ``y`` into that of
    ``y + delta``: a pseudo-treated arm with a location shift of ``delta``.
    """
    kde = stats.gaussian_kde(density_sample)
    logw = kde.logpdf(y - delta) - kde.logpdf(y)
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _selection_transform(est, pred_test: np.ndarray, pred_all: np.ndarray) -> np.ndarray:
    """Correct held-out predictions; a target-density Tweedie uses the KDE of all calibration predictions.

    The held-out fold alone is too small for a stable density; the pooled
    calibration predictions carry no labels, so using them leaks nothing.
    """
    if isinstance(est, TweedieCorrection) and est.density_source == "target_predictions":
        h = _kde_bandwidth(pred_all, est.bandwidth)
        return pred_test - est.sigma_**2 * _kde_score(pred_test, pred_all, h, est.step)
    return est.transform(pred_test)


def select_correction(
    predicted,
    truth,
    *,
    candidates=("none", "linear", "tweedie"),
    n_folds=5,
    seed=None,
    linear=None,
    tweedie=None,
    residuals=None,
    design="shift",
    strengths=(-0.5, -0.25, 0.25, 0.5),
    n_draws=10,
) -> SelectionResult:
    """Choose a correction by cross-validated pseudo-contrasts on the calibration set.

    The calibration set is split into ``n_folds`` folds; each candidate is
    fitted on the other folds and corrects the held-out fold, which gives an
    out-of-fold corrected outcome :math:`\\tilde Y_i` for every calibration
    unit. Candidates are then scored by how well :math:`\\tilde Y` recovers
    pseudo-contrasts whose true size is known from the labels:

    - ``design="shift"`` (default; mimics an additive effect, the setting of
      the paper): for :math:`\\delta = \\beta \\cdot \\mathrm{SD}(Y)`, reweight
      the calibration units by :math:`v_i \\propto \\hat p_Y(Y_i - \\delta) /
      \\hat p_Y(Y_i)` (Gaussian KDE of all calibration truths), which turns
      the distribution of :math:`Y` into that of :math:`Y + \\delta`. Known
      contrast :math:`\\sum_i v_i Y_i - \\bar Y`; estimate
      :math:`\\sum_i v_i \\tilde Y_i - \\bar{\\tilde Y}`. Deterministic given
      the folds.
    - ``design="tilt"``: draw pseudo-treatments
      :math:`\\tilde W_i \\sim \\mathrm{Bernoulli}(\\mathrm{logistic}(\\beta z_i))`
      (:math:`z` the standardised truth; ``n_draws`` draws per
      :math:`\\beta`); known contrast: difference in mean truth between
      pseudo-arms; estimate: the same on the corrected outcome. Tilting
      mostly moves units between regions of the outcome distribution (e.g.
      between the modes of a bimodal outcome), which is a different kind of
      effect than a shift.

    A null contrast (:math:`\\delta = 0` or :math:`\\beta = 0`) is always
    added. The candidate with the smallest root-mean-square error wins.

    Parameters
    ----------
    predicted, truth : array-like of shape (n_calibration,)
        The labelled calibration set.
    candidates : sequence of {"none", "linear", "tweedie"}
    n_folds : int, default=5
    seed : int or None, default=None
        Seeds the folds (and the tilt draws); None: fresh entropy.
    linear, tweedie : LinearCalibration, TweedieCorrection, default=None
        Unfitted prototypes carrying the settings to use (cloned per fold).
    residuals : array-like, default=None
        Passed to a Tweedie candidate with ``sigma_source="validation_residuals"``.
    design : {"shift", "tilt"}, default="shift"
    strengths : sequence of float, default=(-0.5, -0.25, 0.25, 0.5)
        Values of :math:`\\beta` (shift sizes in SDs of the truth, or tilt slopes).
    n_draws : int, default=10
        Pseudo-treatment draws per strength (tilt design only).

    Returns
    -------
    SelectionResult

    Notes
    -----
    WARNING: pseudo-contrasts are built from the truth only, so they mimic
    effects whose prediction error does not depend on treatment given the
    outcome, the assumption both corrections make; the selection cannot
    detect a treatment that changes the map's error itself. A Tweedie
    candidate with ``density_source="target_predictions"`` gets its KDE from
    all calibration predictions (no labels involved) rather than from the
    small held-out fold.
    """
    pred, tru = _validate_pair(predicted, truth, "predicted", "truth")
    cands = tuple(candidates)
    if not cands or any(c not in METHODS for c in cands) or len(set(cands)) != len(cands):
        raise ConfigError(
            f"`candidates` must be distinct names from {METHODS}; got {candidates!r}."
        )
    if not (isinstance(n_folds, (int, np.integer)) and 2 <= n_folds <= pred.size // 5):
        raise ConfigError(
            f"`n_folds` must be an int in [2, n_calibration // 5 = {pred.size // 5}]; got {n_folds!r}. "
            "Each held-out fold needs at least 5 units."
        )
    if design not in ("shift", "tilt"):
        raise ConfigError(f"`design` must be 'shift' or 'tilt'; got {design!r}.")
    if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 1):
        raise ConfigError(f"`n_draws` must be an int >= 1; got {n_draws!r}.")
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(pred.size), n_folds)
    # out-of-fold corrected outcome of every calibration unit, per candidate
    oof = {c: np.empty(pred.size) for c in cands}
    errors: dict[str, str] = {}
    for k in range(n_folds):
        test = folds[k]
        train = np.concatenate([folds[j] for j in range(n_folds) if j != k])
        for c in cands:
            if c in errors:
                continue
            est = _make_correction(c, linear, tweedie)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CalibrationWarning)
                    _fit_correction(est, pred[train], tru[train], residuals)
                    oof[c][test] = _selection_transform(est, pred[test], pred)
            except EstimationError as exc:
                errors[c] = f"fold {k}: {exc}"
    # pseudo-contrasts on the whole calibration set: (weights of pseudo-treated, of pseudo-control)
    betas = np.concatenate([np.asarray(strengths, float), [0.0]])
    contrasts = []
    if design == "shift":
        base = np.full(pred.size, 1.0 / pred.size)
        sd_truth = float(tru.std())
        contrasts = [(_shift_weights(tru, tru, beta * sd_truth), base) for beta in betas]
    else:
        z = (tru - tru.mean()) / tru.std()
        for beta in np.repeat(betas, n_draws):
            wt = rng.random(pred.size) < 1.0 / (1.0 + np.exp(-beta * z))
            if 0 < wt.sum() < wt.size:
                contrasts.append((wt / wt.sum(), ~wt / (~wt).sum()))
    known = [float(v1 @ tru - v0 @ tru) for v1, v0 in contrasts]
    estimates = {
        c: [float(v1 @ oof[c] - v0 @ oof[c]) for v1, v0 in contrasts]
        for c in cands
        if c not in errors
    }
    known_arr = np.asarray(known)
    scores: dict[str, dict] = {}
    for c in cands:
        if c in errors:
            scores[c] = {"error": errors[c]}
            continue
        est_arr = np.asarray(estimates[c])
        diff = est_arr - known_arr
        slope, intercept = np.polyfit(known_arr, est_arr, 1)
        scores[c] = {
            "rmse": float(np.sqrt(np.mean(diff**2))),
            "bias": float(diff.mean()),
            "mae": float(np.mean(np.abs(diff))),
            "slope": float(slope),
            "intercept": float(intercept),
            "n_contrasts": int(diff.size),
        }
    usable = [c for c in cands if "rmse" in scores[c]]
    if not usable:
        raise EstimationError(f"no candidate correction could be fitted: {errors}")
    best = min(usable, key=lambda c: scores[c]["rmse"])
    return SelectionResult(
        method=best,
        scores=scores,
        design=design,
        n_folds=int(n_folds),
        n_calibration=int(pred.size),
        n_contrasts=len(contrasts),
        seed=seed,
    )


# --------------------------------------------------------------------------- entry points


@dataclass
class DebiasResult:
    """Corrected outcome per unit and how it was obtained.

    Attributes
    ----------
    corrected : ndarray of shape (n,)
        The corrected outcome (equal to the prediction for method "none").
    method : str
        "none", "linear" or "tweedie" (the one chosen when "auto" was asked).
    diagnostics : dict
        Fitted correction diagnostics, the selection scores when "auto" was
        used, and the share of predictions outside the calibration support.
    """

    corrected: np.ndarray
    method: str
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self, *, include_values: bool = False) -> dict:
        """JSON-serialisable summary; per-unit values only with ``include_values=True``."""
        out = {
            "method": self.method,
            "n_units": int(self.corrected.size),
            "corrected_mean": float(self.corrected.mean()),
            "corrected_sd": float(self.corrected.std()),
            "diagnostics": self.diagnostics,
        }
        if include_values:
            out["corrected"] = self.corrected.tolist()
        return out


def debias_outcome(
    predicted,
    *,
    calibration_predicted,
    calibration_truth,
    method="auto",
    linear=None,
    tweedie=None,
    residuals=None,
    n_folds=5,
    seed=0,
) -> DebiasResult:
    """Correct a predicted outcome for shrinkage, using a labelled calibration set.

    Parameters
    ----------
    predicted : array-like of shape (n,)
        Predicted outcome of the study units.
    calibration_predicted, calibration_truth : array-like of shape (n_calibration,)
        Predictions and measured outcomes of labelled calibration units
        (not used to train the predictor).
    method : {"auto", "linear", "tweedie", "none"}, default="auto"
        "auto" picks by :func:`select_correction`.
    linear, tweedie : LinearCalibration, TweedieCorrection, default=None
        Unfitted prototypes with non-default settings.
    residuals : array-like, default=None
        Validation residuals for ``TweedieCorrection(sigma_source="validation_residuals")``.
    n_folds : int, default=5
        Folds for "auto".
    seed : int, default=0
        Seeds the selection (the corrections themselves are deterministic).

    Returns
    -------
    DebiasResult
    """
    pred = _validate_vector(predicted, "predicted")
    cal_p, cal_t = _validate_pair(
        calibration_predicted, calibration_truth, "calibration_predicted", "calibration_truth"
    )
    diagnostics: dict[str, Any] = {}
    if method == "auto":
        sel = select_correction(
            cal_p,
            cal_t,
            n_folds=n_folds,
            seed=seed,
            linear=linear,
            tweedie=tweedie,
            residuals=residuals,
        )
        diagnostics["selection"] = sel.to_dict()
        chosen = sel.method
    elif method in METHODS:
        chosen = method
    else:
        raise ConfigError(
            f"unknown debiasing method {method!r}; choose one of 'auto', {', '.join(METHODS)}."
        )
    est = _fit_correction(_make_correction(chosen, linear, tweedie), cal_p, cal_t, residuals)
    corrected = est.transform(pred)
    diagnostics["correction"] = est.diagnostics()
    lo, hi = float(cal_p.min()), float(cal_p.max())
    diagnostics["outside_support_fraction"] = float(np.mean((pred < lo) | (pred > hi)))
    return DebiasResult(corrected=corrected, method=chosen, diagnostics=diagnostics)


@dataclass
class DebiasedATE:
    """Naive and corrected ATE side by side.

    Attributes
    ----------
    naive, naive_se : float
        Hajek IPW effect on the predictions and its sampling SE.
    corrected, corrected_se : float
        Effect on the corrected outcome; SE combines the sampling SE and the
        calibration SE (independent samples).
    sampling_se, calibration_se : float
        The two components of ``corrected_se``.
    ci_lower, ci_upper : float
        Normal interval for the corrected effect at level 1 - alpha.
    method : str
    n_units, n_calibration, n_bootstrap : int
    alpha : float
    diagnostics : dict
    """

    naive: float
    naive_se: float
    corrected: float
    corrected_se: float
    sampling_se: float
    calibration_se: float
    ci_lower: float
    ci_upper: float
    method: str
    n_units: int
    n_calibration: int
    n_bootstrap: int
    alpha: float
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            k: (float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in self.__dict__.items()
        }


def debiased_ate(
    predicted,
    treatment,
    *,
    calibration_predicted,
    calibration_truth,
    propensity=None,
    method="auto",
    linear=None,
    tweedie=None,
    residuals=None,
    n_bootstrap=200,
    alpha=0.05,
    n_folds=5,
    seed=0,
) -> DebiasedATE:
    """Hajek IPW ATE on predicted and on corrected outcomes, with calibration-aware SEs.

    Parameters
    ----------
    predicted : array-like of shape (n,)
        Predicted outcome of the study units.
    treatment : array-like of shape (n,)
        Binary treatment.
    calibration_predicted, calibration_truth : array-like of shape (n_calibration,)
        Labelled calibration set.
    propensity : float or array-like of shape (n,), default=None
        Treatment probabilities; ``None`` uses the treated share (an RCT).
    method : {"auto", "linear", "tweedie", "none"}, default="auto"
    linear, tweedie, residuals, n_folds :
        As in :func:`debias_outcome`.
    n_bootstrap : int, default=200
        Bootstrap replicates of the calibration set (pairs resampled with
        replacement, and the validation residuals when used, the correction
        refitted, the ATE recomputed on the same study units). Resamples on
        which the correction cannot be fitted are counted in
        ``diagnostics["bootstrap_failures"]``; more than 10 % raise
        :class:`~eocausal.errors.EstimationError`.
    alpha : float, default=0.05
    seed : int, default=0
        Seeds the selection and the bootstrap.

    Returns
    -------
    DebiasedATE

    Notes
    -----
    .. math::

        \\hat\\tau = \\frac{\\sum_i W_i \\tilde Y_i / e_i}{\\sum_i W_i / e_i}
        - \\frac{\\sum_i (1-W_i) \\tilde Y_i / (1-e_i)}{\\sum_i (1-W_i)/(1-e_i)},
        \\qquad \\mathrm{SE}^2 = \\mathrm{SE}^2_{\\text{sampling}} + \\mathrm{SE}^2_{\\text{calibration}},

    with the sampling SE from the Hajek influence function (corrections held
    fixed) and the calibration SE the bootstrap SD over refitted corrections.
    The estimate treats the propensity as known. With ``method="auto"`` the
    bootstrap refits the chosen correction only (the uncertainty of the
    choice itself is not included).
    """
    pred = _validate_vector(predicted, "predicted")
    w = _validate_treatment(treatment, pred.size)
    e = _validate_propensity(propensity, w)
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 2):
        raise ConfigError(f"`n_bootstrap` must be an int >= 2; got {n_bootstrap!r}.")
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ConfigError(f"`alpha` must be a float in (0, 1); got {alpha!r}.")
    res = debias_outcome(
        pred,
        calibration_predicted=calibration_predicted,
        calibration_truth=calibration_truth,
        method=method,
        linear=linear,
        tweedie=tweedie,
        residuals=residuals,
        n_folds=n_folds,
        seed=seed,
    )
    naive, infl_naive = _hajek(pred, w, e)
    corrected, infl = _hajek(res.corrected, w, e)
    sampling_se = _hajek_se(infl)

    cal_p = _validate_vector(calibration_predicted, "calibration_predicted")
    cal_t = _validate_vector(calibration_truth, "calibration_truth")
    res_arr = None if residuals is None else _validate_vector(residuals, "residuals")
    rng = np.random.default_rng(seed)
    reps = []
    if res.method != "none":
        score = None
        proto = _make_correction(res.method, linear, tweedie)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)
            if (
                isinstance(proto, TweedieCorrection)
                and proto.density_source == "target_predictions"
            ):
                # the KDE does not depend on the calibration set: only sigma is refitted
                score = _fit_correction(clone(proto), cal_p, cal_t, res_arr).density_score(pred)
            failed = 0
            for _ in range(n_bootstrap):
                idx = rng.integers(0, cal_p.size, cal_p.size)
                r_b = (
                    None
                    if res_arr is None
                    else res_arr[rng.integers(0, res_arr.size, res_arr.size)]
                )
                try:
                    est = _fit_correction(clone(proto), cal_p[idx], cal_t[idx], r_b)
                except (EstimationError, InputDataError):
                    failed += 1  # e.g. a resample whose slope is indistinguishable from zero
                    continue
                y_b = pred - est.sigma_**2 * score if score is not None else est.transform(pred)
                reps.append(_hajek(y_b, w, e)[0])
        if failed > 0.1 * n_bootstrap:
            raise EstimationError(
                f"debiased_ate: the {res.method!r} correction could not be refitted on {failed} of "
                f"{n_bootstrap} bootstrap resamples of the calibration set, so its uncertainty is not "
                "estimable; label more calibration units or use ppi_ate() with fresh labels."
            )
        res.diagnostics["bootstrap_failures"] = failed
    calibration_se = float(np.std(reps, ddof=1)) if reps else 0.0
    se = float(np.hypot(sampling_se, calibration_se))
    zq = stats.norm.ppf(1 - alpha / 2)
    return DebiasedATE(
        naive=naive,
        naive_se=_hajek_se(infl_naive),
        corrected=corrected,
        corrected_se=se,
        sampling_se=sampling_se,
        calibration_se=calibration_se,
        ci_lower=corrected - zq * se,
        ci_upper=corrected + zq * se,
        method=res.method,
        n_units=int(pred.size),
        n_calibration=int(cal_p.size),
        n_bootstrap=int(n_bootstrap) if reps else 0,
        alpha=alpha,
        diagnostics=res.diagnostics,
    )
