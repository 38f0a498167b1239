"""Accuracy of a predicted outcome against the truth: R², RMSE and the shrinkage slope."""

from __future__ import annotations

import numpy as np

from eocausal.errors import InputDataError
from eocausal.validation import check_outcome, check_sample_weight

__all__ = ["outcome_metrics"]


def outcome_metrics(truth, predicted, *, sample_weight=None) -> dict[str, float | int]:
    """R², RMSE and the slope and intercept of the prediction regressed on the truth.

    Parameters
    ----------
    truth : array-like of shape (n,)
        Observed outcome :math:`Y` (e.g. the survey wealth index).
    predicted : array-like of shape (n,)
        Prediction :math:`\\hat Y` for the same locations, made by a model that
        did not see them (out-of-fold or held-out).
    sample_weight : array-like of shape (n,), default=None
        Positive weights :math:`w_i` (1 when ``None``).

    Returns
    -------
    dict
        ``n`` (int), ``r2``, ``rmse``, ``slope``, ``intercept`` (floats).

    Notes
    -----
    With weighted means :math:`\\bar Y = \\sum w_i Y_i / \\sum w_i` (likewise
    :math:`\\bar{\\hat Y}`),

    .. math::

        R^2 = 1 - \\frac{\\sum_i w_i (Y_i - \\hat Y_i)^2}{\\sum_i w_i (Y_i - \\bar Y)^2},
        \\qquad
        \\mathrm{RMSE} = \\sqrt{\\frac{\\sum_i w_i (Y_i - \\hat Y_i)^2}{\\sum_i w_i}},

    .. math::

        k = \\frac{\\sum_i w_i (Y_i - \\bar Y)(\\hat Y_i - \\bar{\\hat Y})}
                  {\\sum_i w_i (Y_i - \\bar Y)^2},
        \\qquad m = \\bar{\\hat Y} - k \\bar Y .

    :math:`R^2` is the coefficient of determination (negative when the
    prediction is worse than the mean), not a squared correlation. The slope
    :math:`k` of :math:`\\hat Y = m + kY` is the shrinkage that the linear
    calibration correction inverts (Pettersson, Jerzak, Daoud 2026):
    :math:`k < 1` means effects estimated on :math:`\\hat Y` are attenuated.
    Even the best predictor :math:`E[Y \\mid X]` has :math:`k = R^2 < 1`
    when the imagery does not determine the outcome.

    Examples
    --------
    >>> m = outcome_metrics([0.0, 1.0, 2.0, 3.0], [0.5, 1.0, 1.5, 2.0])
    >>> m["slope"], m["intercept"], m["n"]
    (0.5, 0.5, 4)
    """
    y = check_outcome(truth, name="truth")
    yhat = check_outcome(predicted, n=y.shape[0], name="predicted")
    n = y.shape[0]
    w = check_sample_weight(sample_weight, n=n)
    w = np.ones(n) if w is None else w
    if n < 2:
        raise InputDataError(
            f"`truth` has {n} value(s); accuracy needs at least 2 labelled locations."
        )
    y_bar = np.average(y, weights=w)
    ss_tot = float(np.sum(w * (y - y_bar) ** 2))
    if ss_tot <= 0.0:
        raise InputDataError(
            f"`truth` is constant ({y[0]!r} at all {n} locations): R² and the slope are "
            "undefined. Evaluate on locations whose outcome varies."
        )
    ss_res = float(np.sum(w * (y - yhat) ** 2))
    slope = float(np.sum(w * (y - y_bar) * (yhat - np.average(yhat, weights=w))) / ss_tot)
    return {
        "n": int(n),
        "r2": 1.0 - ss_res / ss_tot,
        "rmse": float(np.sqrt(ss_res / np.sum(w))),
        "slope": slope,
        "intercept": float(np.average(yhat, weights=w) - slope * y_bar),
    }
