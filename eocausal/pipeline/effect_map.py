"""The effect-map stage: the run's CATE model predicted over the imagery, as a Cloud-Optimized GeoTIFF.

The region is the footprint of the imagery (:meth:`~eocausal.maps.RegionGrid.from_raster_footprint`),
cut into square cells sized so that about ``cfg.map.grid`` cells lie along its longer side.
:func:`~eocausal.maps.run_map_job` streams it tile by tile: each tile's cell centres are
embedded with the run's encoder (a resumable embedding job per tile), turned into features
by the run model's fitted transform (tabular covariates held at their training-half means)
and predicted by the run's CATE model (training half, all scales; :func:`refit_run_model`).
``map/cate.tif`` is float32 with NaN as nodata (one GeoTIFF has one dtype and one nodata);
its bands, in order:

1. ``cate``: :math:`\\hat\\tau(x)` at the cell centre;
2. ``expected_tau_hat_lower``, 3. ``expected_tau_hat_upper``: the model's 95% interval for
   its expected prediction :math:`E[\\hat\\tau(x)]`, NOT for :math:`\\tau(x)` (the model's bias
   is not included; as the same columns of ``cate.csv``);
4. ``valid``: 1 where the cell's chips were valid and it was predicted, 0 where they were
   excluded (nodata, clouds; the other bands are NaN there);
5. ``out_of_support``: 1 where the cell's image features lie outside the training units'
   (:class:`~eocausal.maps.FeatureSupport`), else 0.

Cells outside every raster's extent are NaN in every band. The stage is reused when the
estimate, the embeddings and the ``map`` config are unchanged, and a killed map job resumes
from its finished tiles.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.config import RunConfig
from eocausal.errors import ExclusionWarning, NothingEmbeddedError
from eocausal.pipeline.embed import EmbeddingStage, build_encoder, run_embed
from eocausal.pipeline.estimate import Estimates, covariates_at_training_means, refit_run_model
from eocausal.pipeline.folder import fingerprint, is_current, write_manifest
from eocausal.pipeline.study import Log, PreparedStudy, _nolog

__all__ = ["cate_bands", "effect_map_stage", "footprint_grid"]

#: Side of a map tile in cells: the unit of work, of resumption and of memory.
TILE_CELLS = 256
#: Out-of-support rule: distance to the k-th nearest training unit above their own quantile.
SUPPORT_K = 10
SUPPORT_QUANTILE = 0.99


def cate_bands(k: int = SUPPORT_K, quantile: float = SUPPORT_QUANTILE) -> list[tuple[str, str, str, float]]:
    """The bands of ``map/cate.tif`` as ``(name, dtype, description, nodata)``, in file order.

    Parameters
    ----------
    k : int, default=10
        Neighbour rank of the out-of-support rule.
    quantile : float, default=0.99
        Quantile of the training units' own k-NN distances above which a cell is out of support.
    """
    nan = float("nan")
    interval = ("end of the 95% interval for the model's expected prediction E[tau_hat(x)], "
                "NOT for tau(x) (bias not included)")
    support = (f"1 where the distance from the cell's image features to its {k}-th nearest training "
               f"unit exceeds the training units' own {quantile:.0%} quantile of that distance "
               "(leave-one-out), else 0")
    return [
        ("cate", "float32", ("estimated CATE tau_hat(x) at the cell centre (the run's model, fitted on "
                            "the training half)"), nan),
        ("expected_tau_hat_lower", "float32", f"lower {interval}", nan),
        ("expected_tau_hat_upper", "float32", f"upper {interval}", nan),
        ("valid", "float32", ("1 where the cell's chips were valid and it was predicted, 0 where they "
                             "were excluded"), nan),
        ("out_of_support", "float32", support, nan),
    ]


def footprint_grid(paths: list[str | Path], n_cells: int):
    """A :class:`~eocausal.maps.RegionGrid` over the rasters' footprint, ``n_cells`` along its longer side.

    The cell side is the footprint's longer side (in the grid's CRS: the first raster's
    when it is in metres, else the UTM zone of its centre) divided by ``n_cells``; the grid
    snaps to multiples of the cell side, so it has ``n_cells`` or ``n_cells + 1`` cells
    along that side. Cells whose centre lies outside every raster's extent are masked.
    """
    import shapely

    from eocausal.maps import RegionGrid

    paths = [str(p) for p in paths]
    probe = RegionGrid.from_raster_footprint(paths, cell_size_m=1.0)
    left, bottom, right, top = shapely.union_all(probe.polygons).bounds
    return RegionGrid.from_raster_footprint(paths, cell_size_m=max(right - left, top - bottom) / n_cells)


class _CellPredictor:
    """``predict_tile`` of the map job: chips -> embeddings -> features -> the run's CATE model.

    The encoder, the refitted model and the training units' features are built on the
    first tile, so a map job with nothing left to do builds none of them.
    """

    def __init__(self, cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage, est: Estimates,
                 out: Path, k: int) -> None:
        self.cfg, self.study, self.stage, self.est, self.out, self.k = cfg, study, stage, est, out, k

    @cached_property
    def encoder(self) -> Any:
        from eocausal.imagery import ChipDataset

        if self.stage.encoder is not None:
            return self.stage.encoder
        dataset = self.stage.dataset or ChipDataset(self.study.units, self.study.source, self.study.spec)
        return build_encoder(self.cfg, dataset)

    @cached_property
    def run_model(self) -> Any:
        return refit_run_model(self.cfg, self.study, self.stage.embeddings, self.est)

    def features(self, emb) -> Any:
        """:class:`~eocausal.features.Features` of ``emb``'s units, covariates at their training-half means."""
        index = pd.Index(emb.unit_ids, name=self.cfg.study.id_col)
        covariates = covariates_at_training_means(self.cfg, self.study, self.est, index)
        return self.run_model.features.transform(emb, covariates)

    @cached_property
    def support(self) -> tuple[np.ndarray, Any]:
        """The image-feature columns, and the support check fitted once on the training units'
        features in them (:class:`~eocausal.maps.FeatureSupport`).

        Cells have no covariates of their own (they are held at the training means), so the
        support rule compares image features only; the training units' covariates, which
        ``features`` also holds at their means, therefore do not matter here.
        """
        from eocausal.features import COVARIATES_BLOCK
        from eocausal.maps import FeatureSupport

        est = self.est
        train = self.features(self.stage.embeddings.subset(est.ids[est.train]))
        columns = np.flatnonzero(np.asarray(train.blocks) != COVARIATES_BLOCK)
        return columns, FeatureSupport(k=self.k, quantile=SUPPORT_QUANTILE).fit(train.X[:, columns])

    def __call__(self, tile, points: pd.DataFrame) -> dict[str, np.ndarray]:
        from eocausal.imagery import ChipDataset
        from eocausal.units import StudyUnits

        n = len(points)
        values = {name: np.full(n, np.nan) for name, *_ in cate_bands()}
        values["valid"][:] = 0.0
        cells = StudyUnits.from_frame(points, id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326")
        try:
            with warnings.catch_warnings():
                # cells without valid imagery are expected in a map: the `valid` band records them
                warnings.simplefilter("ignore", ExclusionWarning)
                result, _ = run_embed(self.cfg, ChipDataset(cells, self.study.source, self.study.spec),
                                      out_dir=self.out / "embeddings" / f"r{tile.row_off}_c{tile.col_off}",
                                      encoder=self.encoder, progress=False)
        except NothingEmbeddedError:
            return values  # every cell of the tile was excluded (e.g. nodata): valid 0, NaN elsewhere
        emb = result.embeddings
        X = self.features(emb).X
        rows = pd.Index(points["unit_id"].astype(str)).get_indexer(emb.unit_ids)
        model = self.run_model.model
        lower, upper = model.effect_interval(X)
        values["cate"][rows] = model.effect(X)
        values["expected_tau_hat_lower"][rows] = lower
        values["expected_tau_hat_upper"][rows] = upper
        values["valid"][rows] = 1.0
        columns, support = self.support
        values["out_of_support"][rows] = support.predict(X[:, columns])
        return values


def effect_map_stage(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage, est: Estimates, *,
                     log: Log = _nolog, progress: bool = True) -> Path | None:
    """Write ``map/cate.tif`` (or reuse it); ``None`` when maps are off or impossible (pre-cut chips).

    Parameters
    ----------
    cfg : RunConfig
        ``cfg.map.grid`` sets the cells along the footprint's longer side.
    study : PreparedStudy
    stage : EmbeddingStage
        The run's embeddings (and encoder, when it was built in this process).
    est : Estimates
        The estimate artifact; its key keys the map job.
    log : callable, optional
    progress : bool, default=True
        Print the map job's progress to stderr.

    Returns
    -------
    Path or None
        ``run_dir/map/cate.tif``, a Cloud-Optimized GeoTIFF with the bands of :func:`cate_bands`.
    """
    from eocausal.maps import run_map_job

    if not cfg.map.enabled or cfg.imagery.source not in ("raster", "simulated"):
        return None
    out = cfg.run_dir / "map"
    k = min(SUPPORT_K, len(est.train) - 1)
    bands = cate_bands(k, SUPPORT_QUANTILE)
    key = fingerprint({"estimate": est.key, "embeddings": stage.key, "map": cfg.map.model_dump(mode="json"),
                       "bands": bands, "tile_cells": TILE_CELLS})
    if is_current(out, key, ["cate.tif"]):
        log("effect map: inputs unchanged, reusing map/cate.tif")
        return out / "cate.tif"
    grid = footprint_grid(study.imagery_paths, cfg.map.grid)
    log(f"effect map: {grid.height} x {grid.width} cells of {grid.cell_size:.0f} m over the imagery ...")
    predictor = _CellPredictor(cfg, study, stage, est, out, k)
    path = run_map_job(grid, predictor, out / "cate.tif", bands=bands, tile_cells=TILE_CELLS,
                       work_dir=out / "work", key=est.key, progress=progress)
    write_manifest(out, key, {"estimate": est.key, "embeddings": stage.key})
    return path
