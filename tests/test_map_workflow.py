"""One map, many trials through the configs and the CLI: fit-outcome -> map -> trials."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import rasterio
import yaml


@pytest.fixture(scope="module")
def wealth(tmp_path_factory):
    from eocausal.simulate import make_wealth_study

    d = tmp_path_factory.mktemp("wealth")
    return d, make_wealth_study(d / "study", seed=2, scene_size=512, n_survey=400, n_trials=4,
                                units_per_trial=60)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eocausal", *args], capture_output=True, text=True, timeout=600)


def test_fit_outcome_map_and_trials_from_configs(wealth):
    d, study = wealth
    map_cfg = {
        "run_dir": "map_run",
        "labels": {"path": str(study.survey_path), "id_col": "cluster_id", "target_col": "wealth",
                   "true_lon_col": "true_lon", "true_lat_col": "true_lat"},
        "imagery": {"source": "raster", "paths": [str(study.scene_path)], "recipe": "c2_sr",
                    "scales": [{"name": "150m", "size_px": 5, "out_px": 5},
                               {"name": "270m", "size_px": 9, "out_px": 9}]},
        "encoder": {"name": "mosaiks", "n_features": 32},
        "features": {"pca_components": None},
        "outcome": {"model": "ridge", "block_km": 3.0, "n_folds": 3},
        "region": {"footprint": True, "cell_size_m": 600, "tile_cells": 8},
    }
    (d / "map.yaml").write_text(yaml.safe_dump(map_cfg))
    fitted = _cli("fit-outcome", str(d / "map.yaml"), "-q")
    assert fitted.returncode == 0, fitted.stderr
    metrics = pd.read_csv(d / "map_run" / "outcome" / "metrics.csv")
    assert {"cross-fitted (all folds)", "calibration split"} <= set(metrics["split"])
    mapped = _cli("map", str(d / "map.yaml"), "-q")
    assert mapped.returncode == 0, mapped.stderr
    with rasterio.open(mapped.stdout.strip()) as src:
        assert src.count == 3 and src.descriptions[0].startswith("predicted")
        assert src.crs is not None and src.block_shapes[0] == (256, 256) or src.height < 256
    artifact = d / "map_run" / "map"
    meta = json.loads((artifact / "metadata.json").read_text())
    assert "true locations" in meta["metadata"]["calibration_note"]
    assert not (artifact / "work").exists()  # per-tile work files are gone once the COG is in place
    trials = {"run_dir": "trials_run", "map": str(artifact),
              "trials": [{"name": n, "units": str(p)} for n, p in study.trials]}
    (d / "trials.yaml").write_text(yaml.safe_dump(trials))
    ran = _cli("trials", str(d / "trials.yaml"), "-q")
    assert ran.returncode == 0, ran.stderr
    table = pd.read_csv(d / "trials_run" / "trials.csv")
    assert list(table["trial"]) == [n for n, _ in study.trials]
    assert table["corrected_se"].gt(table["naive_se"]).all()  # the correction's uncertainty is added
    assert (d / "trials_run" / "report.html").exists()
    # a trials config naming a map folder that holds no artifact: one line, exit 2
    trials["map"] = str(d)
    (d / "bad.yaml").write_text(yaml.safe_dump(trials))
    bad = _cli("trials", str(d / "bad.yaml"), "-q")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
