"""Prediction-powered inference (PPI++) for the ATE when a few study units carry fresh labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eocausal.debias._checks import check_alpha, design_propensity
from eocausal.errors import ConfigError, InputDataError
from eocausal.estimate.ate import normal_interval
from eocausal.validation import (
    check_clusters,
    check_outcome,
    check_sample_weight,
    check_treatment,
    cluster_codes,
)

__all__ = ["PPIResult", "ppi_ate"]


@dataclass
class PPIResult:
    """Prediction-powered ATE (PPI++) with a few fresh labels.

    Attributes
    ----------
    estimate, std_err, ci_lower, ci_upper : float
        PPI++ point estimate, cluster-robust standard error and normal
        (1 - alpha) interval.
    lam : float
        Power-tuning parameter (0 = labels only, 1 = plain PPI).
    classical, classical_se : float
        The same estimand from the labelled units alone.
    naive : float
        The estimand computed from predictions on all units (biased).
    n_labeled, n_unlabeled, n_clusters : int
    alpha : float
    """

    estimate: float
    std_err: float
    ci_lower: float
    ci_upper: float
    lam: float
    classical: float
    classical_se: float
    naive: float
    n_labeled: int
    n_unlabeled: int
    n_clusters: int
    alpha: float

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return {k: float(v) if isinstance(v, np.floating) else v for k, v in self.__dict__.items()}


def _check_truth(truth, n: int) -> np.ndarray:
    """Measured outcomes with NaN where unlabelled; infinities refused."""
    arr = np.asarray(truth, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise InputDataError(
            f"`truth` must have one entry per unit (NaN where unlabelled): got shape {arr.shape}, "
            f"expected ({n},)."
        )
    bad = np.flatnonzero(np.isinf(arr))
    if bad.size:
        raise InputDataError(
            f"`truth` has infinite values at rows {bad[:5].tolist()}; use NaN for unlabelled units."
        )
    return arr


def _cluster_sums(values: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(inverse, weights=values, minlength=n_groups)


def ppi_ate(
    predicted,
    treatment,
    truth,
    *,
    propensity=None,
    randomized: bool = False,
    clusters=None,
    sample_weight=None,
    alpha: float = 0.05,
    lam: float | None = None,
) -> PPIResult:
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
        Treatment probabilities (known design or estimated). REQUIRED unless
        ``randomized=True``.
    randomized : bool, default=False
        With ``propensity=None``, use the treated share (completely randomised trial).
    clusters : array-like of shape (n,), default=None
        The SE sums the influence function within clusters (factor C/(C−1)).
    sample_weight : array-like of shape (n,), default=None
        Positive unit weights (integer weights = duplicated rows).
    alpha : float, default=0.05
        Interval level.
    lam : float, default=None
        PPI++ power-tuning parameter; ``None`` estimates the variance-minimising
        value (clipped to [0, 1]), 1 gives plain PPI, 0 the labelled units alone.

    Returns
    -------
    PPIResult

    Notes
    -----
    The ATE is the mean of the Horvitz-Thompson pseudo-outcome
    :math:`Z_i = a_i Y_i`, :math:`a_i = W_i/e_i - (1-W_i)/(1-e_i)`, so PPI++
    for a mean applies with :math:`\\hat Z_i = a_i \\hat Y_i`. With labelled
    set :math:`L`, unlabelled set :math:`U` and weighted means
    :math:`\\bar x_S = \\sum_{i\\in S} w_i x_i / \\sum_{i \\in S} w_i`:

    .. math::

        \\hat\\tau(\\lambda) = \\bar Z_L + \\lambda\\,(\\bar{\\hat Z}_U - \\bar{\\hat Z}_L).

    Its influence terms are :math:`A_i - \\lambda B_i` with
    :math:`A_i = w_i (Z_i - \\bar Z_L)/W_L`,
    :math:`B_i = w_i (\\hat Z_i - \\bar{\\hat Z}_L)/W_L` on :math:`L` and
    :math:`A_i = 0`, :math:`B_i = -w_i (\\hat Z_i - \\bar{\\hat Z}_U)/W_U` on
    :math:`U` (:math:`W_S` the weight of :math:`S`). Summed within clusters,

    .. math::

        \\widehat{SE}^2 = \\frac{C}{C-1}\\sum_c (A_c - \\lambda B_c)^2,
        \\qquad \\hat\\lambda = \\mathrm{clip}_{[0,1]}\\Big(\\sum_c A_c B_c \\Big/ \\sum_c B_c^2\\Big),

    which minimises the estimated variance. Without clusters and weights this
    is the PPI++ mean estimator of Angelopoulos, Duchi and Zrnic, with
    :math:`\\hat\\lambda \\approx \\widehat{\\mathrm{Cov}}(Z, \\hat Z) /
    ((1 + n/N)\\widehat{\\mathrm{Var}}(\\hat Z))`, and the SE agrees with
    ``ppi_py.ppi_mean_ci`` up to the factor C/(C−1); ppi-python handles neither
    clusters nor the cluster-summed variance, hence this implementation.
    Horvitz-Thompson rather than Hajek weighting keeps the estimand a plain mean.

    References
    ----------
    Angelopoulos, Duchi, Zrnic (2023), "PPI++: Efficient prediction-powered
    inference", arXiv:2311.01453.
    """
    pred = check_outcome(predicted, name="predicted")
    n_all = pred.size
    T = check_treatment(treatment, n=n_all, name="treatment")
    tru = _check_truth(truth, n_all)
    cl = check_clusters(clusters, n=n_all)
    w = check_sample_weight(sample_weight, n=n_all)
    w = np.ones(n_all) if w is None else w
    e = design_propensity(propensity, randomized, T, w)
    alpha = check_alpha(alpha)
    if lam is not None and not (isinstance(lam, (int, float)) and 0 <= lam <= 1):
        raise ConfigError(f"`lam` must be None or a float in [0, 1]; got {lam!r}.")
    lab = np.isfinite(tru)
    n, n_unl = int(lab.sum()), int((~lab).sum())
    if n < 10 or n_unl < 1:
        raise InputDataError(
            f"ppi_ate needs at least 10 labelled and 1 unlabelled unit; got {n} labelled and "
            f"{n_unl} unlabelled."
        )
    if T[lab].min() == T[lab].max():
        raise InputDataError(
            "the labelled units all sit in one treatment arm; label units in both arms."
        )
    a = T / e - (1 - T) / (1 - e)
    z = np.where(lab, a * np.where(lab, tru, 0.0), 0.0)
    zh = a * pred
    w_l, w_u = w * lab, w * ~lab
    W_L, W_U = w_l.sum(), w_u.sum()
    z_bar = float(w_l @ z / W_L)
    zh_l, zh_u = float(w_l @ zh / W_L), float(w_u @ zh / W_U)
    A = w_l * (z - z_bar) / W_L
    B = w_l * (zh - zh_l) / W_L - w_u * (zh - zh_u) / W_U
    inverse, C = cluster_codes(cl, n_all)
    A_c, B_c = _cluster_sums(A, inverse, C), _cluster_sums(B, inverse, C)
    if lam is None:
        denom = float(B_c @ B_c)
        lam = float(np.clip(A_c @ B_c / denom, 0.0, 1.0)) if denom > 0 else 0.0
    estimate = z_bar + lam * (zh_u - zh_l)
    se = float(np.sqrt(C / (C - 1) * np.sum((A_c - lam * B_c) ** 2)))
    C_l = int(np.unique(inverse[lab]).size)
    classical_se = float(np.sqrt(C_l / max(C_l - 1, 1) * np.sum(A_c**2)))
    lower, upper = normal_interval(float(estimate), se, alpha)
    return PPIResult(
        estimate=float(estimate),
        std_err=se,
        ci_lower=float(lower),
        ci_upper=float(upper),
        lam=float(lam),
        classical=z_bar,
        classical_se=classical_se,
        naive=float(w @ zh / w.sum()),
        n_labeled=n,
        n_unlabeled=n_unl,
        n_clusters=C,
        alpha=alpha,
    )
