"""Two-way fixed effects on a long panel of units × periods.

:func:`twfe` fits one TWFE regression of an outcome on a treatment indicator
(or dose) with cluster-robust SEs (linearmodels) and returns a
:class:`PanelResult`. Its input checks live in
:mod:`eocausal.estimate.panel_checks`; the block-design comparison of TWFE
with propensity-weighted DiDs is :func:`eocausal.estimate.panel_did.panel_effects`.

References
----------
Goodman-Bacon (2021), "Difference-in-differences with variation in treatment
timing", Journal of Econometrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from linearmodels.panel import PanelOLS
from scipy import stats

from eocausal.errors import EstimationError, InputDataError
from eocausal.estimate.ate import normal_interval
from eocausal.estimate.panel_checks import _checked_long

__all__ = ["PanelResult", "twfe"]


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
