"""Average treatment effects: AIPW with cluster-robust SEs, Hajek IPW, overlap diagnostics.

Conventions follow grf: doubly robust scores from out-of-fold nuisances,
targets ``"all"`` (ATE), ``"treated"`` (ATT), ``"control"`` (ATC) and
``"overlap"`` (overlap-weighted ATE), and standard errors that are
cluster-robust (each unit its own cluster when none are given).

References
----------
Robins, Rotnitzky, Zhao (1994); Hahn (1998); Crump, Hotz, Imbens, Mitnik
(2009), "Dealing with limited overlap in estimation of average treatment
effects"; Athey & Wager (2019), "Estimating treatment effects with causal
forests: an application"; grf ``average_treatment_effect``.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from eocausal.errors import InputDataError, OverlapWarning
from eocausal.estimate.validation import (
    check_clusters,
    check_outcome,
    check_propensity,
    check_sample_weight,
    check_treatment,
)

__all__ = [
    "ATEResult",
    "IPWResult",
    "OverlapDiagnostics",
    "aipw_ate",
    "cluster_robust_se",
    "dr_scores",
    "hajek_ipw_ate",
    "overlap_diagnostics",
]

TARGETS = ("all", "treated", "control", "overlap")
_QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def _to_builtin(value):
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_builtin(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass
class ATEResult:
    """An average effect with its standard error and confidence interval.

    Attributes
    ----------
    estimate, std_err, ci_lower, ci_upper : float
    alpha : float
        The interval is ``estimate ± z_{1 - alpha/2} · std_err``.
    target : str
        ``"all"``, ``"treated"``, ``"control"`` or ``"overlap"``.
    method : str
    n_units, n_treated, n_clusters : int
    """

    estimate: float
    std_err: float
    ci_lower: float
    ci_upper: float
    alpha: float
    target: str
    method: str
    n_units: int
    n_treated: int
    n_clusters: int

    @property
    def p_value(self) -> float:
        """Two-sided p-value of ``estimate = 0`` (normal approximation)."""
        if self.std_err <= 0:
            return 0.0 if self.estimate != 0 else 1.0
        return float(2 * stats.norm.sf(abs(self.estimate / self.std_err)))

    def to_dict(self) -> dict:
        """JSON-serialisable dict (floats, ints, strings)."""
        out = _to_builtin(asdict(self))
        out["p_value"] = self.p_value
        return out


@dataclass
class IPWResult(ATEResult):
    """A Hajek IPW effect with bootstrap SE.

    Attributes
    ----------
    n_bootstrap : int
        Replicates used (those where both arms were drawn).
    clip : list of float
        Bounds applied to the propensities.
    n_clipped : int
        Units whose propensity was clipped.
    """

    n_bootstrap: int = 0
    clip: list = field(default_factory=list)
    n_clipped: int = 0


@dataclass
class OverlapDiagnostics:
    """Propensity overlap by arm.

    Attributes
    ----------
    quantiles : list of float
        Probability levels of the quantiles below.
    treated_quantiles, control_quantiles : list of float
        Propensity quantiles among treated / control units.
    ess_treated, ess_control : float
        Kish effective sample size of the inverse-propensity weights in each arm,
        ``(Σ v)² / Σ v²`` with ``v = 1/e`` (treated) or ``1/(1-e)`` (control).
    n_treated, n_control : int
    share_low, share_high : float
        Share of units with ``e <= bounds[0]`` / ``e >= bounds[1]``.
    min, max : float
    bounds : list of float
    ok : bool
        True when no propensity falls outside ``bounds``.
    """

    quantiles: list
    treated_quantiles: list
    control_quantiles: list
    ess_treated: float
    ess_control: float
    n_treated: int
    n_control: int
    share_low: float
    share_high: float
    min: float
    max: float
    bounds: list
    ok: bool

    def to_dict(self) -> dict:
        return _to_builtin(asdict(self))


def _weights(sample_weight, n):
    return np.ones(n) if sample_weight is None else sample_weight


def cluster_robust_se(
    phi: np.ndarray, denominator: float, clusters: np.ndarray | None
) -> tuple[float, int]:
    """Cluster-robust standard error of a ratio estimator.

    Parameters
    ----------
    phi : ndarray of shape (n,)
        Weighted centred scores ``w_i (ψ_i − a_i θ̂)``.
    denominator : float
        ``Σ w_i a_i``.
    clusters : ndarray of shape (n,) or None
        ``None`` makes each unit its own cluster.

    Returns
    -------
    se : float
    n_clusters : int

    Notes
    -----
    .. math:: \\widehat{SE}^2 = \\frac{C}{C-1} \\sum_c \\Big(\\sum_{i \\in c} \\phi_i\\Big)^2 \\Big/ D^2
    """
    if clusters is None:
        sums = phi
    else:
        _, inv = np.unique(clusters, return_inverse=True)
        sums = np.bincount(inv, weights=phi)
    C = len(sums)
    if C < 2:
        raise InputDataError("A standard error needs at least 2 clusters (or units).")
    return float(np.sqrt(np.sum(sums**2) * C / (C - 1)) / abs(denominator)), C


def dr_scores(Y, T, propensity, outcome_hat, effect) -> np.ndarray:
    """Doubly robust (AIPW) scores, grf convention.

    Parameters
    ----------
    Y, T, propensity, outcome_hat, effect : array-like of shape (n,)
        Outcome, binary treatment, out-of-fold ê, m̂ = E[Y|X] and τ̂.

    Returns
    -------
    gamma : ndarray of shape (n,)

    Notes
    -----
    .. math:: \\Gamma_i = \\hat\\tau_i + \\frac{W_i - \\hat e_i}{\\hat e_i (1 - \\hat e_i)}
              \\big(Y_i - \\hat m_i - \\hat\\tau_i (W_i - \\hat e_i)\\big)

    WARNING: ê, m̂ and τ̂ must not have been fitted on unit i (cross-fitting
    or out-of-bag), or the scores are biased toward the fitted model.
    """
    Y = check_outcome(Y)
    n = len(Y)
    T = check_treatment(T, n=n)
    e = check_propensity(propensity, n=n)
    m = check_outcome(outcome_hat, n=n, name="outcome_hat")
    tau = check_outcome(effect, n=n, name="effect")
    r = T - e
    return tau + r / (e * (1 - e)) * (Y - m - tau * r)


def _overlap_warning(e: np.ndarray, bounds=(0.05, 0.95), stacklevel: int = 3) -> None:
    low = int((e <= bounds[0]).sum())
    high = int((e >= bounds[1]).sum())
    if low or high:
        warnings.warn(
            f"Estimated treatment propensities take values between {e.min():.3f} and {e.max():.3f}; "
            f"{low} units have propensity <= {bounds[0]} and {high} have propensity >= {bounds[1]}, "
            "so the inverse weights are large and the estimate may be unstable. Consider "
            "target='overlap' (the overlap-weighted effect), or restricting the analysis to units "
            f"with propensities inside [{bounds[0]}, {bounds[1]}] (Crump et al. 2009) and "
            "reporting the excluded units.",
            OverlapWarning,
            stacklevel=stacklevel,
        )


def aipw_ate(
    Y,
    T,
    propensity,
    *,
    mu0=None,
    mu1=None,
    outcome_hat=None,
    effect=None,
    target: str = "all",
    clusters=None,
    sample_weight=None,
    alpha: float = 0.05,
    warn_overlap: bool = True,
) -> ATEResult:
    """Augmented IPW estimate of an average effect with a cluster-robust SE.

    Give either the arm regressions (``mu0``, ``mu1``) or grf's
    parametrisation (``outcome_hat`` = m̂ = E[Y|X], ``effect`` = τ̂); they are
    linked by μ̂₁ = m̂ + (1 − ê)τ̂ and μ̂₀ = m̂ − ê τ̂.

    Parameters
    ----------
    Y : array-like of shape (n,)
    T : array-like of shape (n,)
        Binary treatment.
    propensity : float or array-like of shape (n,)
        Out-of-fold ê, or the known assignment probability of an RCT.
    mu0, mu1 : array-like of shape (n,), default=None
        Out-of-fold arm regressions.
    outcome_hat, effect : array-like of shape (n,), default=None
        Out-of-fold m̂ and τ̂ (alternative to ``mu0``/``mu1``).
    target : {"all", "treated", "control", "overlap"}, default="all"
    clusters : array-like of shape (n,), default=None
    sample_weight : array-like of shape (n,), default=None
    alpha : float, default=0.05
    warn_overlap : bool, default=True
        Emit :class:`~eocausal.errors.OverlapWarning` when some ê <= 0.05 or
        >= 0.95 (never for ``target="overlap"``).

    Returns
    -------
    ATEResult

    Notes
    -----
    With :math:`\\theta = \\sum_i w_i \\psi_i / \\sum_i w_i a_i`:

    - all: :math:`\\psi = \\Gamma` (see :func:`dr_scores`), :math:`a = 1`;
    - treated: :math:`\\psi = W(Y-\\hat\\mu_0) - (1-W)\\frac{\\hat e}{1-\\hat e}(Y-\\hat\\mu_0)`, :math:`a = W`;
    - control: :math:`\\psi = (1-W)(\\hat\\mu_1 - Y) + W\\frac{1-\\hat e}{\\hat e}(Y-\\hat\\mu_1)`, :math:`a = 1-W`;
    - overlap: :math:`\\psi = \\hat e(1-\\hat e)\\Gamma`, :math:`a = \\hat e(1-\\hat e)`.

    SE² = C/(C−1) · Σ_c (Σ_{i∈c} w_i(ψ_i − a_i θ̂))² / (Σ_i w_i a_i)², which for
    the ATE is the formula of METHODS.md section 2.
    """
    if target not in TARGETS:
        raise InputDataError(f"`target` must be one of {list(TARGETS)}; got {target!r}.")
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    Y = check_outcome(Y)
    n = len(Y)
    T = check_treatment(T, n=n)
    e = check_propensity(propensity, n=n)
    if mu0 is not None and mu1 is not None:
        mu0 = check_outcome(mu0, n=n, name="mu0")
        mu1 = check_outcome(mu1, n=n, name="mu1")
    elif outcome_hat is not None and effect is not None:
        m = check_outcome(outcome_hat, n=n, name="outcome_hat")
        tau = check_outcome(effect, n=n, name="effect")
        mu1 = m + (1 - e) * tau
        mu0 = m - e * tau
    else:
        raise InputDataError(
            "Give the outcome regressions: both `mu0` and `mu1`, or both `outcome_hat` and `effect`."
        )
    clusters = check_clusters(clusters, n=n)
    w = _weights(check_sample_weight(sample_weight, n=n), n)
    if warn_overlap and target != "overlap":
        _overlap_warning(e, stacklevel=3)
    gamma = mu1 - mu0 + T * (Y - mu1) / e - (1 - T) * (Y - mu0) / (1 - e)
    if target == "all":
        psi, a = gamma, np.ones(n)
    elif target == "treated":
        psi = T * (Y - mu0) - (1 - T) * e / (1 - e) * (Y - mu0)
        a = T.astype(np.float64)
    elif target == "control":
        psi = (1 - T) * (mu1 - Y) + T * (1 - e) / e * (Y - mu1)
        a = (1 - T).astype(np.float64)
    else:
        a = e * (1 - e)
        psi = a * gamma
    denom = float(np.sum(w * a))
    if denom <= 0:
        raise InputDataError(f"No units in the target population {target!r}.")
    theta = float(np.sum(w * psi) / denom)
    se, C = cluster_robust_se(w * (psi - a * theta), denom, clusters)
    z = stats.norm.ppf(1 - alpha / 2)
    return ATEResult(
        estimate=theta,
        std_err=se,
        ci_lower=theta - z * se,
        ci_upper=theta + z * se,
        alpha=float(alpha),
        target=target,
        method="AIPW",
        n_units=n,
        n_treated=int(T.sum()),
        n_clusters=C,
    )


def _hajek(Y, T, e, mult):
    """Hajek estimates for each row of multiplicities ``mult`` (B, n)."""
    v1 = mult * (T / e)
    v0 = mult * ((1 - T) / (1 - e))
    s1 = v1.sum(axis=-1)
    s0 = v0.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (v1 @ Y) / s1 - (v0 @ Y) / s0


def hajek_ipw_ate(
    Y,
    T,
    propensity,
    *,
    clip: tuple[float, float] = (1e-3, 1 - 1e-3),
    clusters=None,
    sample_weight=None,
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    seed: int | None = None,
    warn_overlap: bool = True,
) -> IPWResult:
    """Hajek (self-normalised) inverse-propensity-weighted ATE with bootstrap SE.

    Parameters
    ----------
    Y : array-like of shape (n,)
    T : array-like of shape (n,)
    propensity : float or array-like of shape (n,)
        ê (e.g. from :func:`~eocausal.estimate.nuisance.estimate_propensity`) or known.
    clip : (float, float), default=(1e-3, 1 - 1e-3)
        Propensities are clipped to this interval.
    clusters : array-like of shape (n,), default=None
        The bootstrap resamples whole clusters (units when ``None``).
    sample_weight : array-like of shape (n,), default=None
    n_bootstrap : int, default=500
    alpha : float, default=0.05
    seed : int, default=None
    warn_overlap : bool, default=True

    Returns
    -------
    IPWResult
        Normal interval ``estimate ± z · SE`` with SE the bootstrap sd.

    Notes
    -----
    .. math:: \\hat\\tau = \\sum_i v_{1i} Y_i - \\sum_i v_{0i} Y_i,\\quad
              v_1 = \\frac{W/\\hat e}{\\sum W/\\hat e},\\;
              v_0 = \\frac{(1-W)/(1-\\hat e)}{\\sum (1-W)/(1-\\hat e)}

    Each bootstrap replicate draws units (or clusters) with replacement once
    and recomputes both arms' weighted means on that same draw, so the two
    arms are resampled consistently. ê is held fixed (not refitted) across
    replicates; replicates that draw no unit of one arm are discarded.
    """
    Y = check_outcome(Y)
    n = len(Y)
    T = check_treatment(T, n=n)
    e = check_propensity(propensity, n=n)
    lo, hi = float(clip[0]), float(clip[1])
    if not 0.0 < lo < hi < 1.0:
        raise InputDataError(f"`clip` must satisfy 0 < low < high < 1; got {clip!r}.")
    if int(n_bootstrap) < 2:
        raise InputDataError(f"`n_bootstrap` must be >= 2; got {n_bootstrap!r}.")
    if warn_overlap:
        _overlap_warning(e, stacklevel=3)
    n_clipped = int(((e < lo) | (e > hi)).sum())
    e = np.clip(e, lo, hi)
    clusters = check_clusters(clusters, n=n)
    w = _weights(check_sample_weight(sample_weight, n=n), n)
    if T.sum() == 0 or T.sum() == n:
        raise InputDataError("Hajek IPW needs units in both arms.")
    estimate = float(_hajek(Y, T, e, w[None, :])[0])
    if clusters is None:
        inv = np.arange(n)
        C = n
    else:
        _, inv = np.unique(clusters, return_inverse=True)
        C = int(inv.max()) + 1
    rng = np.random.default_rng(seed)
    reps = []
    chunk = max(1, min(int(n_bootstrap), 2_000_000 // max(n, 1)))
    left = int(n_bootstrap)
    while left > 0:
        b = min(chunk, left)
        counts = rng.multinomial(C, np.full(C, 1.0 / C), size=b).astype(np.float64)
        reps.append(_hajek(Y, T, e, counts[:, inv] * w[None, :]))
        left -= b
    reps = np.concatenate(reps)
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        raise InputDataError(
            "Too few usable bootstrap replicates; are both arms present in several clusters?"
        )
    se = float(np.std(reps, ddof=1))
    z = stats.norm.ppf(1 - alpha / 2)
    return IPWResult(
        estimate=estimate,
        std_err=se,
        ci_lower=estimate - z * se,
        ci_upper=estimate + z * se,
        alpha=float(alpha),
        target="all",
        method="Hajek IPW",
        n_units=n,
        n_treated=int(T.sum()),
        n_clusters=C,
        n_bootstrap=int(reps.size),
        clip=[lo, hi],
        n_clipped=n_clipped,
    )


def _ess(v: np.ndarray) -> float:
    return float(v.sum() ** 2 / np.sum(v**2)) if v.size else 0.0


def overlap_diagnostics(
    propensity, T, *, bounds: tuple[float, float] = (0.05, 0.95), warn: bool = True
) -> OverlapDiagnostics:
    """Summarise propensity overlap by arm; warn when some fall outside ``bounds``.

    Parameters
    ----------
    propensity : array-like of shape (n,)
    T : array-like of shape (n,)
    bounds : (float, float), default=(0.05, 0.95)
    warn : bool, default=True
        Emit :class:`~eocausal.errors.OverlapWarning` with the observed range and a remedy.

    Returns
    -------
    OverlapDiagnostics
    """
    T = check_treatment(T)
    n = len(T)
    e = check_propensity(propensity, n=n)
    e1, e0 = e[T == 1], e[T == 0]

    def q(x):
        return np.quantile(x, _QUANTILES).tolist() if x.size else [float("nan")] * len(_QUANTILES)

    low = e <= bounds[0]
    high = e >= bounds[1]
    if warn:
        _overlap_warning(e, bounds, stacklevel=3)
    return OverlapDiagnostics(
        quantiles=list(_QUANTILES),
        treated_quantiles=q(e1),
        control_quantiles=q(e0),
        ess_treated=_ess(1.0 / e1),
        ess_control=_ess(1.0 / (1.0 - e0)),
        n_treated=int(e1.size),
        n_control=int(e0.size),
        share_low=float(low.mean()),
        share_high=float(high.mean()),
        min=float(e.min()),
        max=float(e.max()),
        bounds=[float(bounds[0]), float(bounds[1])],
        ok=not bool(low.any() or high.any()),
    )
