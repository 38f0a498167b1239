"""The effect-map stage: a COG of the run model's CATE over the imagery, recomputable and reused.

The imagery is the study's scene plus a small all-nodata raster 297 km to its east, so that
the grid (300 cells of 1 km along its longer side) is wide enough for two tiles and an
overview while only the 16 x 16 cells over the scene (and 3 x 3 over the empty raster) are
embedded; the cells between the two rasters lie outside the region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml
from pyproj import Transformer

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
GRID = 300


def _far_raster(scene: Path, path: Path) -> Path:
    """A 3 km x 3 km raster of nodata with the scene's bands, its right edge 300 km east of the scene's left."""
    with rasterio.open(scene) as src:
        profile = src.profile.copy()
        left, top = src.bounds.left, src.bounds.top
        descriptions = src.descriptions
        nodata = src.nodata
    size = 100
    profile.update(width=size, height=size, tiled=False,
                   transform=rasterio.transform.from_origin(left + 297_000, top, 30.0, 30.0))
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((profile["count"], size, size), nodata, dtype=profile["dtype"]))
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
    return path


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    from eocausal.config import parse_config
    from eocausal.pipeline import embed_stage, estimate_stage, prepare_study
    from eocausal.pipeline.effect_map import effect_map_stage
    from eocausal.simulate import make_demo_study

    root = tmp_path_factory.mktemp("effect_map")
    sim = make_demo_study(root / "sim", seed=3, n_units=300, scene_size=512)
    far = _far_raster(sim.scene_path, root / "far.tif")
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(root / "run")
    data["study"].pop("simulate")
    data["study"]["units"] = str(sim.units_path)
    data["imagery"] = {"source": "raster", "paths": [str(sim.scene_path), str(far)], "recipe": "c2_sr",
                       "scales": [{"name": "1km", "size_km": 1.0, "out_px": 8},
                                  {"name": "3km", "size_km": 3.0, "out_px": 8}]}
    data["encoder"]["n_features"] = 16
    data["estimate"]["n_estimators"] = 40
    data["evaluate"].update({"n_bootstrap": 20, "compare_scales": False})
    data["map"] = {"enabled": True, "grid": GRID}
    cfg = parse_config(data)
    study = prepare_study(cfg)
    stage = embed_stage(cfg, study, progress=False)
    est = estimate_stage(cfg, study, stage.embeddings, stage.key)
    path = effect_map_stage(cfg, study, stage, est, progress=False)
    return cfg, study, stage, est, path


def test_the_cate_map_is_a_cloud_optimized_geotiff(mapped):
    from eocausal.pipeline.effect_map import cate_bands

    cfg, study, _, _, path = mapped
    assert path == cfg.run_dir / "map" / "cate.tif"
    with rasterio.open(path) as src, rasterio.open(study.imagery_paths[0]) as scene:
        assert src.crs == scene.crs
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2]
        assert src.count == 5 and set(src.dtypes) == {"float32"} and np.isnan(src.nodata)
        assert list(src.descriptions) == [d for _, _, d, _ in cate_bands()]
        assert [src.tags(i)["name"] for i in range(1, 6)] == [
            "cate", "expected_tau_hat_lower", "expected_tau_hat_upper", "valid", "out_of_support"]
        # about `map.grid` cells along the longer side (the grid snaps to whole cells)
        assert src.width in (GRID, GRID + 1) and src.res == pytest.approx((1000.0, 1000.0))
        cate, lower, upper, valid, outside = src.read()
    # cells between the two rasters are outside the region: NaN in every band
    assert np.isnan(valid[:, 100:250]).all()
    predicted = valid == 1
    # the empty raster's 3 x 3 cells are in the region but had no valid imagery (a tile of their own)
    assert (valid[:3, 297:] == 0).all() and np.isnan(valid[3:, 250:]).all() and np.isnan(valid[:, 250:297]).all()
    assert 150 <= predicted.sum() <= 256
    assert np.isfinite(cate[predicted]).all() and np.isnan(cate[~predicted]).all()
    assert (lower[predicted] <= cate[predicted]).all() and (cate[predicted] <= upper[predicted]).all()
    assert set(np.unique(outside[predicted])) <= {0.0, 1.0} and np.isnan(outside[~predicted]).all()
    assert np.std(cate[predicted]) > 0.01


def test_cate_band_equals_a_refitted_models_predictions_at_cell_centres(mapped, tmp_path):
    """Five cells recomputed outside the map job: chips at the centres, a refitted model."""
    from eocausal.imagery import ChipDataset
    from eocausal.pipeline import refit_run_model, run_embed
    from eocausal.pipeline.embed import build_encoder
    from eocausal.pipeline.estimate import covariates_at_training_means, load_estimates
    from eocausal.units import StudyUnits

    cfg, study, stage, _, path = mapped
    with rasterio.open(path) as src:
        cate, lower, upper, valid = src.read([1, 2, 3, 4])
        rows, cols = np.nonzero(valid == 1)
        pick = np.random.default_rng(0).choice(rows.size, size=5, replace=False)
        rows, cols = rows[pick], cols[pick]
        x, y = src.xy(rows, cols)  # cell centres
        crs = src.crs
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    ids = [f"cell{i}" for i in range(5)]
    cells = StudyUnits.from_frame(pd.DataFrame({"unit_id": ids, "lon": lon, "lat": lat}),
                                  id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326")
    encoder = build_encoder(cfg, ChipDataset(study.units, study.source, study.spec))
    result, _ = run_embed(cfg, ChipDataset(cells, study.source, study.spec), out_dir=tmp_path / "emb",
                          encoder=encoder, progress=False)
    emb = result.embeddings
    assert sorted(emb.unit_ids) == ids
    order = [ids.index(u) for u in emb.unit_ids]
    rows, cols = rows[order], cols[order]
    fresh = load_estimates(cfg, study, stage.key)  # from disk: no model in memory, so it is refitted
    assert fresh.run_model is None
    model = refit_run_model(cfg, study, stage.embeddings, fresh)
    X = model.features.transform(emb, covariates_at_training_means(cfg, study, fresh, pd.Index(emb.unit_ids))).X
    expected = model.model.effect(X)
    lo, hi = model.model.effect_interval(X)
    np.testing.assert_allclose(cate[rows, cols], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lower[rows, cols], lo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upper[rows, cols], hi, rtol=1e-5, atol=1e-6)


def test_a_rerun_reuses_the_map_without_embedding(mapped, monkeypatch):
    from eocausal.pipeline import effect_map
    from eocausal.pipeline.estimate import load_estimates

    cfg, study, stage, _, path = mapped
    before = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the reused map must not embed or refit anything")

    monkeypatch.setattr(effect_map, "run_embed", fail)
    monkeypatch.setattr(effect_map, "refit_run_model", fail)
    est = load_estimates(cfg, study, stage.key)
    assert effect_map.effect_map_stage(cfg, study, stage, est, progress=False) == path
    assert path.stat().st_mtime_ns == before
