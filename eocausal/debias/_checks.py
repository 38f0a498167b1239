"""Input checks and warnings shared by the debiasing modules (private)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from eocausal.errors import CalibrationWarning, ConfigError, InputDataError
from eocausal.validation import check_outcome, check_propensity


def check_pair(
    predicted: Any, truth: Any, pred_name: str, truth_name: str, *, min_size: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Return a calibration set (predictions, truths) as float arrays, or raise with a fix."""
    pred = check_outcome(predicted, name=pred_name)
    tru = check_outcome(truth, name=truth_name)
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


def check_n_bootstrap(n_bootstrap: Any) -> int:
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 2):
        raise ConfigError(
            f"`n_bootstrap` must be an int >= 2; got {n_bootstrap!r}. 200 is a good default."
        )
    return int(n_bootstrap)


def check_alpha(alpha: Any) -> float:
    if not (isinstance(alpha, float) and 0 < alpha < 1):
        raise ConfigError(f"`alpha` must be a float in (0, 1); got {alpha!r}. Use 0.05 for 95 %.")
    return alpha


def warn_small(n: int, min_size: int, who: str) -> None:
    if n < min_size:
        warnings.warn(
            f"{who}: the calibration set has only {n} labelled units (fewer than {min_size}); the "
            "correction is noisy. Use debiased_ate() for a standard error that includes the "
            "calibration uncertainty, or label more units.",
            CalibrationWarning,
            stacklevel=3,
        )


def warn_support(
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


def check_common_params(est: BaseEstimator) -> None:
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


def design_propensity(
    propensity: Any, randomized: bool, T: np.ndarray, sample_weight: np.ndarray | None
) -> np.ndarray:
    """Per-unit treatment probabilities; ``None`` is allowed only for a randomised trial.

    With ``propensity=None`` and ``randomized=True`` the (weighted) treated share is used,
    which makes Hajek IPW the difference in (weighted) means.
    """
    if not isinstance(randomized, (bool, np.bool_)):
        raise ConfigError(f"`randomized` must be True or False; got {randomized!r}.")
    n = T.size
    if propensity is None:
        if not randomized:
            raise InputDataError(
                "`propensity` is None: pass the known assignment probability (a float), a per-unit "
                "column of known probabilities, or the estimated propensity (e.g. "
                "eocausal.estimate.estimate_propensity, with the features it was fitted on as "
                "`propensity_features`), or set randomized=True to use the treated share "
                "(completely randomised trials only)."
            )
        w = np.ones(n) if sample_weight is None else sample_weight
        return np.full(n, float(np.sum(w * T) / np.sum(w)))
    return check_propensity(propensity, n=n)
