"""Many trials against one map: naive and corrected effects on a predicted outcome.

A wealth map :math:`\\hat Y` made once from imagery is the outcome of every
trial that falls on it ("One Map, Many Trials", Pettersson, Jerzak and Daoud
2026). For each trial, :func:`run_trials` samples the map at the trial's
units, estimates the Hajek IPW ATE (the difference in means for a
Bernoulli(0.5) trial) on the raw predictions (naive, attenuated by the map's
shrinkage) and on the predictions corrected with the calibration split the
map carries (:func:`eocausal.debias.debiased_ate`), with standard errors that
include the correction's own uncertainty. With a baseline map (the same model
applied to imagery from before the trials) the outcome is the change of the
map at each unit, which removes the map's persistent error from both arms.
Units the map does not cover are reported by id, never dropped silently.

Never imports torch.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.debias import METHODS, DebiasedATE, debiased_ate
from eocausal.errors import ConfigError, EstimationError, ExclusionWarning, InputDataError
from eocausal.maps import MapArtifact, sample_map
from eocausal.units import StudyUnits, read_units_table
from eocausal.validation import check_propensity, row_names

__all__ = ["TABLE_COLUMNS", "TrialSpec", "TrialsResult", "run_trials"]

#: Columns of :attr:`TrialsResult.table`, in order.
TABLE_COLUMNS = (
    "trial",
    "n",
    "n_missing",
    "naive",
    "naive_se",
    "corrected",
    "corrected_se",
    "ci_lower",
    "ci_upper",
    "method",
)
_MIN_PER_ARM = 2


@dataclass(frozen=True, eq=False)  # units may be a DataFrame, which has no truth value
class TrialSpec:
    """One trial: its units, their treatment and where they are.

    Parameters
    ----------
    name : str
        Unique name of the trial (a row of the result table).
    units : DataFrame or path-like
        One row per unit, or a file :func:`eocausal.units.read_units_table`
        reads (CSV, Parquet, GeoPackage...).
    id_col, treatment_col : str, default="unit_id", "treated"
        Unique unit ids; binary 0/1 treatment.
    lon_col, lat_col : str, default="lon", "lat"
        WGS84 coordinates of the units.
    propensity : float or str, default=0.5
        The known assignment probability, or the name of a column holding it
        per unit (stratified or blocked designs).
    cluster_col : str, default=None
        Randomisation clusters (villages...); the SEs then sum the influence
        function within clusters.
    """

    name: str
    units: pd.DataFrame | str | os.PathLike
    id_col: str = "unit_id"
    treatment_col: str = "treated"
    lon_col: str = "lon"
    lat_col: str = "lat"
    propensity: float | str = 0.5
    cluster_col: str | None = None


@dataclass
class _Trial:
    unit_id: np.ndarray
    treated: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    propensity: np.ndarray
    clusters: np.ndarray | None


def _load(spec: TrialSpec) -> _Trial:
    """Read and validate a trial's units once (ids, 0/1 treatment, WGS84 points, propensity)."""
    if isinstance(spec.units, pd.DataFrame):
        frame = spec.units
    elif isinstance(spec.units, (str, os.PathLike)):
        frame = read_units_table(spec.units, id_col=spec.id_col)
    else:
        raise InputDataError(
            f"trial {spec.name!r}: `units` must be a DataFrame or a path to a units file; got "
            f"{type(spec.units).__name__}."
        )
    units = StudyUnits.from_frame(
        frame,
        id_col=spec.id_col,
        treatment_col=spec.treatment_col,
        cluster_col=spec.cluster_col,
        lon_col=spec.lon_col,
        lat_col=spec.lat_col,
        crs="EPSG:4326",
    )
    if isinstance(spec.propensity, str):
        if spec.propensity not in frame.columns:
            raise InputDataError(
                f"trial {spec.name!r}: `propensity` names the column {spec.propensity!r}, which the "
                f"units table lacks; its columns are {list(frame.columns)}. Give the column or a float."
            )
        raw = pd.to_numeric(frame[spec.propensity], errors="coerce").to_numpy(dtype=np.float64)
    elif isinstance(spec.propensity, (float, int, np.floating, np.integer)) and not isinstance(
        spec.propensity, bool
    ):
        raw = float(spec.propensity)
    else:
        raise ConfigError(
            f"trial {spec.name!r}: `propensity` must be a probability or a column name; got "
            f"{spec.propensity!r}. Use 0.5 for a Bernoulli(0.5) trial."
        )
    n = units.n_units
    e = check_propensity(
        raw, n=n, unit_ids=units.unit_id, name=f"propensity of trial {spec.name!r}"
    )
    geom = units.gdf.geometry
    return _Trial(
        unit_id=units.unit_id,
        treated=units.treatment,
        lon=geom.x.to_numpy(),
        lat=geom.y.to_numpy(),
        propensity=e,
        clusters=units.clusters,
    )


def _check_specs(specs: Any) -> list[TrialSpec]:
    specs = list(specs) if not isinstance(specs, TrialSpec) else [specs]
    if not specs:
        raise ConfigError("`specs` is empty; give at least one TrialSpec.")
    bad = [type(s).__name__ for s in specs if not isinstance(s, TrialSpec)]
    if bad:
        raise ConfigError(f"`specs` must hold TrialSpec objects; got {sorted(set(bad))}.")
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"trial names must be unique; repeated: {dup}. Rename the TrialSpecs.")
    return specs


@dataclass
class TrialsResult:
    """Naive and corrected effects of several trials on one map.

    Attributes
    ----------
    table : DataFrame
        One row per trial, columns :data:`TABLE_COLUMNS`: ``trial``, ``n``
        (units on the map), ``n_missing`` (units the map does not cover),
        ``naive`` and ``naive_se`` (Hajek IPW on the raw predictions, sampling
        SE), ``corrected`` and ``corrected_se`` (on the corrected
        predictions; SE = sqrt(sampling² + calibration²)), ``ci_lower``,
        ``ci_upper`` (of the corrected effect) and ``method`` (the correction).
    missing : DataFrame
        The units left out: ``trial``, ``unit_id``, ``lon``, ``lat``, ``reason``.
    details : dict of str to DebiasedATE
        The full result per trial (sampling and calibration parts of the SE,
        diagnostics of the correction).
    map_path : Path
        The map sampled.
    n_calibration : int
        Calibration pairs the corrections were fitted on.
    baseline_path : Path or None
        The baseline map whose values were subtracted (the outcome is the change), if any.
    calibration_resampling : str
        How the calibration bootstrap drew the pairs: ``"pairs"`` or
        ``"groups (<k> blocks)"``.
    """

    table: pd.DataFrame
    missing: pd.DataFrame
    details: dict[str, DebiasedATE] = field(default_factory=dict)
    map_path: Path | None = None
    n_calibration: int = 0
    baseline_path: Path | None = None
    calibration_resampling: str = "pairs"

    def to_dict(self) -> dict:
        """JSON-serialisable dict: ``map``, ``baseline_map``, ``n_calibration``, ``trials``,
        ``missing``, ``details``."""
        return {
            "map": None if self.map_path is None else str(self.map_path),
            "baseline_map": None if self.baseline_path is None else str(self.baseline_path),
            "calibration_resampling": self.calibration_resampling,
            "n_calibration": self.n_calibration,
            "trials": json.loads(self.table.to_json(orient="records")),
            "missing": json.loads(self.missing.to_json(orient="records")),
            "details": {name: d.to_dict() for name, d in self.details.items()},
        }


def run_trials(
    specs: TrialSpec | list[TrialSpec],
    artifact: MapArtifact,
    *,
    method: str = "linear",
    radius_m: float | None = None,
    baseline: MapArtifact | None = None,
    band: int | str = 1,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int | None = 0,
) -> TrialsResult:
    """Naive and corrected ATE of every trial, with the map as the outcome.

    Parameters
    ----------
    specs : TrialSpec or list of TrialSpec
        The trials (unique names).
    artifact : MapArtifact
        The map (``cog_path``) and its calibration split (``calibration``
        with columns ``predicted`` and ``truth``, locations the map model
        never saw).
    method : {"linear", "tweedie", "auto"}, default="linear"
        The correction (:func:`eocausal.debias.debias_outcome`); ``"auto"``
        chooses by cross-validated pseudo-contrasts on the calibration set.
    radius_m : float, default=None
        Sample the cell holding each unit (None) or the mean of the valid
        cells within this many metres (:func:`eocausal.maps.sample_map`).
    baseline : MapArtifact, default=None
        The same model's map of imagery from before the trials (``eocausal map``
        with ``region.imagery``). Each unit's outcome is then the change
        :math:`\\hat Y_i - \\hat Y^{(0)}_i`, sampled the same way; needs
        ``method="linear"``. The calibration pairs stay those of ``artifact``.
    band : int or str, default=1
        The band of the map holding the prediction.
    n_bootstrap : int, default=200
        Calibration bootstrap replicates per trial. When the calibration table
        has a ``group`` column (the spatial blocks ``eocausal map`` held the
        pairs out by) with at least 2 groups, each replicate draws whole groups:
        pairs of one block share the map's regional error, so drawing pairs
        would understate the correction's uncertainty.
    alpha : float, default=0.05
        The intervals are ``corrected ± z_{1-α/2} · corrected_se``.
    seed : int, default=0
        Seeds the correction's selection and bootstrap; every trial uses the
        same seed, so a trial's row does not depend on the other trials.

    Returns
    -------
    TrialsResult

    Raises
    ------
    ConfigError
        Empty or repeated trial names, an unknown ``method``.
    InputDataError
        Invalid units (see :meth:`eocausal.units.StudyUnits.from_frame`) or
        calibration table.
    EstimationError
        A trial with fewer than 2 units on the map in an arm.

    Warns
    -----
    ExclusionWarning
        Units whose map value is missing (off the map, nodata), with their ids.

    Notes
    -----
    For trial :math:`t` with units :math:`i`, treatment :math:`W_i`,
    propensity :math:`e_i` and map values :math:`\\hat Y_i`,

    .. math::

        \\hat\\tau_t(Y) = \\frac{\\sum_i W_i Y_i / e_i}{\\sum_i W_i / e_i}
        - \\frac{\\sum_i (1-W_i) Y_i / (1-e_i)}{\\sum_i (1-W_i)/(1-e_i)},

    naive :math:`= \\hat\\tau_t(\\hat Y)` and corrected
    :math:`= \\hat\\tau_t(\\tilde Y)` with :math:`\\tilde Y = g(\\hat Y)` the
    correction fitted on the map's calibration pairs (linear:
    :math:`\\tilde Y = (\\hat Y - m)/k` from :math:`\\hat Y = m + kY`). If the
    map shrinks as :math:`\\hat Y = m + kY + e`, the naive estimate targets
    :math:`k\\tau_t` and the corrected one :math:`\\tau_t`.

    With a baseline map :math:`\\hat Y^{(0)}`, the outcome is the change
    :math:`\\Delta_i = \\hat Y_i - \\hat Y^{(0)}_i`; if both dates read
    :math:`\\hat Y = m + kY + e` with the same persistent error :math:`e`
    (the same landscape seen twice), :math:`\\Delta_i = k(Y_i - Y^{(0)}_i)`
    plus the error's change, so :math:`\\hat\\tau_t(\\Delta)/\\hat k` targets
    :math:`\\tau_t` with the variance of :math:`e` gone from both arms
    (the ANCOVA-like gain of a baseline measurement). The intercept cancels in
    the contrast: the change is shifted by the mean calibration prediction (a
    constant) before the linear correction so that its support check reads it
    on the map's scale.

    WARNING: every trial is corrected with the SAME calibration pairs, so the
    corrected estimates share the correction's error and are correlated
    across trials (each ``corrected_se`` includes it, but do not treat the
    trials as independent when pooling or comparing them). The corrections
    also assume the map's error does not depend on treatment given the true
    outcome: a map whose cells are wider than the scale of the treatment's
    change mixes the arms and attenuates the effect beyond the calibration
    slope.
    """
    specs = _check_specs(specs)
    allowed = tuple(m for m in METHODS if m != "none") + ("auto",)
    if method not in allowed:
        raise ConfigError(
            f"`method` must be one of {allowed}; got {method!r}. Use 'linear' to invert the "
            "calibration slope."
        )
    if baseline is not None and method != "linear":
        raise ConfigError(
            f"a baseline map needs `method: linear` (the intercept cancels in a change only for "
            f"the linear correction); got {method!r}."
        )
    cal_p, cal_t, cal_groups = artifact.calibration_pairs()
    rows, missing, details = [], [], {}
    for spec in specs:
        trial = _load(spec)
        pred = sample_map(artifact.cog_path, trial.lon, trial.lat, band=band, radius_m=radius_m)
        if baseline is not None:
            before = sample_map(baseline.cog_path, trial.lon, trial.lat, band=band, radius_m=radius_m)
            pred = pred - before + cal_p.mean()
        gone = ~np.isfinite(pred)
        if gone.any():
            warnings.warn(
                f"trial {spec.name!r}: {int(gone.sum())} of {gone.size} units have no map value "
                f"{'on the map or the baseline map ' if baseline is not None else ''}"
                f"(off the map or nodata) and are left out: {row_names(gone, trial.unit_id)}. "
                "See TrialsResult.missing for the full list.",
                ExclusionWarning,
                stacklevel=2,
            )
            missing.append(
                pd.DataFrame(
                    {
                        "trial": spec.name,
                        "unit_id": trial.unit_id[gone],
                        "lon": trial.lon[gone],
                        "lat": trial.lat[gone],
                        "reason": "no valid map value at the unit"
                        + (" (map or baseline map)" if baseline is not None else ""),
                    }
                )
            )
        keep = ~gone
        T = trial.treated[keep]
        n_arm = (int(T.sum()), int(T.size - T.sum()))
        if min(n_arm) < _MIN_PER_ARM:
            raise EstimationError(
                f"trial {spec.name!r}: {n_arm[0]} treated and {n_arm[1]} control units have map "
                f"values ({int(gone.sum())} left out); each arm needs at least {_MIN_PER_ARM}. "
                "Check that the trial lies on the map (CRS, extent) or use `radius_m`."
            )
        res = debiased_ate(
            pred[keep],
            T,
            calibration_predicted=cal_p,
            calibration_truth=cal_t,
            propensity=trial.propensity[keep],
            clusters=None if trial.clusters is None else trial.clusters[keep],
            method=method,
            calibration_clusters=cal_groups,
            n_bootstrap=n_bootstrap,
            alpha=alpha,
            seed=seed,
        )
        details[spec.name] = res
        rows.append(
            {
                "trial": spec.name,
                "n": int(keep.sum()),
                "n_missing": int(gone.sum()),
                "naive": res.naive,
                "naive_se": res.naive_se,
                "corrected": res.estimate,
                "corrected_se": res.std_err,
                "ci_lower": res.ci_lower,
                "ci_upper": res.ci_upper,
                "method": res.method,
            }
        )
    empty = pd.DataFrame(
        {c: pd.Series(dtype=object) for c in ("trial", "unit_id", "lon", "lat", "reason")}
    )
    return TrialsResult(
        table=pd.DataFrame(rows, columns=list(TABLE_COLUMNS)),
        missing=pd.concat(missing, ignore_index=True) if missing else empty,
        details=details,
        map_path=Path(artifact.cog_path),
        n_calibration=int(cal_p.size),
        baseline_path=None if baseline is None else Path(baseline.cog_path),
        calibration_resampling="pairs" if cal_groups is None else f"groups ({len(np.unique(cal_groups))} blocks)",
    )
