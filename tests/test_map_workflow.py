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


def _survey_on_scene(study) -> dict:
    """Map config sections: the survey as labels (calibrated at the true locations), 150 m and 270 m chips."""
    return {
        "labels": {"path": str(study.survey_path), "id_col": "cluster_id", "target_col": "wealth",
                   "true_lon_col": "true_lon", "true_lat_col": "true_lat"},
        "imagery": {"source": "raster", "paths": [str(study.scene_path)], "recipe": "c2_sr",
                    "scales": [{"name": "150m", "size_px": 5, "out_px": 5},
                               {"name": "270m", "size_px": 9, "out_px": 9}]},
    }


def test_fit_outcome_map_and_trials_from_configs(wealth):
    d, study = wealth
    map_cfg = {
        "run_dir": "map_run",
        **_survey_on_scene(study),
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


def test_the_same_model_maps_the_baseline_scene_and_trials_use_the_change(wealth):
    """`region.imagery`: the fitted model on another date. The scenes differ only on treated areas,
    so the two maps agree bit for bit on every cell whose chips miss all treated areas."""
    import numpy as np
    from pyproj import Transformer

    from eocausal.config import parse_map_config, parse_trials_config
    from eocausal.pipeline.outcome_map import map_stage
    from eocausal.pipeline.trials import trials_stage

    d, study = wealth
    base_cfg = {
        "labels": {"path": str(study.survey_path), "id_col": "cluster_id", "target_col": "wealth",
                   "true_lon_col": "true_lon", "true_lat_col": "true_lat"},
        "imagery": {"source": "raster", "paths": [str(study.scene_path)], "recipe": "c2_sr",
                    "scales": [{"name": "270m", "size_px": 9, "out_px": 9}]},
        "encoder": {"name": "mosaiks", "n_features": 32},
        "features": {"pca_components": None},
        "outcome": {"model": "ridge", "block_km": 3.0, "n_folds": 3},
    }
    region = {"footprint": True, "cell_size_m": 300, "tile_cells": 16}
    end = map_stage(parse_map_config({**base_cfg, "run_dir": str(d / "end"), "region": region}))
    before = map_stage(parse_map_config({**base_cfg, "run_dir": str(d / "before"),
                                         "region": {**region, "imagery": [str(study.baseline_scene_path)]}}))
    assert (d / "end/outcome/model.npz").read_bytes() == (d / "before/outcome/model.npz").read_bytes()
    assert before.metadata["imagery_of_labels"] is False and "NOT read from this map" in before.metadata[
        "calibration_note"]
    with rasterio.open(end.cog_path) as a, rasterio.open(before.cog_path) as b:
        pa, pb = a.read(1), b.read(1)
        rows, cols = np.mgrid[0 : a.height, 0 : a.width]
        x, y = a.transform * (cols + 0.5, rows + 0.5)
        crs = a.crs
    units = pd.concat([pd.read_csv(p) for _, p in study.trials])
    to_map = Transformer.from_crs("EPSG:4326", crs, always_xy=True)

    def distance(where):
        ux, uy = to_map.transform(units.loc[where, "lon"], units.loc[where, "lat"])
        out = np.full(pa.shape, np.inf)
        for px, py in zip(ux, uy, strict=True):
            out = np.minimum(out, np.hypot(x - px, y - py))
        return out

    units = units.reset_index(drop=True)
    moved = (units["treated"] == 1) & (units["tau_true"] > 0)
    # chips miss every treated area (630 m squares: corners 315 sqrt(2) m from their unit)
    far = np.isfinite(pa) & (distance(moved) > (315 + 135) * np.sqrt(2) + 45)
    near = np.isfinite(pa) & (distance(moved & (units["tau_true"] > 0.3)) < 100)
    assert far.sum() > 100 and near.sum() > 10
    np.testing.assert_array_equal(pa[far], pb[far])
    assert (pa[near] != pb[near]).mean() > 0.9  # treatment raised wealth there: the map moved
    trials = parse_trials_config({
        "run_dir": str(d / "change_trials"), "map": str(end.metadata_path.parent),
        "baseline_map": str(before.metadata_path.parent),
        "trials": [{"name": n, "units": str(p)} for n, p in study.trials]})
    trials_stage(trials)
    res = json.loads((d / "change_trials" / "results.json").read_text())
    assert res["map"]["outcome"].startswith("the change of the map")
    assert res["map"]["baseline_cog_sha256"] == before.cog_sha256
    with pytest.raises(Exception, match="linear"):
        parse_trials_config({**trials.model_dump(mode="json"), "method": "tweedie"})


def test_a_run_config_reads_its_outcome_from_a_map_and_corrects_ate_and_rate(wealth):
    """`debias.map`: the map sampled at each unit is the outcome; ATE and RATE naive and corrected,
    every corrected SE with the map's calibration uncertainty (whole blocks); off-map units listed."""
    import numpy as np

    from eocausal.config import parse_config, parse_map_config
    from eocausal.maps import MapArtifact
    from eocausal.pipeline import run_pipeline
    from eocausal.pipeline.outcome_map import map_stage

    d, study = wealth
    artifact = map_stage(parse_map_config({
        "run_dir": str(d / "run_map"),
        **_survey_on_scene(study),
        "encoder": {"name": "mosaiks", "n_features": 64},
        "features": {"pca_components": None},
        "outcome": {"model": "ridge", "block_km": 2.5, "calibration_size": 0.3},
        "region": {"footprint": True, "cell_size_m": 150, "tile_cells": 64},
    }), progress=False)
    units = pd.concat([pd.read_csv(p) for _, p in study.trials], ignore_index=True)
    off = units.head(3).assign(unit_id=["off_a", "off_b", "off_c"], lon=units["lon"].head(3) + 5.0)
    pd.concat([units, off]).to_csv(d / "run_units.csv", index=False)
    cfg = {
        "run_dir": str(d / "run_from_map"),
        "study": {"units": str(d / "run_units.csv"), "id_col": "unit_id", "treatment_col": "treated",
                  "lon_col": "lon", "lat_col": "lat", "crs": "EPSG:4326", "propensity": 0.5,
                  "true_effect_col": "tau_true"},
        "imagery": {"source": "raster", "paths": [str(study.scene_path)], "recipe": "c2_sr",
                    "scales": [{"name": "1km", "size_km": 1.0, "out_px": 16}]},
        "encoder": {"name": "mosaiks", "n_features": 32},
        "features": {"pca_components": 5},
        "estimate": {"n_estimators": 100},
        "evaluate": {"n_bootstrap": 50, "compare_scales": False},
        "debias": {"map": str(artifact.metadata_path.parent), "radius_m": 150, "method": "linear"},
        "map": {"enabled": False},
    }
    res = run_pipeline(parse_config(cfg), progress=False).results
    excluded = pd.read_csv(d / "run_from_map" / "exclusions.csv")
    off_rows = excluded[excluded["unit_id"].isin(off["unit_id"])]
    assert len(off_rows) == 3 and off_rows["reason"].str.contains("no valid map value within 150 m").all()
    debias = res["debias"]
    assert debias["map"]["cog_sha256"] == artifact.cog_sha256
    assert debias["map"]["calibration_resampling"].startswith("whole spatial blocks")
    rows = {r["outcome"].split(",")[0]: r for r in debias["rows"]}
    naive, corrected = rows["naive (predicted)"], rows["corrected (linear)"]
    true_ate = float(units["tau_true"].mean())
    assert naive["estimate"] < 0.7 * true_ate  # the map's shrinkage
    assert abs(corrected["estimate"] - true_ate) < 3 * corrected["std_err"]
    for row in [corrected, res["rate"]["main"], *res["rate"]["table"]]:
        assert row["calibration_se"] > 0
        assert row["std_err"] == pytest.approx(np.hypot(row["sampling_se"], row["calibration_se"]), rel=1e-6)
    # the map's values are the outcome the run analysed
    cate = pd.read_csv(d / "run_from_map" / "cate.csv")
    assert len(cate) == len(units)
    # the same config again reuses the fitted models; a changed map is never served stale
    estimates = d / "run_from_map" / "estimate" / "estimates.npz"
    before = estimates.stat().st_mtime_ns
    run_pipeline(parse_config(cfg), progress=False)
    assert estimates.stat().st_mtime_ns == before
    changed = d / "changed.tif"
    with rasterio.open(artifact.cog_path) as src:
        profile, bands = src.profile, src.read()
    with rasterio.open(changed, "w", **profile) as dst:
        dst.write(bands * np.float32(1.5))
    MapArtifact.write(artifact.metadata_path.parent, cog_path=changed, calibration_table=artifact.calibration,
                      metadata=artifact.metadata)
    again = run_pipeline(parse_config(cfg), progress=False).results
    assert estimates.stat().st_mtime_ns != before
    assert again["debias"]["map"]["cog_sha256"] not in ("", artifact.cog_sha256)
