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

__all__ = ["Correction", "correction_of", "correction_settings", "run_debias"]


def correction_settings(cfg: RunConfig) -> dict[str, Any]:
    """The calibration pairs and correction prototypes named by the ``debias`` config section."""
    from eocausal.debias import TweedieCorrection

    d = cfg.debias
    calib = pd.read_csv(d.calibration)
    needed = [d.calibration_predicted_col, d.calibration_truth_col] + ([d.residuals_col] if d.residuals_col else [])
    missing = [c for c in needed if c not in calib.columns]
    if missing:
        raise ConfigError(f"config field `debias`: columns {missing} are not in {d.calibration}")
    return {
        "calibration_predicted": calib[d.calibration_predicted_col].to_numpy(float),
        "calibration_truth": calib[d.calibration_truth_col].to_numpy(float),
        "tweedie": TweedieCorrection(sigma_source=d.sigma_source, density_source=d.density_source),
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
    result = debias_outcome(Y, method=d.method, seed=cfg.seed, **settings)
    settings["method"] = result.method
    log(f"debias: predicted outcome corrected with {result.method}")
    side = debiased_ate(
        Y, T, propensity=propensity, clusters=clusters, sample_weight=weights,
        propensity_features=propensity_features, n_bootstrap=cfg.evaluate.n_bootstrap,
        seed=cfg.seed, **settings,
    )
    out = {"method": result.method, "diagnostics": result.to_dict(), "side_by_side": side.to_dict()}
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
