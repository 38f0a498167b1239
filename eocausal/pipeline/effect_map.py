"""The effect-map stage: the run's CATE model predicted on a grid over the imagery (GeoTIFF).

Grid cells are embedded with the run's encoder (a resumable job of their own), their
features built with the run model's fitted feature transform, tabular covariates held at
their training-half means. Reused when the model and the grid are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eocausal.config import RunConfig
from eocausal.pipeline.embed import EmbeddingStage, build_encoder, run_embed
from eocausal.pipeline.estimate import Estimates, covariates_at_training_means, refit_run_model
from eocausal.pipeline.folder import fingerprint, is_current, write_manifest
from eocausal.pipeline.study import Log, PreparedStudy, _nolog

__all__ = ["effect_map_stage"]


def effect_map_stage(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage, est: Estimates, *,
                     log: Log = _nolog, progress: bool = True) -> Path | None:
    """Write ``map/cate.tif`` (or reuse it); ``None`` when maps are off or impossible (pre-cut chips)."""
    from eocausal.imagery import ChipDataset
    from eocausal.maps import grid_over_raster, write_map
    from eocausal.units import StudyUnits

    if not cfg.map.enabled or cfg.imagery.source not in ("raster", "simulated"):
        return None
    out = cfg.run_dir / "map"
    key = fingerprint({"estimate": est.key, "embeddings": stage.key, "map": cfg.map.model_dump(mode="json")})
    if is_current(out, key, ["cate.tif"]):
        log("effect map: inputs unchanged, reusing map/cate.tif")
        return out / "cate.tif"
    log(f"effect map on a {cfg.map.grid} x {cfg.map.grid} grid ...")
    grid = grid_over_raster(study.imagery_paths[0], cfg.map.grid)
    grid_units = StudyUnits.from_frame(grid.points, id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326")
    dataset = ChipDataset(grid_units, study.source, study.spec)
    encoder = stage.encoder
    if encoder is None:
        encoder = build_encoder(cfg, stage.dataset or ChipDataset(study.units, study.source, study.spec))
    result, _ = run_embed(cfg, dataset, out_dir=out / "embeddings", encoder=encoder, log=log, progress=progress)
    emb = result.embeddings
    run_model = refit_run_model(cfg, study, stage.embeddings, est)
    index = pd.Index(emb.unit_ids, name=cfg.study.id_col)
    X = run_model.features.transform(emb, covariates_at_training_means(cfg, study, est, index)).X
    path = write_map(grid.to_array(emb.unit_ids, run_model.model.effect(X)), grid, out / "cate.tif")
    write_manifest(out, key, {"estimate": est.key, "embeddings": stage.key})
    return path
