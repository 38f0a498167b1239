"""The built-in wealth study end to end: one map, many trials (``eocausal demo --study wealth``).

A simulated endline scene rendered from a latent wealth surface, DHS-like survey clusters
(displaced coordinates, true ones kept for calibration), and trials whose treated units (each
a 630 m area) grew richer; then: outcome model with spatially blocked cross-fitting -> map of
the region (COG) and, with the same model, a map of the baseline scene -> every trial's naive
and corrected ATE with the map as the outcome (``trials/``) and with the change of the map
since baseline as the outcome (``trials_change/``) -> how well the map and the corrections
recover the known truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_json
from eocausal.config import parse_map_config, parse_trials_config
from eocausal.pipeline.folder import mark_complete, mark_running
from eocausal.pipeline.outcome_map import map_stage
from eocausal.pipeline.study import Log, _nolog
from eocausal.pipeline.trials import trials_stage, trials_summary

__all__ = ["run_wealth_demo"]


def run_wealth_demo(run_dir: Path, *, seed: int = 0, log: Log = _nolog, progress: bool = True,
                    scene_size: int = 1024, n_survey: int = 4000, n_trials: int = 24,
                    units_per_trial: int | None = None, cell_size_m: float = 150.0,
                    radius_m: float = 150.0, regional_greenness: float = 0.0) -> dict[str, Any]:
    """Simulate the wealth study in ``run_dir/study``, map it, run its trials; return the summary.

    Each trial unit's outcome is the map's mean over the cells within ``radius_m`` of it
    (inside the unit's 630 m area at the default).
    """
    from eocausal.maps import RegionGrid, sample_map
    from eocausal.simulate import make_wealth_study

    run_dir = Path(run_dir).resolve()
    mark_running(run_dir)
    log(f"simulating the wealth study ({n_survey} survey clusters, {n_trials} trials) ...")
    study = make_wealth_study(run_dir / "study", seed=seed, scene_size=scene_size, n_survey=n_survey,
                              n_trials=n_trials, units_per_trial=units_per_trial,
                              regional_greenness=regional_greenness)

    def map_config(name: str, imagery: Path | None) -> Any:
        region = {"footprint": True, "cell_size_m": cell_size_m, "tile_cells": 64}
        return parse_map_config({
            "run_dir": str(run_dir / name),
            "seed": seed,
            "labels": {"path": str(study.survey_path), "id_col": "cluster_id", "target_col": "wealth",
                       "true_lon_col": "true_lon", "true_lat_col": "true_lat"},
            # chips inside a treated unit's 300 m neighbourhood: 150 m and 270 m
            "imagery": {"source": "raster", "paths": [str(study.scene_path)], "recipe": "c2_sr",
                        "scales": [{"name": "150m", "size_px": 5, "out_px": 5},
                                   {"name": "270m", "size_px": 9, "out_px": 9}]},
            "encoder": {"name": "mosaiks", "n_features": 256, "batch_size": 512},
            "features": {"pca_components": None},
            "outcome": {"model": "ridge", "block_km": 2.5, "calibration_size": 0.3},
            "region": region if imagery is None else {**region, "imagery": [str(imagery)]},
        })

    artifact = map_stage(map_config("map", None), log=log, progress=progress)
    log("the same model on the baseline scene ...")
    baseline = map_stage(map_config("map_baseline", study.baseline_scene_path), log=log, progress=progress)
    truth = study.truth.set_index("trial")["true_ate"]
    for name, base in (("trials", None), ("trials_change", baseline)):
        trials_stage(parse_trials_config({
            "run_dir": str(run_dir / name),
            "seed": seed,
            "map": str(artifact.metadata_path.parent),
            "baseline_map": None if base is None else str(base.metadata_path.parent),
            "method": "linear",
            "radius_m": radius_m,
            "trials": [{"name": t, "units": str(path), "true_ate": float(truth[t])}
                       for t, path in study.trials],
        }), log=log)

    grid = RegionGrid.from_raster_footprint([str(study.scene_path)], cell_size_m=cell_size_m)
    cells = pd.concat([grid.cell_points(t) for t in grid.tiles(512)], ignore_index=True)
    mapped = sample_map(artifact.cog_path, cells["lon"], cells["lat"])
    true = sample_map(study.wealth_raster_path, cells["lon"], cells["lat"])
    both = np.isfinite(mapped) & np.isfinite(true)
    metrics = pd.read_csv(run_dir / "map" / "outcome" / "metrics.csv").set_index("split")
    crossfit = metrics.loc["cross-fitted (all folds)"]
    summary = {
        "spatial_cv_r2": float(crossfit["r2"]),
        "spatial_cv_slope": float(crossfit["slope"]),
        "map_corr_with_true_wealth": float(np.corrcoef(mapped[both], true[both])[0, 1]),
        "n_map_cells": len(cells),
        "n_calibration_pairs": len(artifact.calibration),
        **{f"{k} (map)": v for k, v in trials_summary(pd.read_csv(run_dir / "trials" / "trials.csv")).items()},
        **{f"{k} (change)": v
           for k, v in trials_summary(pd.read_csv(run_dir / "trials_change" / "trials.csv")).items()},
    }
    write_json({"summary": summary, "map": "map/map", "baseline_map": "map_baseline/map",
                "trials": "trials/trials.csv", "trials_change": "trials_change/trials.csv"},
               run_dir / "results.json")
    mark_complete(run_dir, {})
    log(f"done: {run_dir}")
    return summary
