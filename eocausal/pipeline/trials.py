"""Many trials against one map (``eocausal trials``): one table of naive and corrected effects.

Each trial's units are located on the map; the predicted outcome is the map's value at the
unit (or its mean over ``radius_m``); the shrinkage correction is fitted on the map's
calibration split; the naive and corrected ATEs come with SEs that include the
correction's uncertainty (:func:`eocausal.trials.run_trials`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_csv, write_json
from eocausal.pipeline.folder import fingerprint, mark_complete, mark_running, versions
from eocausal.pipeline.study import Log, _nolog

__all__ = ["trials_stage", "trials_summary"]


def trials_summary(table: pd.DataFrame) -> dict[str, float]:
    """Across trials with a known truth: slopes of naive and corrected ATEs on the true ATEs
    (OLS with intercept; the corrected slope with its OLS SE, which reads the trials' own noise
    and leaves out that they share one correction) and the coverage of the corrected 95%
    intervals."""
    t = table["true_ate"].to_numpy(float)
    naive, corrected = table["naive"].to_numpy(float), table["corrected"].to_numpy(float)
    # 1e-9 of slack: with a baseline map, a trial without effect leaves the map unchanged and
    # its interval is the exact truth up to rounding (width ~1e-17)
    slack = 1e-9 * np.maximum(1.0, np.abs(t))
    covered = (table["ci_lower"] - slack <= t) & (t <= table["ci_upper"] + slack)
    if len(t) > 3:  # polyfit's covariance needs more points than coefficients + 2
        slope, cov = np.polyfit(t, corrected, 1, cov=True)
    else:
        slope, cov = np.polyfit(t, corrected, 1), np.full((2, 2), np.nan)
    return {
        "n_trials": len(table),
        "slope_naive_on_truth": float(np.polyfit(t, naive, 1)[0]),
        "slope_corrected_on_truth": float(slope[0]),
        "slope_corrected_on_truth_se": float(np.sqrt(cov[0, 0])),
        "coverage_corrected_95": float(covered.mean()),
        "mean_abs_error_naive": float(np.mean(np.abs(naive - t))),
        "mean_abs_error_corrected": float(np.mean(np.abs(corrected - t))),
    }


def trials_stage(cfg: Any, *, log: Log = _nolog):
    """Run every trial of ``cfg`` against its map; write ``trials.csv``, ``results.json``, ``report.html``."""
    from eocausal.maps import MapArtifact
    from eocausal.report import render_trials_report
    from eocausal.trials import TrialSpec, run_trials

    mark_running(cfg.run_dir)
    artifact = MapArtifact.read(cfg.map)
    baseline = None if cfg.baseline_map is None else MapArtifact.read(cfg.baseline_map)
    specs = [
        TrialSpec(t.name, t.units, id_col=t.id_col, treatment_col=t.treatment_col, lon_col=t.lon_col,
                  lat_col=t.lat_col, propensity=t.propensity, cluster_col=t.cluster_col)
        for t in cfg.trials
    ]
    log(f"{len(specs)} trials against the map {artifact.cog_path} ...")
    result = run_trials(specs, artifact, method=cfg.method, radius_m=cfg.radius_m, baseline=baseline,
                        n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    table = result.table
    truth = {t.name: t.true_ate for t in cfg.trials if t.true_ate is not None}
    if truth:
        table = table.assign(true_ate=table["trial"].map(truth))
    write_csv(table, cfg.run_dir / "trials.csv", float_format="%.10g")
    summary = trials_summary(table) if truth else None
    details = result.to_dict()
    results = {
        "map": {"value": artifact.metadata.get("value"), "key": artifact.metadata.get("key"),
                "cog_sha256": artifact.cog_sha256, "n_calibration": len(artifact.calibration),
                "outcome": "the map's value at each unit" if baseline is None else
                           "the change of the map since the baseline map at each unit",
                "baseline_cog_sha256": None if baseline is None else baseline.cog_sha256,
                "calibration_resampling": details["calibration_resampling"]},
        "table": table.to_dict(orient="records"),
        "summary": summary,
        "missing": details["missing"],
        "details": details["details"],
        "provenance": {"seed": cfg.seed, "versions": versions(),
                       "config": fingerprint(cfg.model_dump(mode="json", exclude={"run_dir"}))},
    }
    write_json(results, cfg.run_dir / "results.json")
    render_trials_report(results, cfg.run_dir / "report.html")
    mark_complete(cfg.run_dir, {})
    return result
