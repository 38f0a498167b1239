"""Propensity-weighted difference-in-differences for programme placement on a block panel.

Used for programme-placement studies on (imputed) outcome panels: a unit is
observed in several periods, and the treatment indicator switches on when the
programme reaches it, in one common period. :func:`panel_effects` compares the
unweighted TWFE (:func:`~eocausal.estimate.panel.twfe`) with two estimators
that use image-based propensities of being reached (Abadie 2005), and returns
them as :class:`PanelEffects`, one :class:`PanelEffect` per method.

References
----------
Abadie (2005), "Semiparametric difference-in-differences estimators", Review of
Economic Studies. Goodman-Bacon (2021), "Difference-in-differences with
variation in treatment timing", Journal of Econometrics. Sant'Anna & Zhao
(2020), "Doubly robust difference-in-differences estimators".
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from eocausal.errors import InputDataError, OverlapWarning
from eocausal.estimate.ate import hajek_ipw_ate
from eocausal.estimate.panel import twfe
from eocausal.estimate.panel_checks import _scalar, _unit_propensity, check_block_panel

__all__ = ["PanelEffect", "PanelEffects", "panel_effects"]

_OVERLAP_HIGH = 0.95


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
        See :func:`~eocausal.estimate.panel_checks.check_block_panel`; also a
        propensity that is not a Series, misses units, or lies at 0 or 1 (units
        named).

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
    common = {
        "unit_col": "unit",
        "time_col": "period",
        "treatment_col": "treated",
        "outcome_col": "outcome",
        "cluster_col": cluster_arg,
        "alpha": alpha,
    }
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
