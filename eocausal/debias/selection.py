"""Choosing a correction by cross-validated pseudo-contrasts on the calibration set."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from eocausal.debias._checks import check_pair
from eocausal.debias.corrections import (
    METHODS,
    TweedieCorrection,
    _kde_bandwidth,
    _kde_score,
    fit_correction,
    make_correction,
)
from eocausal.errors import CalibrationWarning, ConfigError, EstimationError

__all__ = ["SelectionResult", "select_correction"]



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
    pred, tru = check_pair(predicted, truth, "predicted", "truth")
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
            est = make_correction(c, linear, tweedie)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CalibrationWarning)
                    fit_correction(est, pred[train], tru[train], residuals)
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
