"""Input checks for panels of units × periods, shared by TWFE and the block-design DiDs.

``_checked_long`` checks the columns of a long panel (present, numeric,
finite, one row per unit and period) for :func:`~eocausal.estimate.panel.twfe`
and :func:`check_block_panel`. :func:`check_block_panel` further requires a
balanced panel with one common adoption period and returns it as unit ×
period matrices (:class:`BlockPanel`); ``_unit_propensity`` aligns per-unit
propensities with those units. Both serve
:func:`~eocausal.estimate.panel_did.panel_effects`. Every error names the
offending units and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from eocausal.errors import InputDataError

__all__ = ["BlockPanel", "check_block_panel"]

_SHOW = 5


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
