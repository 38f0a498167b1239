"""Panels of units × periods: two-way fixed effects, and propensity-weighted DiD for placement.

Used for programme-placement studies on (imputed) outcome panels: a unit is
observed in several periods, and the treatment indicator switches on when the
programme reaches it. :func:`twfe` fits one TWFE regression with
cluster-robust SEs (linearmodels); :func:`panel_effects` compares, on a block
design, the unweighted TWFE with two estimators that use image-based
propensities of being reached (Abadie 2005).

References
----------
Abadie (2005), "Semiparametric difference-in-differences estimators", Review of
Economic Studies. Goodman-Bacon (2021), "Difference-in-differences with
variation in treatment timing", Journal of Econometrics. Sant'Anna & Zhao
(2020), "Doubly robust difference-in-differences estimators".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from linearmodels.panel import PanelOLS
from scipy import stats

from eocausal.errors import EstimationError, InputDataError, OverlapWarning
from eocausal.estimate.ate import hajek_ipw_ate, normal_interval

__all__ = [
    "BlockPanel",
    "PanelEffect",
    "PanelEffects",
    "PanelResult",
    "check_block_panel",
    "panel_effects",
    "twfe",
]


@dataclass
class PanelResult:
    """The TWFE treatment coefficient and its cluster-robust inference.

    Attributes
    ----------
    estimate, std_err, ci_lower, ci_upper, p_value : float
    alpha : float
    n_obs, n_units, n_periods, n_clusters : int
    cluster : str
        What the SEs cluster on (``"unit"`` or the cluster column).
    covariates : list of str
    """

    estimate: float
    std_err: float
    ci_lower: float
    ci_upper: float
    p_value: float
    alpha: float
    n_obs: int
    n_units: int
    n_periods: int
    n_clusters: int
    cluster: str
    covariates: list

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, (np.floating, np.integer)):
                out[key] = value.item()
        return out


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"Panel frame lacks columns {missing}; available: {list(frame.columns)}."
        )


def _checked_long(
    frame: pd.DataFrame,
    needed: Sequence[str],
    numeric: Sequence[str],
    *,
    unit_col: str,
    time_col: str,
) -> pd.DataFrame:
    """The ``needed`` columns of a long panel: numeric, finite, one row per (unit, period)."""
    _require_columns(frame, needed)
    data = frame[list(dict.fromkeys(needed))].copy()
    for col in numeric:
        if not pd.api.types.is_numeric_dtype(data[col]):
            raise InputDataError(
                f"Panel column {col!r} must be numeric; got dtype {data[col].dtype}."
            )
        bad = ~np.isfinite(data[col].to_numpy(dtype=np.float64))
        if bad.any():
            rows = data.loc[bad, [unit_col, time_col]].head(5).to_records(index=False).tolist()
            raise InputDataError(
                f"Panel column {col!r} has NaN or infinite values at (unit, period) {rows}"
                f"{' and more' if bad.sum() > 5 else ''}; drop or impute them first."
            )
    dup = data.duplicated([unit_col, time_col], keep=False)
    if dup.any():
        rows = (
            data.loc[dup, [unit_col, time_col]]
            .drop_duplicates()
            .head(5)
            .to_records(index=False)
            .tolist()
        )
        raise InputDataError(
            f"The panel has more than one row per (unit, period), e.g. {rows}; "
            "aggregate them first."
        )
    return data


def twfe(
    frame: pd.DataFrame,
    *,
    unit_col: str,
    time_col: str,
    treatment_col: str,
    outcome_col: str,
    covariate_cols: Sequence[str] | None = None,
    cluster_col: str | None = None,
    weight_col: str | None = None,
    alpha: float = 0.05,
) -> PanelResult:
    """Two-way fixed-effects regression of the outcome on the treatment indicator.

    Parameters
    ----------
    frame : DataFrame
        Long panel: one row per (unit, period).
    unit_col, time_col : str
        Unit identifier and period columns.
    treatment_col : str
        Treatment indicator (or dose) in that period.
    outcome_col : str
    covariate_cols : list of str, default=None
        Time-varying covariates.
    cluster_col : str, default=None
        Cluster labels for the SEs; ``None`` clusters by unit.
    weight_col : str, default=None
    alpha : float, default=0.05

    Returns
    -------
    PanelResult

    Notes
    -----
    .. math:: Y_{it} = \\alpha_i + \\gamma_t + \\beta D_{it} + X_{it}'\\delta + \\varepsilon_{it}

    fitted by ``linearmodels.panel.PanelOLS(entity_effects=True,
    time_effects=True)`` with ``cov_type="clustered"``. When the units are
    nested in the clusters (always when clustering by unit) the unit effects
    are not counted as parameters and the covariance is scaled by
    :math:`\\frac{G}{G-1}\\frac{N-1}{N-K}` (Stata's ``xtreg, fe vce(cluster)``);
    counting them would inflate the SE by about :math:`\\sqrt{T/(T-1)}`. β is the ATT only
    under parallel trends and, with staggered adoption, homogeneous effects
    (Goodman-Bacon 2021); report it as a TWFE coefficient.
    """
    covariate_cols = list(covariate_cols or [])
    needed = [unit_col, time_col, treatment_col, outcome_col, *covariate_cols]
    if cluster_col is not None:
        needed.append(cluster_col)
    if weight_col is not None:
        needed.append(weight_col)
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    numeric = [treatment_col, outcome_col, *covariate_cols] + ([weight_col] if weight_col else [])
    data = _checked_long(frame, needed, numeric, unit_col=unit_col, time_col=time_col)
    if data[treatment_col].nunique() < 2:
        raise InputDataError(
            f"Treatment column {treatment_col!r} does not vary; TWFE has nothing to estimate."
        )
    data[unit_col] = data[unit_col].astype(str)
    indexed = data.set_index([unit_col, time_col])
    exog = indexed[[treatment_col, *covariate_cols]].astype(np.float64)
    weights = indexed[weight_col] if weight_col else None
    model = PanelOLS(
        indexed[outcome_col].astype(np.float64),
        exog,
        entity_effects=True,
        time_effects=True,
        weights=weights,
        drop_absorbed=False,
        check_rank=True,
    )
    if cluster_col is None:
        cov = {"cov_type": "clustered", "cluster_entity": True}
        n_clusters = data[unit_col].nunique()
        cluster_name = "unit"
        nested = True
    else:
        codes = pd.factorize(indexed[cluster_col])[0]
        cov = {
            "cov_type": "clustered",
            "clusters": pd.Series(codes, index=indexed.index, name="cluster"),
        }
        n_clusters = int(codes.max()) + 1
        cluster_name = cluster_col
        nested = bool((data.groupby(unit_col)[cluster_col].nunique() == 1).all())
    if n_clusters < 2:
        raise InputDataError("Cluster-robust SEs need at least 2 clusters.")
    if nested:
        # Unit effects nested in the clusters cost no degrees of freedom (Stata's xtreg, fe).
        cov.update(auto_df=False, count_effects=False, group_debias=True)
    try:
        res = model.fit(**cov)
    except (ValueError, np.linalg.LinAlgError) as err:
        raise EstimationError(
            f"TWFE fit failed ({err}); the treatment may be collinear with the unit and period "
            "effects (e.g. treated in every period, or adopted by all units at once)."
        ) from err
    beta = float(res.params[treatment_col])
    se = float(res.std_errors[treatment_col])
    lower, upper = normal_interval(beta, se, alpha)
    p = float(2 * stats.norm.sf(abs(beta / se))) if se > 0 else float("nan")
    return PanelResult(
        estimate=beta,
        std_err=se,
        ci_lower=lower,
        ci_upper=upper,
        p_value=p,
        alpha=float(alpha),
        n_obs=int(res.nobs),
        n_units=int(data[unit_col].nunique()),
        n_periods=int(data[time_col].nunique()),
        n_clusters=int(n_clusters),
        cluster=cluster_name,
        covariates=covariate_cols,
    )


# --------------------------------------------------------------------------- block design
_SHOW = 5
_OVERLAP_HIGH = 0.95


def _names(ids: Sequence) -> str:
    ids = list(ids)
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return ", ".join(repr(str(i)) for i in ids[:_SHOW]) + more


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


class BlockPanel(NamedTuple):
    """A balanced block-design panel as unit × period matrices (see :func:`check_block_panel`).

    Attributes
    ----------
    units : ndarray of shape (n,)
        Unit ids as strings, sorted.
    periods : ndarray of shape (T,)
        Period labels, sorted.
    Y : ndarray of shape (n, T)
        Outcome.
    D : ndarray of shape (n, T)
        Treatment indicator (0/1).
    ever_treated : ndarray of shape (n,)
        :math:`G_i = \\max_t D_{it}`.
    adoption_index : int
        Index into ``periods`` of the common adoption period :math:`t_0`.
    clusters : ndarray of shape (n,) or None
    weights : ndarray of shape (n,) or None
    """

    units: np.ndarray
    periods: np.ndarray
    Y: np.ndarray
    D: np.ndarray
    ever_treated: np.ndarray
    adoption_index: int
    clusters: np.ndarray | None
    weights: np.ndarray | None


def _per_unit(data: pd.DataFrame, col: str, unit_col: str, what: str) -> pd.Series:
    """One value of ``col`` per unit (sorted by unit); error if it varies within a unit."""
    varies = data.groupby(unit_col)[col].nunique(dropna=False) > 1
    if varies.any():
        raise InputDataError(
            f"Column {col!r} ({what}) must be constant within each unit; it varies within units "
            f"{_names(varies.index[varies])}. Give every unit one value."
        )
    return data.groupby(unit_col)[col].first()


def check_block_panel(
    frame: pd.DataFrame,
    *,
    unit_col: str,
    time_col: str,
    treatment_col: str,
    outcome_col: str,
    cluster_col: str | None = None,
    weight_col: str | None = None,
) -> BlockPanel:
    """Check a long panel with one common adoption period and return it as matrices.

    Parameters
    ----------
    frame : DataFrame
        Long panel: one row per (unit, period).
    unit_col, time_col, treatment_col, outcome_col : str
    cluster_col : str, default=None
        Cluster labels, constant within a unit.
    weight_col : str, default=None
        Positive sampling weights, constant within a unit.

    Returns
    -------
    BlockPanel

    Raises
    ------
    InputDataError
        Missing columns, non-numeric or non-finite values, duplicate (unit,
        period) rows, a non-binary treatment, an unbalanced panel, a treatment
        that switches off, staggered adoption, adoption in the first period,
        fewer than 2 ever-treated or never-treated units, or clusters/weights
        that vary within a unit (the message names the units and the fix).
    """
    needed = [unit_col, time_col, treatment_col, outcome_col]
    needed += [c for c in (cluster_col, weight_col) if c is not None]
    numeric = [treatment_col, outcome_col] + ([weight_col] if weight_col else [])
    data = _checked_long(frame, needed, numeric, unit_col=unit_col, time_col=time_col)
    data[unit_col] = data[unit_col].astype(str)
    d_values = data[treatment_col].to_numpy(dtype=np.float64)
    bad = (d_values != 0.0) & (d_values != 1.0)
    if bad.any():
        rows = data.loc[bad, [unit_col, time_col]].head(_SHOW).to_records(index=False).tolist()
        raise InputDataError(
            f"Treatment column {treatment_col!r} must be 0/1 (1 in the periods after the "
            f"programme reached the unit); got values {sorted(set(d_values[bad]))[:_SHOW]} at "
            f"(unit, period) {rows}. Recode the treatment."
        )
    wide_y = data.pivot(index=unit_col, columns=time_col, values=outcome_col).sort_index()
    wide_y = wide_y.reindex(columns=sorted(wide_y.columns))
    gaps = wide_y.isna()
    if gaps.to_numpy().any():
        short = gaps.any(axis=1)
        raise InputDataError(
            f"The panel is unbalanced: {int(short.sum())} of {len(wide_y)} units lack some of the "
            f"{wide_y.shape[1]} periods (units {_names(wide_y.index[short])}). panel_effects needs "
            "every unit in every period; drop these units (or fill their outcomes) first."
        )
    wide_d = data.pivot(index=unit_col, columns=time_col, values=treatment_col)
    D = wide_d.reindex(index=wide_y.index, columns=wide_y.columns).to_numpy(dtype=np.int64)
    units = wide_y.index.to_numpy().astype(str)
    periods = wide_y.columns.to_numpy()
    off = (np.diff(D, axis=1) < 0).any(axis=1)
    if off.any():
        raise InputDataError(
            f"The treatment switches off (1 then 0) for units {_names(units[off])}; "
            "panel_effects assumes a programme stays once it reached a unit. Code those units "
            "as treated from their first treated period on, or drop them."
        )
    G = D.max(axis=1)
    n1, n0 = int(G.sum()), int(len(G) - G.sum())
    if min(n1, n0) < 2:
        raise InputDataError(
            f"panel_effects needs at least 2 ever-treated and 2 never-treated units; got {n1} "
            f"and {n0} in {treatment_col!r}."
        )
    first = D[G == 1].argmax(axis=1)
    if np.unique(first).size > 1:
        counts = pd.Series(periods[first]).value_counts().sort_index()
        cohorts = {_scalar(k): int(v) for k, v in counts.items()}
        raise InputDataError(
            f"Adoption is staggered: ever-treated units are first treated in several periods "
            f"(period: units) {cohorts}. panel_effects needs one common adoption period; "
            "analyse one adoption cohort against the never-treated units, or use `twfe` and "
            "report its coefficient as a weighted average of comparisons (Goodman-Bacon 2021)."
        )
    t0 = int(first[0])
    if t0 == 0:
        raise InputDataError(
            f"Every ever-treated unit is treated from the first period ({_scalar(periods[0])!r}); "
            "a difference-in-differences needs at least one period before adoption."
        )
    clusters = None
    if cluster_col is not None:
        per_unit = _per_unit(data, cluster_col, unit_col, "clusters")
        if per_unit.isna().any():
            raise InputDataError(
                f"Column {cluster_col!r} has missing cluster labels for units "
                f"{_names(per_unit.index[per_unit.isna()])}; give every unit a cluster."
            )
        clusters = per_unit.reindex(units).astype(str).to_numpy()
    weights = None
    if weight_col is not None:
        per_unit = _per_unit(data, weight_col, unit_col, "sampling weights")
        weights = per_unit.reindex(units).to_numpy(dtype=np.float64)
        if (weights <= 0).any():
            raise InputDataError(
                f"Column {weight_col!r} must be positive; got values <= 0 for units "
                f"{_names(units[weights <= 0])}. Drop zero-weight units instead."
            )
    return BlockPanel(
        units=units,
        periods=periods,
        Y=wide_y.to_numpy(dtype=np.float64),
        D=D,
        ever_treated=G,
        adoption_index=t0,
        clusters=clusters,
        weights=weights,
    )


def _unit_propensity(propensity, units: np.ndarray) -> np.ndarray:
    """Per-unit probabilities of ever being treated, aligned with ``units``; strictly in (0, 1)."""
    if isinstance(propensity, Mapping) and not isinstance(propensity, pd.Series):
        propensity = pd.Series(dict(propensity))
    if not isinstance(propensity, pd.Series):
        raise InputDataError(
            "`propensity` must be a pandas Series indexed by unit id (one probability of ever "
            f"being treated per unit); got {type(propensity).__name__}. Build it with "
            "pd.Series(e_hat, index=unit_ids)."
        )
    index = propensity.index.astype(str)
    if index.has_duplicates:
        raise InputDataError(
            "`propensity` has several values for units "
            f"{_names(index[index.duplicated()].unique())}; give one value per unit."
        )
    try:
        values = pd.Series(propensity.to_numpy(dtype=np.float64), index=index)
    except (TypeError, ValueError):
        raise InputDataError(
            f"`propensity` must be numeric; got dtype {propensity.dtype}."
        ) from None
    e = values.reindex(units).to_numpy()
    missing = ~np.isfinite(e)
    if missing.any():
        raise InputDataError(
            f"`propensity` has no finite value for {int(missing.sum())} of {len(units)} units "
            f"({_names(units[missing])}); estimate it for every unit of the panel, or drop "
            "those units from `frame`."
        )
    outside = (e <= 0.0) | (e >= 1.0)
    if outside.any():
        raise InputDataError(
            f"`propensity` must lie strictly between 0 and 1; got {e[outside][:_SHOW].tolist()} "
            f"for units {_names(units[outside])}. A unit with propensity 0 or 1 has no "
            "comparable unit in the other arm: drop it (trimming, Crump et al. 2009) or "
            "regularise the propensity model."
        )
    return e


@dataclass
class PanelEffect:
    """One row of :class:`PanelEffects`.

    Attributes
    ----------
    method : {"twfe", "twfe_ipw", "did_ipw"}
    estimand : str
        What the row estimates, and under which assumption.
    estimate, std_err, ci_lower, ci_upper, p_value : float
    se_method : str
        ``"cluster-robust"`` (analytic, linearmodels) or ``"cluster bootstrap"``.
    n_units, n_obs, n_clusters : int
    """

    method: str
    estimand: str
    estimate: float
    std_err: float
    ci_lower: float
    ci_upper: float
    p_value: float
    se_method: str
    n_units: int
    n_obs: int
    n_clusters: int

    def to_dict(self) -> dict:
        return {k: _scalar(v) for k, v in asdict(self).items()}


@dataclass
class PanelEffects:
    """Unweighted TWFE, propensity-weighted TWFE and DiD-IPW on one block-design panel.

    Attributes
    ----------
    effects : list of PanelEffect
        Rows ``"twfe"``, ``"twfe_ipw"``, ``"did_ipw"``, in that order; index by
        method name with ``result["did_ipw"]``.
    alpha : float
    n_units, n_treated, n_control, n_periods, n_pre, n_post : int
    adoption_period : int, float or str
        The period label :math:`t_0`.
    cluster : str
        What the SEs cluster on (``"unit"`` or the cluster column).
    clip : list of float
        Bounds applied to the propensities.
    n_clipped : int
        Units whose propensity was clipped.
    propensity_min_treated, propensity_max_control : float
        Smallest propensity among ever-treated units; largest among never-treated units.
    ess_control : float
        Kish effective sample size of the never-treated units under the ATT
        weights, :math:`(\\sum r_i)^2 / \\sum r_i^2`.
    """

    effects: list
    alpha: float
    n_units: int
    n_treated: int
    n_control: int
    n_periods: int
    n_pre: int
    n_post: int
    adoption_period: int | float | str
    cluster: str
    clip: list
    n_clipped: int
    propensity_min_treated: float
    propensity_max_control: float
    ess_control: float

    def __getitem__(self, method: str) -> PanelEffect:
        for row in self.effects:
            if row.method == method:
                return row
        raise KeyError(f"no row {method!r}; rows are {[r.method for r in self.effects]}")

    def to_frame(self) -> pd.DataFrame:
        """One row per method."""
        return pd.DataFrame([row.to_dict() for row in self.effects])

    def to_dict(self) -> dict:
        """JSON-serialisable dict (floats, ints, strings)."""
        out = {k: _scalar(v) for k, v in asdict(self).items() if k != "effects"}
        out["effects"] = [row.to_dict() for row in self.effects]
        return out


_ESTIMANDS = {
    "twfe": "ATT if untreated trends are parallel without adjustment",
    "twfe_ipw": "ATT if untreated trends are parallel given the propensity's features",
    "did_ipw": "ATT if untreated trends are parallel given the propensity's features",
}


def panel_effects(
    frame: pd.DataFrame,
    *,
    unit_col: str,
    time_col: str,
    treatment_col: str,
    outcome_col: str,
    propensity: pd.Series | Mapping,
    cluster_col: str | None = None,
    weight_col: str | None = None,
    clip: tuple[float, float] = (1e-3, 1 - 1e-3),
    n_bootstrap: int = 500,
    seed: int | None = None,
    alpha: float = 0.05,
) -> PanelEffects:
    """ATT of a programme on a block-design panel: TWFE, and two propensity-weighted DiDs.

    Parameters
    ----------
    frame : DataFrame
        Long, balanced panel: one row per (unit, period), every unit in every
        period. The treatment switches on in one common period :math:`t_0`
        for every ever-treated unit and never switches off.
    unit_col, time_col, treatment_col, outcome_col : str
        Columns of the unit id, the period (any sortable labels), the treatment
        :math:`D_{it}` (0/1) and the (possibly imputed) outcome.
    propensity : Series or mapping
        Per-unit probability :math:`\\hat e_i` of ever being treated, indexed by
        unit id (compared as strings); extra ids are ignored. Typically
        out-of-fold, from image embeddings
        (:func:`~eocausal.estimate.nuisance.estimate_propensity`).
    cluster_col : str, default=None
        Cluster labels (constant within a unit); ``None`` clusters by unit.
    weight_col : str, default=None
        Positive sampling weights :math:`w_i`, constant within a unit.
    clip : (float, float), default=(1e-3, 1 - 1e-3)
        Propensities are clipped to this interval.
    n_bootstrap : int, default=500
        Cluster-bootstrap replicates of the DiD-IPW SE.
    seed : int, default=None
        Seed of the bootstrap.
    alpha : float, default=0.05
        Intervals are ``estimate ± z_{1-alpha/2} · std_err``.

    Returns
    -------
    PanelEffects

    Raises
    ------
    InputDataError
        See :func:`check_block_panel`; also a propensity that is not a Series,
        misses units, or lies at 0 or 1 (units named).

    Warns
    -----
    OverlapWarning
        When never-treated units have :math:`\\hat e \\ge 0.95`: their ATT weights
        dominate the comparison.

    Notes
    -----
    With :math:`G_i = \\max_t D_{it}`, :math:`\\Delta Y_i` the mean outcome of
    unit :math:`i` over periods :math:`t \\ge t_0` minus its mean over
    :math:`t < t_0`, and ATT weights

    .. math:: \\omega_i = w_i \\Big(G_i + (1 - G_i)\\frac{\\hat e_i}{1 - \\hat e_i}\\Big)

    (normalised to sum to the number of units in each arm), the rows are

    - ``twfe``: :math:`\\hat\\beta` of
      :math:`Y_{it} = \\alpha_i + \\gamma_t + \\beta D_{it} + \\varepsilon_{it}`,
      least squares weighted by :math:`w_i`. The ATT if untreated trends are
      parallel in treated and never-treated units; biased when placement
      follows a feature that also shifts trends.
    - ``twfe_ipw``: the same regression weighted by :math:`\\omega_i`. The
      ATT if trends are parallel given the features that :math:`\\hat e`
      balances (and :math:`\\hat e` is right).
    - ``did_ipw``: Abadie's (2005) normalised (Hajek) IPW DiD,

      .. math:: \\hat\\tau = \\frac{\\sum_i G_i w_i \\Delta Y_i}{\\sum_i G_i w_i}
                - \\frac{\\sum_i (1-G_i) w_i r_i \\Delta Y_i}{\\sum_i (1-G_i) w_i r_i},
                \\qquad r_i = \\frac{\\hat e_i}{1 - \\hat e_i}.

    In a balanced block design with unit-constant weights the two-way
    demeaning is exact, so ``twfe_ipw`` and ``did_ipw`` are the same number
    (and ``twfe`` is the same contrast with :math:`r_i = 1`); they differ in
    their SEs. The TWFE rows use linearmodels' cluster-robust sandwich, which
    here equals the cluster-robust influence-function SE of the Hajek DiD;
    ``did_ipw`` uses a cluster bootstrap instead
    (:func:`~eocausal.estimate.ate.hajek_ipw_ate` with ``se="bootstrap"``:
    whole clusters drawn with replacement, both arms recomputed on each draw,
    :math:`\\hat e` held fixed), an independent check of the sandwich. No row
    accounts for the estimation of :math:`\\hat e` (for a logistic ê that
    makes the SEs conservative).

    WARNING: the propensity must not be fitted on the outcomes, and should be
    out-of-fold when it comes from a flexible model of the images.
    """
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    lo, hi = float(clip[0]), float(clip[1])
    if not 0.0 < lo < hi < 1.0:
        raise InputDataError(f"`clip` must satisfy 0 < low < high < 1; got {clip!r}.")
    panel = check_block_panel(
        frame,
        unit_col=unit_col,
        time_col=time_col,
        treatment_col=treatment_col,
        outcome_col=outcome_col,
        cluster_col=cluster_col,
        weight_col=weight_col,
    )
    e_raw = _unit_propensity(propensity, panel.units)
    e = np.clip(e_raw, lo, hi)
    G = panel.ever_treated
    n, n_periods = panel.Y.shape
    t0 = panel.adoption_index
    w = np.ones(n) if panel.weights is None else panel.weights
    r = e / (1.0 - e)
    high = (G == 0) & (e >= _OVERLAP_HIGH)
    ess = float(np.sum(w[G == 0] * r[G == 0]) ** 2 / np.sum((w[G == 0] * r[G == 0]) ** 2))
    if high.any():
        warnings.warn(
            f"{int(high.sum())} never-treated units have propensity >= {_OVERLAP_HIGH} (max "
            f"{e[G == 0].max():.3f}); their ATT weights e/(1-e) reach {r[high].max():.0f} and "
            f"dominate the comparison (effective number of controls {ess:.0f} of "
            f"{int((G == 0).sum())}). "
            f"Consider dropping units with propensity >= {_OVERLAP_HIGH} (Crump et al. 2009) "
            "and reporting them.",
            OverlapWarning,
            stacklevel=2,
        )
    omega = w * np.where(G == 1, 1.0, r)
    for arm in (0, 1):
        omega[G == arm] *= (G == arm).sum() / omega[G == arm].sum()

    long = pd.DataFrame(
        {
            "unit": np.repeat(panel.units, n_periods),
            "period": np.tile(np.arange(n_periods), n),
            "treated": panel.D.ravel(),
            "outcome": panel.Y.ravel(),
            "w": np.repeat(w, n_periods),
            "omega": np.repeat(omega, n_periods),
        }
    )
    cluster_arg = None
    if panel.clusters is not None:
        long["cluster"] = np.repeat(panel.clusters, n_periods)
        cluster_arg = "cluster"
    common = dict(
        unit_col="unit",
        time_col="period",
        treatment_col="treated",
        outcome_col="outcome",
        cluster_col=cluster_arg,
        alpha=alpha,
    )
    rows = []
    for method, weight in (("twfe", None if panel.weights is None else "w"), ("twfe_ipw", "omega")):
        res = twfe(long, weight_col=weight, **common)
        rows.append(
            PanelEffect(
                method=method,
                estimand=_ESTIMANDS[method],
                estimate=res.estimate,
                std_err=res.std_err,
                ci_lower=res.ci_lower,
                ci_upper=res.ci_upper,
                p_value=res.p_value,
                se_method="cluster-robust",
                n_units=res.n_units,
                n_obs=res.n_obs,
                n_clusters=res.n_clusters,
            )
        )
    delta = panel.Y[:, t0:].mean(axis=1) - panel.Y[:, :t0].mean(axis=1)
    # The Hajek ATE weights (W/e, (1-W)/(1-e)) times e are the ATT weights (W, (1-W) e/(1-e)).
    ipw = hajek_ipw_ate(
        delta,
        G,
        e,
        clip=(lo, hi),
        clusters=panel.clusters,
        sample_weight=w * e,
        se="bootstrap",
        n_bootstrap=n_bootstrap,
        alpha=alpha,
        seed=seed,
        warn_overlap=False,
    )
    rows.append(
        PanelEffect(
            method="did_ipw",
            estimand=_ESTIMANDS["did_ipw"],
            estimate=ipw.estimate,
            std_err=ipw.std_err,
            ci_lower=ipw.ci_lower,
            ci_upper=ipw.ci_upper,
            p_value=ipw.p_value,
            se_method="cluster bootstrap",
            n_units=n,
            n_obs=n * n_periods,
            n_clusters=ipw.n_clusters,
        )
    )
    return PanelEffects(
        effects=rows,
        alpha=float(alpha),
        n_units=n,
        n_treated=int(G.sum()),
        n_control=int(n - G.sum()),
        n_periods=n_periods,
        n_pre=t0,
        n_post=n_periods - t0,
        adoption_period=_scalar(panel.periods[t0]),
        cluster="unit" if cluster_col is None else cluster_col,
        clip=[lo, hi],
        n_clipped=int(((e_raw < lo) | (e_raw > hi)).sum()),
        propensity_min_treated=float(e[G == 1].min()),
        propensity_max_control=float(e[G == 0].max()),
        ess_control=ess,
    )
