"""Two-way fixed effects over units × periods, with cluster-robust SEs (linearmodels).

Used for programme-placement studies on (imputed) outcome panels: a unit is
observed in several periods, and the treatment indicator switches on when the
programme reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from linearmodels.panel import PanelOLS
from scipy import stats

from eocausal.errors import EstimationError, InputDataError

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


def _require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputDataError(
            f"Panel frame lacks columns {missing}; available: {list(frame.columns)}."
        )


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
    time_effects=True)`` with ``cov_type="clustered"``. β is the ATT only
    under parallel trends and, with staggered adoption, homogeneous effects
    (Goodman-Bacon 2021); report it as a TWFE coefficient.
    """
    covariate_cols = list(covariate_cols or [])
    needed = [unit_col, time_col, treatment_col, outcome_col, *covariate_cols]
    if cluster_col is not None:
        needed.append(cluster_col)
    if weight_col is not None:
        needed.append(weight_col)
    _require_columns(frame, needed)
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    data = frame[list(dict.fromkeys(needed))].copy()
    numeric = [treatment_col, outcome_col, *covariate_cols] + ([weight_col] if weight_col else [])
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
            f"The panel has more than one row per (unit, period), e.g. {rows}; aggregate them first."
        )
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
    else:
        codes = pd.factorize(indexed[cluster_col])[0]
        cov = {
            "cov_type": "clustered",
            "clusters": pd.Series(codes, index=indexed.index, name="cluster"),
        }
        n_clusters = int(codes.max()) + 1
        cluster_name = cluster_col
    if n_clusters < 2:
        raise InputDataError("Cluster-robust SEs need at least 2 clusters.")
    try:
        res = model.fit(**cov)
    except (ValueError, np.linalg.LinAlgError) as err:
        raise EstimationError(
            f"TWFE fit failed ({err}); the treatment may be collinear with the unit and period "
            "effects (e.g. treated in every period, or adopted by all units at once)."
        ) from err
    beta = float(res.params[treatment_col])
    se = float(res.std_errors[treatment_col])
    z = stats.norm.ppf(1 - alpha / 2)
    p = float(2 * stats.norm.sf(abs(beta / se))) if se > 0 else float("nan")
    return PanelResult(
        estimate=beta,
        std_err=se,
        ci_lower=beta - z * se,
        ci_upper=beta + z * se,
        p_value=p,
        alpha=float(alpha),
        n_obs=int(res.nobs),
        n_units=int(data[unit_col].nunique()),
        n_periods=int(data[time_col].nunique()),
        n_clusters=int(n_clusters),
        cluster=cluster_name,
        covariates=covariate_cols,
    )
