"""Calibration bootstrap: the uncertainty that a fitted correction adds to any estimate.

An estimate computed on a corrected outcome :math:`\\tilde Y` has two
sources of error: the study's sampling (the units observed) and the fitted
correction (the calibration pairs observed). The two samples are
independent, so their variances add. :func:`correction_bootstrap` measures
the second part for any statistic of the corrected outcome by refitting the
correction on resampled calibration pairs and recomputing the statistic on
the same study units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from eocausal.debias._checks import check_n_bootstrap, check_pair
from eocausal.debias.corrections import (
    METHODS,
    LinearCalibration,
    TweedieCorrection,
    fit_correction,
    make_correction,
)
from eocausal.errors import CalibrationWarning, ConfigError, EstimationError, InputDataError
from eocausal.validation import check_outcome

__all__ = ["CorrectionBootstrap", "correction_bootstrap"]

#: Above this share of failed refits the calibration SE is refused.
MAX_FAILED_SHARE = 0.1


@dataclass
class CorrectionBootstrap:
    """Replicates of a statistic over refitted corrections.

    Attributes
    ----------
    estimate : ndarray of shape (k,)
        The statistic on the outcome corrected with the full calibration set.
    replicates : ndarray of shape (n_ok, k)
        The statistic recomputed after each successful refit (``n_ok`` rows;
        none for ``method="none"``).
    std_err : ndarray of shape (k,)
        SD of the replicates per component: the calibration SE (zeros for
        ``method="none"``).
    method : str
        The correction refitted.
    n_bootstrap : int
        Resamples drawn (0 for ``method="none"``).
    n_failed : int
        Resamples on which the correction could not be refitted or the
        statistic was not finite.
    """

    estimate: np.ndarray
    replicates: np.ndarray
    std_err: np.ndarray
    method: str
    n_bootstrap: int
    n_failed: int

    def combine(self, sampling_se) -> np.ndarray:
        """Total SE ``sqrt(sampling_se**2 + std_err**2)``, per component, shape (k,).

        Valid because the calibration pairs are independent of the study
        units, so the two errors are uncorrelated to first order.
        """
        s = np.broadcast_to(np.asarray(sampling_se, dtype=np.float64), self.std_err.shape)
        if not np.all(np.isfinite(s) & (s >= 0)):
            raise InputDataError(f"`sampling_se` must be finite and >= 0; got {sampling_se!r}.")
        return np.hypot(s, self.std_err)

    def to_dict(self, *, include_replicates: bool = False) -> dict:
        """JSON-serialisable summary; replicates only with ``include_replicates=True``."""
        out = {
            "estimate": self.estimate.tolist(),
            "std_err": self.std_err.tolist(),
            "method": self.method,
            "n_bootstrap": self.n_bootstrap,
            "n_failed": self.n_failed,
        }
        if include_replicates:
            out["replicates"] = self.replicates.tolist()
        return out


def _as_components(value, who: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise InputDataError(
            f"`statistic` must return a float or an array of shape (k,); {who} it returned "
            f"shape {arr.shape}."
        )
    return arr


def _calibration_groups(clusters, n: int) -> list[np.ndarray] | None:
    """Row indices of each calibration cluster (in order of first appearance), or None."""
    if clusters is None:
        return None
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise InputDataError(
            f"`calibration_clusters` must have one label per calibration pair ({n}); got shape "
            f"{labels.shape}."
        )
    if pd.isna(labels).any():
        raise InputDataError(
            f"`calibration_clusters` has {int(pd.isna(labels).sum())} missing labels; give every "
            "calibration pair a group."
        )
    codes, first = pd.factorize(labels)
    if len(first) < 2:
        raise InputDataError(
            "`calibration_clusters` holds a single group: a cluster bootstrap needs at least 2 "
            "(pass None to resample pairs)."
        )
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes))[:-1])


def correction_bootstrap(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    predicted,
    *,
    calibration_predicted,
    calibration_truth,
    method: str,
    linear: LinearCalibration | None = None,
    tweedie: TweedieCorrection | None = None,
    residuals=None,
    calibration_clusters=None,
    n_bootstrap: int = 200,
    seed: int | None = 0,
) -> CorrectionBootstrap:
    """Calibration SE of any statistic computed on a corrected outcome.

    Parameters
    ----------
    statistic : callable
        Maps a corrected outcome of shape (n,) (the study units, in the order
        of ``predicted``) to a float or an array of shape (k,): an ATE, the
        AUTOC and TOC curve of a RATE, a vector of group means...
    predicted : array-like of shape (n,)
        Raw predicted outcome of the study units.
    calibration_predicted, calibration_truth : array-like of shape (n_calibration,)
        Labelled calibration pairs (not used to train the predictor).
    method : {"linear", "tweedie", "none"}
        The correction to refit; use the ``method`` of the
        :class:`~eocausal.debias.DebiasResult` that produced the outcome
        (the choice made by ``"auto"`` is held fixed).
    linear, tweedie : LinearCalibration, TweedieCorrection, default=None
        Unfitted prototypes with the settings used for the corrected outcome.
    residuals : array-like of shape (n_residuals,), default=None
        Validation residuals for ``TweedieCorrection(sigma_source="validation_residuals")``;
        resampled independently of the pairs.
    calibration_clusters : array-like of shape (n_calibration,), default=None
        Groups of calibration pairs whose errors may be correlated (the spatial
        blocks a map's calibration split was held out by, survey strata...):
        each replicate draws whole groups with replacement (a cluster
        bootstrap). None draws pairs. Needs at least 2 groups.
    n_bootstrap : int, default=200
    seed : int or None, default=0

    Returns
    -------
    CorrectionBootstrap

    Raises
    ------
    EstimationError
        When more than 10 % of the resamples cannot be refitted (e.g. a slope
        indistinguishable from zero): the correction's uncertainty is then
        not estimable.

    Notes
    -----
    Replicate :math:`b` draws the calibration pairs (or whole
    ``calibration_clusters``) with replacement, refits
    the correction :math:`g_b`, and returns :math:`T(g_b(\\hat Y))`; the
    calibration SE is :math:`\\mathrm{SD}_b\\,T(g_b(\\hat Y))` and

    .. math:: \\mathrm{SE}^2 = \\mathrm{SE}^2_{\\text{sampling}} + \\mathrm{SE}^2_{\\text{calibration}}

    (:meth:`CorrectionBootstrap.combine`), with the sampling SE computed
    with the correction held fixed. A Tweedie correction whose density comes
    from the target predictions refits only :math:`\\sigma` (the KDE does not
    depend on the calibration set).

    Nuisances may be held fixed inside ``statistic``. For AIPW with m̂ and τ̂
    fixed, the change in the estimate between corrections is
    :math:`\\frac1n\\sum_i \\frac{W_i - \\hat e_i}{\\hat e_i(1-\\hat e_i)} \\Delta\\tilde Y_i`,
    an IPW estimate of the effect on the change in the outcome, which is
    what the correction's error does to the estimand. Refitting m̂ and τ̂ on
    each replicate would add terms whose expectation is zero given X (the
    score is orthogonal to the nuisances), so they are of second order.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=300)
    >>> boot = correction_bootstrap(
    ...     np.mean, 0.5 * rng.normal(size=1000), calibration_predicted=0.5 * y + 0.1 *
    ...     rng.normal(size=300), calibration_truth=y, method="linear", n_bootstrap=50)
    >>> boot.replicates.shape, boot.n_failed
    ((50, 1), 0)
    """
    if not callable(statistic):
        raise ConfigError(f"`statistic` must be a callable of the corrected outcome; got {statistic!r}.")
    if method not in METHODS:
        raise ConfigError(
            f"`method` must be one of {METHODS}; got {method!r}. Run debias_outcome() first and "
            "pass its chosen `method` (the bootstrap refits one correction)."
        )
    n_bootstrap = check_n_bootstrap(n_bootstrap)
    pred = check_outcome(predicted, name="predicted")
    cal_p, cal_t = check_pair(
        calibration_predicted, calibration_truth, "calibration_predicted", "calibration_truth"
    )
    res_arr = None if residuals is None else check_outcome(residuals, name="residuals")
    groups = _calibration_groups(calibration_clusters, cal_p.size)
    proto = make_correction(method, linear, tweedie)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)  # reported by debias_outcome
        full = fit_correction(clone(proto), cal_p, cal_t, res_arr)
        score = None
        if isinstance(full, TweedieCorrection) and full.density_source == "target_predictions":
            score = full.density_score(pred)  # one KDE, reused by every replicate
            corrected = pred - full.sigma_**2 * score
        else:
            corrected = full.transform(pred)
        estimate = _as_components(statistic(corrected), "on the corrected outcome")
        k = estimate.size
        if method == "none":
            return CorrectionBootstrap(
                estimate=estimate,
                replicates=np.empty((0, k)),
                std_err=np.zeros(k),
                method=method,
                n_bootstrap=0,
                n_failed=0,
            )
        rng = np.random.default_rng(seed)
        reps, failed = [], 0
        for _ in range(n_bootstrap):
            if groups is None:
                idx = rng.integers(0, cal_p.size, cal_p.size)
            else:
                idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
            r_b = None if res_arr is None else res_arr[rng.integers(0, res_arr.size, res_arr.size)]
            try:
                est = fit_correction(clone(proto), cal_p[idx], cal_t[idx], r_b)
            except (EstimationError, InputDataError):
                failed += 1  # e.g. a resample whose slope is indistinguishable from zero
                continue
            y_b = pred - est.sigma_**2 * score if score is not None else est.transform(pred)
            value = _as_components(statistic(y_b), "on a bootstrap replicate")
            if value.size != k:
                raise InputDataError(
                    f"`statistic` returned {value.size} values on a replicate but {k} on the "
                    "corrected outcome; it must return the same shape every time."
                )
            if not np.all(np.isfinite(value)):
                failed += 1
                continue
            reps.append(value)
    if failed > MAX_FAILED_SHARE * n_bootstrap:
        raise EstimationError(
            f"the {method!r} correction could not be refitted on {failed} of {n_bootstrap} "
            "bootstrap resamples of the calibration set, so its uncertainty is not estimable; "
            "label more calibration units or use ppi_ate() with fresh labels."
        )
    replicates = np.asarray(reps).reshape(len(reps), k)
    return CorrectionBootstrap(
        estimate=estimate,
        replicates=replicates,
        std_err=replicates.std(axis=0, ddof=1),
        method=method,
        n_bootstrap=n_bootstrap,
        n_failed=failed,
    )
