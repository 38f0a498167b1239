"""Correction of a predicted outcome (``debias``) inside a run.

The correction is fitted on the labelled calibration set, the naive and corrected Hajek
IPW use the run's propensity, clusters and weights, and :class:`Correction` keeps what is
needed to refit it in calibration bootstraps of any later estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from eocausal.config import RunConfig
from eocausal.errors import ConfigError
from eocausal.pipeline.study import Log, PreparedStudy

__all__ = ["MAP_PREDICTION_COL", "Correction", "correction_of", "correction_settings", "map_source",
           "predicted_from_map", "run_debias"]

#: Column of the units table that holds the map's value at each unit (``debias.map``).
MAP_PREDICTION_COL = "predicted_from_map"


def map_source(cfg: RunConfig) -> dict[str, Any] | None:
    """What the run read from ``debias.map`` (for fingerprints and results.json); None without it."""
    from eocausal.maps import MapArtifact

    d = cfg.debias
    if d is None or d.map is None:
        return None
    artifact = MapArtifact.read(d.map)
    blocks = artifact.calibration_pairs()[2]
    return {"map": str(d.map), "cog_sha256": artifact.cog_sha256, "n_calibration": len(artifact.calibration),
            "value": "the map's value at each unit" if d.radius_m is None else
                     f"the map's mean over the valid cells within {d.radius_m:g} m of each unit",
            "calibration_resampling": "pairs" if blocks is None else
                                      f"whole spatial blocks ({len(np.unique(blocks))})"}


def predicted_from_map(cfg: RunConfig, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The units table with the map's value at each unit in :data:`MAP_PREDICTION_COL`, and the
    units the map does not cover (``unit_id``, ``reason``), which are taken out of the table."""
    from pyproj import Transformer

    from eocausal.maps import MapArtifact, sample_map

    s, d = cfg.study, cfg.debias
    if MAP_PREDICTION_COL in table.columns:
        raise ConfigError(f"config field `debias.map`: the units table already has a column {MAP_PREDICTION_COL!r}, "
                          "which the map's values would replace; rename it.")
    if s.lon_col is None or s.lat_col is None:
        raise ConfigError("config field `debias.map` samples the map at the units' locations: set `study.lon_col` "
                          "and `study.lat_col`.")
    artifact = MapArtifact.read(d.map)
    x = pd.to_numeric(table[s.lon_col], errors="coerce").to_numpy(float)
    y = pd.to_numeric(table[s.lat_col], errors="coerce").to_numpy(float)
    if s.crs is not None:
        x, y = Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True).transform(x, y)
    located = np.isfinite(x) & np.isfinite(y)
    values = np.full(len(table), np.nan)
    if located.any():
        values[located] = sample_map(artifact.cog_path, x[located], y[located], radius_m=d.radius_m)
    gone = ~np.isfinite(values)
    where = "at the unit" if d.radius_m is None else f"within {d.radius_m:g} m of the unit"
    excluded = pd.DataFrame({
        "unit_id": table.loc[gone, s.id_col].astype(str).to_numpy(),
        "reason": [f"no valid map value {where} (off the map or nodata)" if ok else "no location"
                   for ok in located[gone]],
    })
    return table.assign(**{MAP_PREDICTION_COL: values}).loc[~gone].reset_index(drop=True), excluded


def correction_settings(cfg: RunConfig) -> dict[str, Any]:
    """The calibration pairs and correction prototypes named by the ``debias`` config section;
    with ``debias.map``, the map's calibration split and its spatial blocks."""
    from eocausal.debias import TweedieCorrection

    d = cfg.debias
    tweedie = TweedieCorrection(sigma_source=d.sigma_source, density_source=d.density_source)
    if d.map is not None:
        from eocausal.maps import MapArtifact

        predicted, truth, blocks = MapArtifact.read(d.map).calibration_pairs()
        return {"calibration_predicted": predicted, "calibration_truth": truth, "tweedie": tweedie,
                "residuals": None, "calibration_clusters": blocks}
    calib = pd.read_csv(d.calibration)
    needed = [d.calibration_predicted_col, d.calibration_truth_col] + ([d.residuals_col] if d.residuals_col else [])
    missing = [c for c in needed if c not in calib.columns]
    if missing:
        raise ConfigError(f"config field `debias`: columns {missing} are not in {d.calibration}")
    return {
        "calibration_predicted": calib[d.calibration_predicted_col].to_numpy(float),
        "calibration_truth": calib[d.calibration_truth_col].to_numpy(float),
        "tweedie": tweedie,
        "residuals": calib[d.residuals_col].dropna().to_numpy(float) if d.residuals_col else None,
    }


@dataclass
class Correction:
    """The correction of the predicted outcome, kept to refit it in calibration bootstraps."""

    predicted: np.ndarray
    corrected: np.ndarray
    settings: dict[str, Any]
    n_bootstrap: int
    seed: int

    def bootstrap(self, statistic: Callable[[np.ndarray], Any]):
        """:func:`eocausal.debias.correction_bootstrap` of ``statistic`` with this correction."""
        from eocausal.debias import correction_bootstrap

        return correction_bootstrap(statistic, self.predicted, **self.settings,
                                    n_bootstrap=self.n_bootstrap, seed=self.seed)


def run_debias(cfg: RunConfig, study: PreparedStudy, ids: np.ndarray, T: np.ndarray, Y: np.ndarray,
               propensity: Any, clusters: np.ndarray | None, weights: np.ndarray | None,
               propensity_features: np.ndarray | None, log: Log) -> tuple[dict[str, Any], Correction]:
    """Correct the predicted outcome ``Y``; returns the diagnostics block and the correction.

    The naive and corrected Hajek IPW use the run's propensity (known, a column, or the
    cross-fitted image propensity with ``propensity_features``), clusters and weights.
    """
    from eocausal.debias import debias_outcome, debiased_ate, ppi_ate

    d = cfg.debias
    settings = correction_settings(cfg)
    result = debias_outcome(Y, method=d.method, seed=cfg.seed,
                            **{k: v for k, v in settings.items() if k != "calibration_clusters"})
    settings["method"] = result.method
    log(f"debias: predicted outcome corrected with {result.method}")
    side = debiased_ate(
        Y, T, propensity=propensity, clusters=clusters, sample_weight=weights,
        propensity_features=propensity_features, n_bootstrap=cfg.evaluate.n_bootstrap,
        seed=cfg.seed, **settings,
    )
    out = {"method": result.method, "diagnostics": result.to_dict(), "side_by_side": side.to_dict(),
           "map": map_source(cfg)}
    if d.fresh_label_col is not None:
        if d.fresh_label_col not in study.table.columns:
            raise ConfigError(f"config field `debias.fresh_label_col`: column {d.fresh_label_col!r} is not in the units file")
        fresh = pd.to_numeric(study.table.loc[ids, d.fresh_label_col], errors="coerce").to_numpy(float)
        out["ppi"] = ppi_ate(Y, T, fresh, propensity=propensity, clusters=clusters,
                             sample_weight=weights).to_dict()
    correction = Correction(Y, np.asarray(result.corrected, dtype=float), settings,
                            cfg.evaluate.n_bootstrap, cfg.seed)
    return out, correction




def correction_of(cfg: RunConfig, predicted: np.ndarray, corrected: np.ndarray, method: str) -> Correction:
    """The :class:`Correction` of a saved run (the correction itself is deterministic)."""
    settings = {**correction_settings(cfg), "method": method}
    return Correction(predicted, corrected, settings, cfg.evaluate.n_bootstrap, cfg.seed)
