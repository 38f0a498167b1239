"""Outcome maps: an outcome model fitted on labelled locations, then predicted over a region.

``fit_outcome_stage`` (``eocausal fit-outcome``): labelled locations (e.g. survey clusters
with a wealth index) -> chips -> embeddings -> multi-scale features -> :class:`~eocausal.outcome.OutcomeModel`
with spatially blocked cross-fitting and a held-out calibration split -> ``outcome/``
(model, out-of-fold predictions, metrics per fold, calibration table).

``map_stage`` (``eocausal map``): a grid over the region, streamed tile by tile through
chips -> embeddings -> features -> predictions, written as a Cloud-Optimized GeoTIFF with a
prediction band, a valid mask and an out-of-support flag, plus the map artifact
(calibration table and metadata) that trials reuse (:mod:`eocausal.trials`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_csv, write_json
from eocausal.errors import ConfigError, NothingEmbeddedError
from eocausal.pipeline.embed import build_encoder, embed_stage, run_embed
from eocausal.pipeline.folder import (
    file_fingerprint,
    fingerprint,
    is_current,
    mark_complete,
    mark_running,
    versions,
    write_manifest,
)
from eocausal.pipeline.study import Log, PreparedStudy, _nolog, build_imagery, check_encoder

__all__ = ["FittedOutcome", "fit_outcome_stage", "map_stage", "prepare_labels"]

#: band name, dtype, description, nodata of an outcome map (one GeoTIFF: one dtype, one nodata)
MAP_BANDS = (
    ("prediction", "float32", "predicted outcome at the cell centre", float("nan")),
    ("valid", "float32", "1 where the cell had enough valid imagery to be predicted, else 0", float("nan")),
    ("out_of_support", "float32",
     "1 where the cell's features lie outside the labelled locations' (k-NN distance rule), else 0",
     float("nan")),
)


def prepare_labels(cfg: Any, *, log: Log = _nolog) -> PreparedStudy:
    """The labelled locations of ``cfg.labels`` as study units (outcome = the label)."""
    from eocausal.units import StudyUnits, read_units_table

    check_encoder(cfg)
    lab = cfg.labels
    table = read_units_table(lab.path, id_col=lab.id_col)
    missing = [c for c in (lab.target_col, lab.lon_col, lab.lat_col, lab.group_col) if c and c not in table.columns]
    if missing:
        raise ConfigError(f"config field `labels`: columns {missing} are not in {lab.path}")
    units = StudyUnits.from_frame(table, id_col=lab.id_col, outcome_col=lab.target_col,
                                  lon_col=lab.lon_col, lat_col=lab.lat_col, crs=lab.crs)
    source, spec = build_imagery(cfg, list(cfg.imagery.paths))
    description = f"{units.n_units} labelled locations from {Path(lab.path).name}; target {lab.target_col!r}."
    log(description)
    table = table.assign(**{lab.id_col: table[lab.id_col].astype(str)}).set_index(lab.id_col)
    return PreparedStudy(units, table, source, spec, list(cfg.imagery.paths), description,
                         units_path=Path(lab.path))


@dataclass
class FittedOutcome:
    """The fitted outcome model, its feature transform and what the map needs from the labels."""

    model: Any
    features: Any
    train_features: np.ndarray
    study: PreparedStudy
    stage: Any
    key: str
    ids: np.ndarray


def _groups(cfg: Any, study: PreparedStudy, ids: np.ndarray) -> np.ndarray:
    from eocausal.outcome import spatial_blocks

    if cfg.labels.group_col:
        return study.table.loc[ids, cfg.labels.group_col].astype(str).to_numpy()
    gdf = study.units.subset(ids).gdf
    xy = gdf.to_crs(gdf.estimate_utm_crs())
    return spatial_blocks(np.column_stack([xy.geometry.x, xy.geometry.y]), block_km=cfg.outcome.block_km)


def fit_outcome_stage(cfg: Any, *, log: Log = _nolog, progress: bool = True) -> FittedOutcome:
    """Fit (or reuse) the outcome model of ``cfg`` and write ``outcome/``."""
    from eocausal.features import MultiScaleFeatures
    from eocausal.outcome import OutcomeModel

    study = prepare_labels(cfg, log=log)
    mark_running(cfg.run_dir)
    stage = embed_stage(cfg, study, log=log, progress=progress)
    embedded = set(stage.embeddings.unit_ids.tolist())
    ids = np.array([u for u in study.units.unit_id if u in embedded], dtype=str)
    emb = stage.embeddings.subset(ids)
    f = cfg.features
    builder = MultiScaleFeatures(scales=f.scales, pca_components=f.pca_components, standardize=f.standardize,
                                random_state=cfg.seed)
    X = builder.fit(emb).transform(emb).X
    y = study.units.subset(ids).outcome.astype(float)
    out = cfg.run_dir / "outcome"
    key = fingerprint({"embeddings": stage.key, "labels": file_fingerprint(cfg.labels.path),
                       "config": {k: getattr(cfg, k).model_dump(mode="json") for k in ("labels", "features", "outcome")},
                       "seed": cfg.seed})
    if is_current(out, key, ["model.npz", "calibration.csv"]):
        log("outcome model: inputs unchanged, reusing outcome/")
        model = OutcomeModel.load(out / "model.npz")
    else:
        o = cfg.outcome
        groups = _groups(cfg, study, ids)
        log(f"outcome model ({o.model}) with {o.n_folds}-fold spatially blocked cross-fitting over "
            f"{len(np.unique(groups))} blocks ...")
        model = OutcomeModel(model=o.model, n_folds=o.n_folds, calibration_size=o.calibration_size,
                             random_state=cfg.seed).fit(X, y, groups=groups)
        model.save(out / "model.npz")
        write_csv(pd.DataFrame({"unit_id": ids, "group": groups, "fold": model.fold_,
                                "calibration": model.is_calibration_, "truth": y,
                                "predicted": model.oof_prediction_}), out / "predictions.csv", float_format="%.10g")
        write_csv(model.metrics_, out / "metrics.csv", float_format="%.10g")
        cal = model.calibration_table_.assign(unit_id=ids[model.calibration_table_["row"].to_numpy()])
        write_csv(cal[["unit_id", "group", "predicted", "truth"]], out / "calibration.csv", float_format="%.10g")
        write_manifest(out, key, {"embeddings": stage.key})
    mark_complete(cfg.run_dir, {})
    return FittedOutcome(model, builder, X, study, stage, key, ids)


def _calibration_pairs(cfg: Any, fitted: FittedOutcome, cog: Path) -> tuple[pd.DataFrame, str]:
    """The map's calibration pairs: the held-out labelled locations' truth and prediction.

    With the true (undisplaced) coordinates in ``labels.true_lon_col``/``true_lat_col``, the
    prediction is the map's value at the true location, as a trial unit's is; otherwise the
    model's prediction at the published coordinates (biased toward a smaller slope when
    those are displaced).
    """
    from eocausal.maps import sample_map

    cal = pd.read_csv(cfg.run_dir / "outcome" / "calibration.csv", dtype={"unit_id": str})
    lab = cfg.labels
    if lab.true_lon_col is None:
        return cal, "at the published coordinates"
    rows = fitted.study.table.loc[cal["unit_id"]]
    predicted = sample_map(cog, rows[lab.true_lon_col].to_numpy(float), rows[lab.true_lat_col].to_numpy(float))
    keep = np.isfinite(predicted)
    return (cal.assign(predicted=predicted)[keep].reset_index(drop=True),
            f"read from the map at the true locations ({int((~keep).sum())} without a valid cell left out)")


def _region_grid(cfg: Any, study: PreparedStudy):
    from eocausal.maps import RegionGrid

    r = cfg.region
    if r is None:
        raise ConfigError("config section `region` is required for a map: give `bbox`, `polygons` or `footprint: true`")
    if r.bbox is not None:
        return RegionGrid.from_bbox(tuple(r.bbox), bbox_crs=r.bbox_crs, cell_size_m=r.cell_size_m)
    if r.polygons is not None:
        return RegionGrid.from_polygons(r.polygons, cell_size_m=r.cell_size_m)
    return RegionGrid.from_raster_footprint([str(p) for p in study.imagery_paths], cell_size_m=r.cell_size_m)


def map_stage(cfg: Any, *, log: Log = _nolog, progress: bool = True):
    """Predict the outcome over ``cfg.region`` tile by tile; write the COG and the map artifact."""
    from eocausal.imagery import ChipDataset
    from eocausal.maps import FeatureSupport, MapArtifact, run_map_job
    from eocausal.units import StudyUnits

    fitted = fit_outcome_stage(cfg, log=log, progress=progress)
    study = fitted.study
    mark_running(cfg.run_dir)
    grid = _region_grid(cfg, study)
    r = cfg.region
    other_date = r.imagery is not None
    # another date of the same sensor: same chip spec and encoder, other pixels
    source = build_imagery(cfg, [str(p) for p in r.imagery])[0] if other_date else study.source
    encoder = fitted.stage.encoder or build_encoder(cfg, ChipDataset(study.units, study.source, study.spec))
    out = cfg.run_dir / "map"
    support = FeatureSupport(k=r.support_k, quantile=r.support_quantile).fit(fitted.train_features)
    log(f"map: {grid.n_cells} cells of {r.cell_size_m:g} m in tiles of {r.tile_cells} x {r.tile_cells} ...")

    def predict_tile(tile, points: pd.DataFrame) -> dict[str, np.ndarray]:
        n = len(points)
        prediction = np.full(n, np.nan, dtype=np.float32)
        valid = np.zeros(n, dtype=np.float32)
        outside = np.full(n, np.nan, dtype=np.float32)
        if n == 0:
            return {"prediction": prediction, "valid": valid, "out_of_support": outside}
        cells = StudyUnits.from_frame(points, id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326")
        dataset = ChipDataset(cells, source, study.spec)
        try:
            res, _ = run_embed(cfg, dataset, out_dir=out / "work" / f"embeddings_{tile.row_off}_{tile.col_off}",
                               encoder=encoder, progress=False)
        except NothingEmbeddedError:  # every cell of the tile lacks valid imagery: valid 0, NaN elsewhere
            return {"prediction": prediction, "valid": valid, "out_of_support": outside}
        emb = res.embeddings
        if emb.n_units:
            X = fitted.features.transform(emb).X
            rows = pd.Index(points["unit_id"].astype(str)).get_indexer(emb.unit_ids)
            prediction[rows] = fitted.model.predict(X)
            valid[rows] = 1
            outside[rows] = support.predict(X).astype(np.float32)
        return {"prediction": prediction, "valid": valid, "out_of_support": outside}

    key = fingerprint({"outcome": fitted.key, "region": r.model_dump(mode="json"), "bands": MAP_BANDS,
                       "imagery": [file_fingerprint(p) for p in r.imagery] if other_date else None})
    cog = run_map_job(grid, predict_tile, out / f"{cfg.labels.target_col}.tif", bands=list(MAP_BANDS),
                      tile_cells=r.tile_cells, work_dir=out / "work", key=key, progress=progress)
    shutil.rmtree(out / "work", ignore_errors=True)  # per-tile embeddings: only needed to resume
    metrics = pd.read_csv(cfg.run_dir / "outcome" / "metrics.csv")
    if other_date:  # this map is not of the labels' date: keep the model's own held-out pairs
        calibration = pd.read_csv(cfg.run_dir / "outcome" / "calibration.csv", dtype={"unit_id": str})
        where = ("predicted from the labels' imagery at the labels' coordinates, NOT read from this "
                 "map, which is of other imagery; to correct a change, calibrate with the map of the "
                 "labels' date")
    else:
        calibration, where = _calibration_pairs(cfg, fitted, cog)
    metadata = {
        "value": f"predicted {cfg.labels.target_col!r} at the cell centre ({cfg.outcome.model} on "
                 f"{cfg.encoder.name} embeddings at scales {[s.name for s in cfg.imagery.scales]})",
        "bands": [{"name": n, "dtype": d, "description": desc} for n, d, desc, _ in MAP_BANDS],
        "cell_size_m": r.cell_size_m,
        "imagery": [Path(p).name for p in (r.imagery if other_date else study.imagery_paths)],
        "imagery_of_labels": not other_date,
        "support_rule": f"a cell is out of support when the distance to its {r.support_k}-th nearest labelled "
                        f"location in feature space exceeds the labelled locations' own {r.support_quantile:.0%} "
                        "quantile of that distance (leave-one-out)",
        "metrics": metrics.to_dict(orient="records"),
        "calibration_note": "pairs of prediction and truth for labelled locations held out of every fit "
                            f"(whole spatial blocks), the prediction {where}; fit the shrinkage "
                            "correction on them",
        "seed": cfg.seed,
        "versions": versions(),
        "key": key,
    }
    artifact = MapArtifact.write(out, cog_path=cog, calibration_table=calibration, metadata=metadata)
    write_json({"map": str(Path(cog).relative_to(cfg.run_dir)), "metrics": metadata["metrics"]},
               cfg.run_dir / "results.json")
    mark_complete(cfg.run_dir, {})
    log(f"map: {cog}")
    return artifact
