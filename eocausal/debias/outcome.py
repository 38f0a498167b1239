"""The corrected outcome per unit: :func:`debias_outcome`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eocausal.debias._checks import check_pair
from eocausal.debias.corrections import METHODS, fit_correction, make_correction
from eocausal.debias.selection import select_correction
from eocausal.errors import ConfigError
from eocausal.validation import check_outcome

__all__ = ["DebiasResult", "debias_outcome"]


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
    pred = check_outcome(predicted, name="predicted")
    cal_p, cal_t = check_pair(
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
    est = fit_correction(make_correction(chosen, linear, tweedie), cal_p, cal_t, residuals)
    corrected = est.transform(pred)
    diagnostics["correction"] = est.diagnostics()
    lo, hi = float(cal_p.min()), float(cal_p.max())
    diagnostics["outside_support_fraction"] = float(np.mean((pred < lo) | (pred > hi)))
    return DebiasResult(corrected=corrected, method=chosen, diagnostics=diagnostics)
