"""Average treatment effects: AIPW and Hajek IPW with cluster-robust SEs, overlap diagnostics.

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
from eocausal.validation import (
    check_clusters,
    check_features,
    check_outcome,
    check_propensity,
    check_sample_weight,
    check_treatment,
    cluster_codes,
)

__all__ = [
    "ATEResult",
    "IPWResult",
    "OverlapDiagnostics",
    "aipw_ate",
    "cluster_robust_se",
    "dr_scores",
    "hajek_ipw_ate",
    "hajek_weights",
    "normal_interval",
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
    """A Hajek IPW effect with its standard error.

    Attributes
    ----------
    n_bootstrap : int
        Bootstrap replicates used (those where both arms were drawn); 0 for
        the influence-function SE.
    clip : list of float
        Bounds applied to the propensities.
    n_clipped : int
        Units whose propensity was clipped.
    se_method : str
        ``"influence"`` (ê treated as known), ``"influence, propensity
        estimated"`` (projected on the logistic scores) or ``"bootstrap"``.
    """

    n_bootstrap: int = 0
    clip: list = field(default_factory=list)
    n_clipped: int = 0
    se_method: str = "influence"


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


def normal_interval(estimate, std_err, alpha: float):
    """``estimate ± z_{1 - alpha/2} · std_err``: the normal (1 − alpha) interval, as (lower, upper).

    Works elementwise on arrays.
    """
    z = stats.norm.ppf(1 - alpha / 2)
    return estimate - z * std_err, estimate + z * std_err


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
    inv, C = cluster_codes(clusters, len(phi))
    sums = np.bincount(inv, weights=phi, minlength=C)
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
    lower, upper = normal_interval(theta, se, alpha)
    return ATEResult(
        estimate=theta,
        std_err=se,
        ci_lower=lower,
        ci_upper=upper,
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


def _check_clip(clip) -> tuple[float, float]:
    lo, hi = float(clip[0]), float(clip[1])
    if not 0.0 < lo < hi < 1.0:
        raise InputDataError(
            f"`clip` must satisfy 0 < low < high < 1; got {clip!r}. The default (1e-3, 1 - 1e-3) "
            "only guards against division by zero."
        )
    return lo, hi


def _arm_weights(T, e, w) -> tuple[np.ndarray, np.ndarray]:
    """Normalised Hajek weights of each arm, ``v1`` and ``v0``, each summing to one."""
    a1 = w * T / e
    a0 = w * (1 - T) / (1 - e)
    s1, s0 = a1.sum(), a0.sum()
    if s1 <= 0 or s0 <= 0:
        raise InputDataError(
            "Hajek IPW needs units in both arms; `T` holds only "
            f"{'treated' if s0 <= 0 else 'control'} units."
        )
    return a1 / s1, a0 / s0


def hajek_weights(
    T,
    propensity,
    *,
    sample_weight=None,
    clip: tuple[float, float] = (1e-3, 1 - 1e-3),
) -> np.ndarray:
    """Signed Hajek IPW weights: the estimate is linear in the outcome, ``τ̂ = v @ Y``.

    Parameters
    ----------
    T : array-like of shape (n,)
        Binary treatment.
    propensity : float or array-like of shape (n,)
        Known or estimated P(W = 1 | X); clipped to ``clip``.
    sample_weight : array-like of shape (n,), default=None
    clip : (float, float), default=(1e-3, 1 - 1e-3)

    Returns
    -------
    v : ndarray of shape (n,)
        :math:`v_i = v_{1i} - v_{0i}`; the treated weights sum to 1, the
        control weights to -1.

    Notes
    -----
    Useful when the same design is applied to many outcome vectors (for
    instance outcomes recomputed in a bootstrap of a calibration set):
    ``Ystack @ v`` gives every estimate at once.

    Examples
    --------
    >>> import numpy as np
    >>> v = hajek_weights([1, 1, 0, 0], 0.5)
    >>> float(v @ np.array([3.0, 1.0, 1.0, 0.0]))
    1.5
    """
    T = check_treatment(T)
    n = len(T)
    e = np.clip(check_propensity(propensity, n=n), *_check_clip(clip))
    w = _weights(check_sample_weight(sample_weight, n=n), n)
    v1, v0 = _arm_weights(T, e, w)
    return v1 - v0


def _hajek_influence(Y, T, e, w, features):
    """Estimate, per-unit influence terms φ (``τ̂ − τ ≈ Σφ / Σw``) and whether φ was projected."""
    v1, v0 = _arm_weights(T, e, w)
    mu1, mu0 = float(v1 @ Y), float(v0 @ Y)
    phi = w.sum() * (v1 * (Y - mu1) - v0 * (Y - mu0))
    if features is not None:
        # M-estimation correction for a logistic propensity fitted on `features`
        # (with the same weights): residual of a weighted least-squares projection of the
        # unweighted influence u = φ / w on the logistic scores r = x (W − ê).
        x = np.column_stack([np.ones(len(Y)), features])
        r = x * (T - e)[:, None]
        u = phi / w
        sw = np.sqrt(w)
        beta = np.linalg.lstsq(r * sw[:, None], u * sw, rcond=None)[0]
        phi = w * (u - r @ beta)
    return mu1 - mu0, phi


def hajek_ipw_ate(
    Y,
    T,
    propensity,
    *,
    clip: tuple[float, float] = (1e-3, 1 - 1e-3),
    clusters=None,
    sample_weight=None,
    propensity_features=None,
    se: str = "influence",
    n_bootstrap: int = 500,
    alpha: float = 0.05,
    seed: int | None = None,
    warn_overlap: bool = True,
) -> IPWResult:
    """Hajek (self-normalised) inverse-propensity-weighted ATE with a cluster-robust SE.

    Parameters
    ----------
    Y : array-like of shape (n,)
    T : array-like of shape (n,)
    propensity : float or array-like of shape (n,)
        Known assignment probabilities, or ê (e.g. from
        :func:`~eocausal.estimate.nuisance.estimate_propensity`).
    clip : (float, float), default=(1e-3, 1 - 1e-3)
        Propensities are clipped to this interval.
    clusters : array-like of shape (n,), default=None
        Units sharing a label are summed before squaring (influence SE) or
        resampled together (bootstrap); each unit is its own cluster when ``None``.
    sample_weight : array-like of shape (n,), default=None
        Positive unit weights; integer weights are equivalent to duplicated rows.
    propensity_features : array-like of shape (n, q), default=None
        The features ê was estimated from by a logistic regression (with the
        same ``sample_weight``). When given, the SE accounts for the estimation
        of ê (see Notes); without them ê is treated as known.
    se : {"influence", "bootstrap"}, default="influence"
        ``"influence"``: the cluster-robust sandwich SE below (recommended,
        deterministic). ``"bootstrap"``: SD of ``n_bootstrap`` cluster
        bootstrap replicates with ê held fixed (cannot be combined with
        ``propensity_features``).
    n_bootstrap : int, default=500
        Used only with ``se="bootstrap"``.
    alpha : float, default=0.05
    seed : int, default=None
        Seeds the bootstrap.
    warn_overlap : bool, default=True

    Returns
    -------
    IPWResult
        Normal interval ``estimate ± z_{1-α/2} · std_err``; ``se_method`` says
        which SE was computed.

    Notes
    -----
    With weights :math:`w_i` and
    :math:`v_{1i} = \\frac{w_i W_i/\\hat e_i}{\\sum_j w_j W_j/\\hat e_j}`,
    :math:`v_{0i} = \\frac{w_i (1-W_i)/(1-\\hat e_i)}{\\sum_j w_j (1-W_j)/(1-\\hat e_j)}`:

    .. math::

        \\hat\\tau = \\hat\\mu_1 - \\hat\\mu_0 = \\sum_i v_{1i} Y_i - \\sum_i v_{0i} Y_i,
        \\qquad \\phi_i = \\Big(\\sum_j w_j\\Big)\\big[v_{1i}(Y_i - \\hat\\mu_1) - v_{0i}(Y_i - \\hat\\mu_0)\\big],

        \\widehat{SE}^2 = \\frac{C}{C-1} \\sum_c \\Big(\\sum_{i \\in c} \\phi_i\\Big)^2 \\Big/ \\Big(\\sum_i w_i\\Big)^2,

    the same small-sample factor as :func:`aipw_ate` and :func:`cluster_robust_se`.

    Estimated propensities: for ê from a logistic regression on features
    :math:`x_i` (an intercept is added), pass them as ``propensity_features``;
    φ is then replaced by its residual from the weighted least-squares
    projection on the logistic scores :math:`s_i = x_i (W_i - \\hat e_i)`,

    .. math::

        u_i = \\phi_i / w_i, \\qquad
        \\hat B = \\Big(\\sum_i w_i u_i s_i^\\top\\Big)\\Big(\\sum_i w_i s_i s_i^\\top\\Big)^{-1},
        \\qquad \\phi_i^{\\text{adj}} = w_i\\,(u_i - \\hat B s_i),

    the M-estimation correction for a fitted logistic propensity (Hirano,
    Imbens, Ridder 2003; Lunceford, Davidian 2004). Estimating ê *reduces*
    the variance of IPW, so the known-ê SE is conservative there: in
    ``benchmarks/inference.py`` (logistic ê) the projected SE covers at the
    nominal rate and the known-ê SE over-covers. The projection is exact for
    an unpenalised logistic fit on the same units; for cross-fitted or
    penalised fits (``estimate_propensity``) it is an approximation.

    The bootstrap draws units (or clusters) with replacement and recomputes
    both arms' weighted means on the same draw; ê is held fixed; replicates
    that draw no unit of one arm are discarded.

    References
    ----------
    Hirano, Imbens, Ridder (2003), "Efficient estimation of average treatment
    effects using the estimated propensity score", Econometrica 71(4).
    Lunceford, Davidian (2004), "Stratification and weighting via the
    propensity score in estimation of causal treatment effects", Statistics
    in Medicine 23(19).
    """
    Y = check_outcome(Y)
    n = len(Y)
    T = check_treatment(T, n=n)
    e = check_propensity(propensity, n=n)
    lo, hi = _check_clip(clip)
    if se not in ("influence", "bootstrap"):
        raise InputDataError(f"`se` must be 'influence' or 'bootstrap'; got {se!r}.")
    features = None
    if propensity_features is not None:
        if se == "bootstrap":
            raise InputDataError(
                "se='bootstrap' holds the propensity fixed and cannot account for "
                "`propensity_features`; use se='influence' (projected influence function)."
            )
        features = check_features(propensity_features, n=n, name="propensity_features")
        if features.shape[1] + 1 >= n:
            raise InputDataError(
                f"`propensity_features` has {features.shape[1]} columns for {n} units; the "
                "projection needs far fewer columns than units (reduce them, e.g. by PCA)."
            )
    if se == "bootstrap" and int(n_bootstrap) < 2:
        raise InputDataError(f"`n_bootstrap` must be >= 2; got {n_bootstrap!r}.")
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    if warn_overlap:
        _overlap_warning(e, stacklevel=3)
    n_clipped = int(((e < lo) | (e > hi)).sum())
    e = np.clip(e, lo, hi)
    clusters = check_clusters(clusters, n=n)
    w = _weights(check_sample_weight(sample_weight, n=n), n)
    estimate, phi = _hajek_influence(Y, T, e, w, features)
    if se == "influence":
        std_err, C = cluster_robust_se(phi, w.sum(), clusters)
        used = 0
        se_method = "influence, propensity estimated" if features is not None else "influence"
    else:
        std_err, C, used = _hajek_bootstrap_se(Y, T, e, w, clusters, int(n_bootstrap), seed)
        se_method = "bootstrap"
    lower, upper = normal_interval(float(estimate), std_err, alpha)
    return IPWResult(
        estimate=float(estimate),
        std_err=std_err,
        ci_lower=float(lower),
        ci_upper=float(upper),
        alpha=float(alpha),
        target="all",
        method="Hajek IPW",
        n_units=n,
        n_treated=int(T.sum()),
        n_clusters=C,
        n_bootstrap=used,
        clip=[lo, hi],
        n_clipped=n_clipped,
        se_method=se_method,
    )


def _hajek_bootstrap_se(Y, T, e, w, clusters, n_bootstrap, seed) -> tuple[float, int, int]:
    """Cluster bootstrap SD of the Hajek estimate (ê fixed): (se, n_clusters, replicates used)."""
    n = len(Y)
    inv, C = cluster_codes(clusters, n)
    rng = np.random.default_rng(seed)
    reps = []
    chunk = max(1, min(n_bootstrap, 2_000_000 // max(n, 1)))
    left = n_bootstrap
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
    return float(np.std(reps, ddof=1)), C, int(reps.size)


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
