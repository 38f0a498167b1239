"""Effects on a corrected outcome with standard errors that include the correction.

- :func:`debiased_ate`: Hajek IPW on the predicted and on the corrected
  outcome, side by side (:func:`eocausal.estimate.hajek_ipw_ate`).
- :func:`debiased_aipw_ate`: AIPW on the corrected outcome
  (:func:`eocausal.estimate.aipw_ate`).

Both report ``sampling_se`` (the study's sampling, cluster-summed influence
function), ``calibration_se`` (:func:`~eocausal.debias.correction_bootstrap`)
and ``std_err``, the root of the sum of their squares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eocausal.debias._checks import (
    check_alpha,
    check_n_bootstrap,
    check_pair,
    design_propensity,
)
from eocausal.debias.bootstrap import CorrectionBootstrap, correction_bootstrap
from eocausal.debias.corrections import LinearCalibration, TweedieCorrection
from eocausal.debias.outcome import DebiasResult, debias_outcome
from eocausal.estimate.ate import aipw_ate, hajek_ipw_ate, hajek_weights, normal_interval
from eocausal.validation import (
    check_clusters,
    check_outcome,
    check_sample_weight,
    check_treatment,
)

__all__ = ["DebiasedAIPW", "DebiasedATE", "debiased_aipw_ate", "debiased_ate"]


def _se_note(sampling: str, n_clusters: int, n_units: int, boot: CorrectionBootstrap) -> str:
    groups = f"{n_clusters} clusters" if n_clusters < n_units else f"{n_units} units"
    if boot.method == "none":
        calibration = "no correction fitted, so no calibration part"
    else:
        calibration = (
            f"calibration part from {boot.n_bootstrap - boot.n_failed} refits of the "
            f"{boot.method} correction on resampled calibration pairs"
        )
    return f"std_err = sqrt(sampling^2 + calibration^2); sampling part {sampling} ({groups}); {calibration}"


@dataclass(kw_only=True)
class _CorrectedEffect:
    """An effect on a corrected outcome whose SE includes the correction's uncertainty.

    Attributes
    ----------
    estimate : float
        Effect on the corrected outcome.
    std_err : float
        :math:`\\sqrt{\\text{sampling\\_se}^2 + \\text{calibration\\_se}^2}`.
    sampling_se : float
        Cluster-robust SE of the estimator with the correction held fixed.
    calibration_se : float
        SD of the estimate over corrections refitted on resampled calibration pairs.
    ci_lower, ci_upper : float
        ``estimate ± z_{1-α/2} · std_err``.
    method : str
        The correction ("none", "linear", "tweedie").
    se_note : str
        What ``std_err`` includes, in words.
    n_units, n_clusters, n_calibration, n_bootstrap, bootstrap_failures : int
    alpha : float
    diagnostics : dict
        From :func:`~eocausal.debias.debias_outcome`.
    """

    estimate: float
    std_err: float
    sampling_se: float
    calibration_se: float
    ci_lower: float
    ci_upper: float
    method: str
    se_note: str
    n_units: int
    n_clusters: int
    n_calibration: int
    n_bootstrap: int
    bootstrap_failures: int
    alpha: float
    diagnostics: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return {k: float(v) if isinstance(v, np.floating) else v for k, v in self.__dict__.items()}


def _corrected_effect(
    sampling,
    boot: CorrectionBootstrap,
    res,
    *,
    alpha: float,
    n_calibration: int,
    sampling_note: str,
) -> dict:
    """The fields of :class:`_CorrectedEffect` from the sampling result and the bootstrap."""
    se = float(boot.combine(sampling.std_err)[0])
    lower, upper = normal_interval(sampling.estimate, se, alpha)
    res.diagnostics["bootstrap_failures"] = boot.n_failed
    return {
        "estimate": sampling.estimate,
        "std_err": se,
        "sampling_se": sampling.std_err,
        "calibration_se": float(boot.std_err[0]),
        "ci_lower": float(lower),
        "ci_upper": float(upper),
        "method": res.method,
        "se_note": _se_note(sampling_note, sampling.n_clusters, sampling.n_units, boot),
        "n_units": sampling.n_units,
        "n_clusters": sampling.n_clusters,
        "n_calibration": n_calibration,
        "n_bootstrap": boot.n_bootstrap,
        "bootstrap_failures": boot.n_failed,
        "alpha": alpha,
        "diagnostics": res.diagnostics,
    }


def _check_study(predicted, treatment, clusters, sample_weight, n_bootstrap, alpha):
    """Checked study inputs shared by the debiased estimators."""
    pred = check_outcome(predicted, name="predicted")
    n = pred.size
    T = check_treatment(treatment, n=n, name="treatment")
    return (
        pred,
        T,
        check_clusters(clusters, n=n),
        check_sample_weight(sample_weight, n=n),
        check_n_bootstrap(n_bootstrap),
        check_alpha(alpha),
    )


def _correct_with_bootstrap(
    statistic, pred, cal_p, cal_t, *, method, models, n_folds, n_bootstrap, seed,
    calibration_clusters=None,
) -> tuple[DebiasResult, CorrectionBootstrap]:
    """The correction of ``pred`` and the calibration bootstrap of ``statistic`` under it."""
    res = debias_outcome(
        pred,
        calibration_predicted=cal_p,
        calibration_truth=cal_t,
        method=method,
        n_folds=n_folds,
        seed=seed,
        **models,
    )
    boot = correction_bootstrap(
        statistic,
        pred,
        calibration_predicted=cal_p,
        calibration_truth=cal_t,
        method=res.method,
        calibration_clusters=calibration_clusters,
        n_bootstrap=n_bootstrap,
        seed=seed,
        **models,
    )
    return res, boot


@dataclass(kw_only=True)
class DebiasedATE(_CorrectedEffect):
    """Naive and corrected Hajek IPW effects side by side.

    The attributes of an effect on a corrected outcome (``estimate``, ``std_err``,
    ``sampling_se``: the cluster-robust influence-function SE, ``calibration_se``,
    ``ci_lower``, ``ci_upper``, ``method``, ``se_note``, ``n_units``, ``n_clusters``,
    ``n_calibration``, ``n_bootstrap``, ``bootstrap_failures``, ``alpha``,
    ``diagnostics``), and:

    Attributes
    ----------
    naive, naive_se : float
        The same estimator on the raw predictions, and its sampling SE.
    propensity_source : str
        "given", "given, estimated from propensity_features" or "treated share (randomized)".
    """

    naive: float
    naive_se: float
    propensity_source: str


def debiased_ate(
    predicted,
    treatment,
    *,
    calibration_predicted,
    calibration_truth,
    propensity=None,
    randomized: bool = False,
    clusters=None,
    sample_weight=None,
    propensity_features=None,
    method: str = "auto",
    linear: LinearCalibration | None = None,
    tweedie: TweedieCorrection | None = None,
    residuals=None,
    calibration_clusters=None,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    n_folds: int = 5,
    seed: int | None = 0,
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
        The known assignment probability, a per-unit column of known
        probabilities, or estimated propensities. REQUIRED unless
        ``randomized=True``: without it an observational study would get an
        unadjusted difference in means.
    randomized : bool, default=False
        With ``propensity=None``, declare a completely randomised trial and use
        the treated share (the difference in means).
    clusters : array-like of shape (n,), default=None
        Cluster labels (villages, spatial blocks, randomisation units); the
        sampling SE sums the influence function within clusters.
    sample_weight : array-like of shape (n,), default=None
        Positive unit weights (integer weights = duplicated rows).
    propensity_features : array-like of shape (n, q), default=None
        The features an estimated ``propensity`` was fitted on by logistic
        regression; the sampling SE then accounts for its estimation (see
        :func:`~eocausal.estimate.hajek_ipw_ate`).
    method : {"auto", "linear", "tweedie", "none"}, default="auto"
    linear, tweedie, residuals, n_folds :
        As in :func:`~eocausal.debias.debias_outcome`.
    calibration_clusters : array-like of shape (n_calibration,), default=None
        Groups of calibration pairs with correlated errors (e.g. the spatial
        blocks of a map's calibration split): the bootstrap then draws whole
        groups (:func:`~eocausal.debias.correction_bootstrap`).
    n_bootstrap : int, default=200
        Calibration bootstrap replicates (see
        :func:`~eocausal.debias.correction_bootstrap`); more than 10 % failed
        refits raise :class:`~eocausal.errors.EstimationError`.
    alpha : float, default=0.05
    seed : int, default=0
        Seeds the selection and the bootstrap.

    Returns
    -------
    DebiasedATE

    Raises
    ------
    InputDataError
        ``propensity=None`` without ``randomized=True``; invalid inputs.

    Notes
    -----
    .. math::

        \\hat\\tau = \\frac{\\sum_i w_i W_i \\tilde Y_i / e_i}{\\sum_i w_i W_i / e_i}
        - \\frac{\\sum_i w_i (1-W_i) \\tilde Y_i / (1-e_i)}{\\sum_i w_i (1-W_i)/(1-e_i)},
        \\qquad \\mathrm{SE}^2 = \\mathrm{SE}^2_{\\text{sampling}} + \\mathrm{SE}^2_{\\text{calibration}}.

    The sampling SE is the cluster-summed Hajek influence function with the
    factor C/(C−1) (correction held fixed); the calibration SE is the SD of
    :math:`\\hat\\tau` over corrections refitted on resampled calibration
    pairs, recomputed on the same study units. The naive estimate uses the
    same propensity, clusters and weights. With ``method="auto"`` the
    bootstrap refits the chosen correction only (the uncertainty of the
    choice itself is not included).

    WARNING: both corrections assume the prediction error does not depend on
    treatment given the outcome, and that the calibration pairs share the
    study's measurement model.
    """
    pred, T, cl, w, n_bootstrap, alpha = _check_study(
        predicted, treatment, clusters, sample_weight, n_bootstrap, alpha
    )
    e = design_propensity(propensity, randomized, T, w)
    cal_p, cal_t = check_pair(
        calibration_predicted, calibration_truth, "calibration_predicted", "calibration_truth"
    )
    v = hajek_weights(T, e, sample_weight=w)
    res, boot = _correct_with_bootstrap(
        lambda y: v @ y,
        pred,
        cal_p,
        cal_t,
        method=method,
        models={"linear": linear, "tweedie": tweedie, "residuals": residuals},
        n_folds=n_folds,
        n_bootstrap=n_bootstrap,
        seed=seed,
        calibration_clusters=calibration_clusters,
    )
    design = {"clusters": cl, "sample_weight": w, "propensity_features": propensity_features}
    naive = hajek_ipw_ate(pred, T, e, alpha=alpha, **design)
    corrected = hajek_ipw_ate(res.corrected, T, e, alpha=alpha, warn_overlap=False, **design)
    if propensity is None:
        source = "treated share (randomized)"
    elif propensity_features is not None:
        source = "given, estimated from propensity_features"
    else:
        source = "given"
    sampling = (
        "from the Hajek influence function projected on the logistic propensity scores"
        if propensity_features is not None
        else "from the Hajek influence function, propensity treated as known"
    )
    return DebiasedATE(
        **_corrected_effect(
            corrected, boot, res, alpha=alpha, n_calibration=int(cal_p.size), sampling_note=sampling
        ),
        naive=naive.estimate,
        naive_se=naive.std_err,
        propensity_source=source,
    )


@dataclass(kw_only=True)
class DebiasedAIPW(_CorrectedEffect):
    """AIPW effect on a corrected outcome.

    The attributes of an effect on a corrected outcome (``estimate``, ``std_err``,
    ``sampling_se``: the cluster-robust SE of :func:`~eocausal.estimate.aipw_ate`,
    ``calibration_se``: nuisances held fixed, ``ci_lower``, ``ci_upper``, ``method``,
    ``se_note``, ``n_units``, ``n_clusters``, ``n_calibration``, ``n_bootstrap``,
    ``bootstrap_failures``, ``alpha``, ``diagnostics``), and:

    Attributes
    ----------
    target : str
        The AIPW target population.
    """

    target: str


def debiased_aipw_ate(
    predicted,
    treatment,
    propensity,
    *,
    outcome_hat,
    effect,
    calibration_predicted,
    calibration_truth,
    method: str = "auto",
    linear: LinearCalibration | None = None,
    tweedie: TweedieCorrection | None = None,
    residuals=None,
    target: str = "all",
    clusters=None,
    sample_weight=None,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    n_folds: int = 5,
    seed: int | None = 0,
) -> DebiasedAIPW:
    """AIPW on the corrected outcome, with an SE that includes the correction's uncertainty.

    The correction is fitted here, from the raw ``predicted`` and the
    calibration set, with the same arguments as
    :func:`~eocausal.debias.debias_outcome`; ``outcome_hat`` and ``effect``
    must be cross-fitted on that corrected outcome. Typical use::

        res = debias_outcome(pred, calibration_predicted=cp, calibration_truth=ct, seed=0)
        # ... cross-fit m_hat, tau_hat on res.corrected ...
        out = debiased_aipw_ate(pred, T, e_hat, outcome_hat=m_hat, effect=tau_hat,
                                calibration_predicted=cp, calibration_truth=ct,
                                method=res.method)

    Parameters
    ----------
    predicted : array-like of shape (n,)
        RAW predicted outcome of the study units (not the corrected one).
    treatment : array-like of shape (n,)
    propensity : float or array-like of shape (n,)
        Out-of-fold ê or the known assignment probability.
    outcome_hat, effect : array-like of shape (n,)
        Out-of-fold m̂ = E[Ỹ|X] and τ̂ fitted on the corrected outcome.
    calibration_predicted, calibration_truth : array-like of shape (n_calibration,)
    method : {"auto", "linear", "tweedie", "none"}, default="auto"
        Pass the method that produced the corrected outcome the nuisances were
        fitted on (``"auto"`` repeats the same seeded selection).
    linear, tweedie, residuals, n_folds :
        As in :func:`~eocausal.debias.debias_outcome`.
    target : {"all", "treated", "control", "overlap"}, default="all"
    clusters, sample_weight : array-like of shape (n,), default=None
    n_bootstrap : int, default=200
    alpha : float, default=0.05
    seed : int, default=0

    Returns
    -------
    DebiasedAIPW

    Notes
    -----
    The sampling SE is that of :func:`~eocausal.estimate.aipw_ate` on
    :math:`\\tilde Y`. The calibration SE refits the correction on resampled
    calibration pairs and recomputes AIPW with m̂, τ̂ and ê held fixed: the
    change in the estimate is then
    :math:`\\sum_i w_i \\frac{W_i - \\hat e_i}{\\hat e_i(1-\\hat e_i)}\\Delta\\tilde Y_i / \\sum_i w_i`
    (target "all"), an IPW estimate of the effect on the change in the
    outcome; refitting the nuisances would only add terms that are
    orthogonal to them (second order). With 120 calibration pairs and a
    slope k = 0.4 the calibration part dominates (METHODS.md section 9).
    """
    pred, T, cl, w, n_bootstrap, alpha = _check_study(
        predicted, treatment, clusters, sample_weight, n_bootstrap, alpha
    )
    nuisances = {"outcome_hat": outcome_hat, "effect": effect, "target": target}
    res, boot = _correct_with_bootstrap(
        lambda y: aipw_ate(
            y, T, propensity, clusters=cl, sample_weight=w, warn_overlap=False, **nuisances
        ).estimate,
        pred,
        calibration_predicted,
        calibration_truth,
        method=method,
        models={"linear": linear, "tweedie": tweedie, "residuals": residuals},
        n_folds=n_folds,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    sampling = aipw_ate(
        res.corrected, T, propensity, clusters=cl, sample_weight=w, alpha=alpha, **nuisances
    )
    return DebiasedAIPW(
        **_corrected_effect(
            sampling,
            boot,
            res,
            alpha=alpha,
            n_calibration=int(np.size(calibration_truth)),
            sampling_note="from the AIPW scores (nuisances cross-fitted)",
        ),
        target=target,
    )
