"""The map job: predict a region tile by tile, resumably, and stream the result into a COG.

:func:`run_map_job` calls the caller's ``predict_tile(tile, points)`` for every
tile of a :class:`~eocausal.maps.RegionGrid` that is not done yet, saves each
tile's bands atomically (one ``.npz`` per tile) under ``work_dir``, then
assembles the Cloud-Optimized GeoTIFF tile by tile (:func:`~eocausal.maps.cog.write_cog`)
and renames it into place. The job never imports a model framework: the
callable holds the model.

Layout of ``work_dir`` while a job runs (deleted once the COG is in place)::

    manifest.json       fingerprint of (key, grid, bands, tile size); tiles of another fingerprint are discarded
    tiles/000000.npz    one array per band, shape (tile height, tile width), nodata in place
    gdal/               GDAL's own temporary files

A process killed at any point (``kill -9``) leaves at most finished tiles, the
manifest and temporaries named as :mod:`eocausal.atomic` names them; the next
run deletes the temporaries, reuses the tiles and writes the same COG. The
COG carries the fingerprint in its tags (``EOCAUSAL_MAP_FINGERPRINT``), so a
rerun on an unchanged job returns at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio

from eocausal.atomic import atomic_path, remove_stale_temporaries, write_json
from eocausal.errors import EstimationError, InputDataError
from eocausal.maps.cog import Band, check_bands, file_dtype, write_cog
from eocausal.maps.grid import RegionGrid, Tile

__all__ = ["FINGERPRINT_TAG", "PredictTile", "job_fingerprint", "run_map_job"]

#: Dataset tag of the COG holding the job's fingerprint.
FINGERPRINT_TAG = "EOCAUSAL_MAP_FINGERPRINT"
_JOB_VERSION = 1
_PROGRESS_EVERY_S = 5.0

PredictTile = Callable[[Tile, pd.DataFrame], Mapping[str, np.ndarray]]


def job_fingerprint(grid: RegionGrid, bands: Sequence[Band], tile_cells: int, key: str) -> str:
    """SHA-256 of everything that decides the map's content: the key, the grid, the bands, the tiling."""
    payload = {
        "version": _JOB_VERSION,
        "key": key,
        "grid": grid.to_dict(),
        "bands": [[b.name, b.dtype.str, b.description, repr(b.nodata)] for b in bands],
        "tile_cells": int(tile_cells),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class _TileStore:
    """Finished tiles of one job fingerprint under ``work_dir``."""

    def __init__(self, work_dir: Path, fingerprint: str, manifest: dict[str, Any]) -> None:
        self.root = work_dir
        self.tile_dir = work_dir / "tiles"
        self.gdal_tmp = work_dir / "gdal"
        self.manifest_path = work_dir / "manifest.json"
        self.fingerprint = fingerprint
        self._manifest = {"fingerprint": fingerprint, **manifest}

    def finished(self) -> list[Path]:
        """The saved tiles (``000042.npz``); a temporary being written (``.000042.npz.tmp-…``) is not one."""
        return sorted(self.tile_dir.glob("[0-9]*.npz"))

    def open(self) -> int:
        """Delete stale temporaries and tiles of another fingerprint; return the tiles kept."""
        self.tile_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root)
        shutil.rmtree(self.gdal_tmp, ignore_errors=True)
        current = None
        if self.manifest_path.is_file():
            try:
                current = json.loads(self.manifest_path.read_text()).get("fingerprint")
            except (json.JSONDecodeError, AttributeError):
                current = None
        if current != self.fingerprint:
            for f in self.finished():
                f.unlink()
            write_json(self._manifest, self.manifest_path)
        return len(self.finished())

    def path(self, tile: Tile) -> Path:
        return self.tile_dir / f"{tile.index:06d}.npz"

    def done(self, tile: Tile) -> bool:
        return self.path(tile).is_file()

    def save(self, tile: Tile, arrays: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self.path(tile)) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    def load(self, tile: Tile) -> dict[str, np.ndarray]:
        with np.load(self.path(tile), allow_pickle=False) as z:
            return {name: z[name] for name in z.files}

    def remove(self) -> None:
        """Delete the tiles, the manifest and GDAL's folder; the folder too when nothing else is left."""
        for f in self.finished():
            f.unlink()
        remove_stale_temporaries(self.tile_dir)
        shutil.rmtree(self.gdal_tmp, ignore_errors=True)
        self.manifest_path.unlink(missing_ok=True)
        for folder in (self.tile_dir, self.root):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _cog_fingerprint(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with rasterio.open(path) as src:
            return src.tags().get(FINGERPRINT_TAG)
    except rasterio.errors.RasterioIOError:
        return None


def _tile_arrays(
    tile: Tile, points: pd.DataFrame, values: Any, bands: Sequence[Band], dtype: np.dtype
) -> dict[str, np.ndarray]:
    """Place ``predict_tile``'s per-point values into tile arrays (nodata elsewhere), checking them."""
    where = f"predict_tile for tile {tile.index} (rows {tile.row_off}.., cols {tile.col_off}..)"
    if not isinstance(values, Mapping):
        raise EstimationError(
            f"{where} must return a dict of band name -> array; got {type(values).__name__}."
        )
    names = [b.name for b in bands]
    missing = [n for n in names if n not in values]
    extra = [k for k in values if k not in names]
    if missing or extra:
        raise EstimationError(
            f"{where} returned bands {sorted(values)}; expected exactly {names} "
            f"(missing {missing}, undeclared {extra}). Return one array per declared band."
        )
    rows = points["row"].to_numpy() - tile.row_off
    cols = points["col"].to_numpy() - tile.col_off
    out = {}
    for b in bands:
        v = np.asarray(values[b.name])
        if v.shape != (len(points),):
            raise EstimationError(
                f"{where}: band {b.name!r} has shape {v.shape}; expected ({len(points)},), one value per point."
            )
        try:
            v = v.astype(np.float64)
        except (TypeError, ValueError):
            raise EstimationError(
                f"{where}: band {b.name!r} is not numeric (dtype {v.dtype})."
            ) from None
        missing_value = np.isnan(v)
        if b.dtype.kind in "ui":
            info = np.iinfo(b.dtype)
            ok = missing_value | ((v == np.round(v)) & (v >= info.min) & (v <= info.max))
            if not ok.all():
                bad = points["unit_id"].to_numpy()[~ok][:5].tolist()
                raise EstimationError(
                    f"{where}: band {b.name!r} ({b.dtype}) has non-integral or out-of-range values at cells {bad}; "
                    f"round them, or declare the band as a float type."
                )
        elif np.isinf(v).any():
            bad = points["unit_id"].to_numpy()[np.isinf(v)][:5].tolist()
            raise EstimationError(f"{where}: band {b.name!r} has infinite values at cells {bad}.")
        keep = ~missing_value
        arr = np.full((tile.height, tile.width), b.nodata, dtype=dtype)
        arr[rows[keep], cols[keep]] = v[keep].astype(b.dtype).astype(dtype)
        out[b.name] = arr
    return out


def run_map_job(
    grid: RegionGrid,
    predict_tile: PredictTile,
    out_path: str | os.PathLike,
    *,
    bands: Sequence,
    tile_cells: int = 256,
    work_dir: str | os.PathLike | None = None,
    key: str = "",
    progress: bool = True,
) -> Path:
    """Predict every cell of a region, tile by tile, into a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    grid : RegionGrid
        The region and its cells.
    predict_tile : callable
        ``predict_tile(tile, points) -> {band name: ndarray of shape (len(points),)}``
        with ``points`` from :meth:`RegionGrid.cell_points` (``unit_id``, ``lon``,
        ``lat``, ``x``, ``y``, ``row``, ``col``). NaN marks a cell without a
        prediction (e.g. an excluded chip); it is written as the band's nodata.
        Not called for tiles without cells in the region.
    out_path : path-like
        The COG to write; replaced atomically when done.
    bands : list of (name, dtype, description, nodata)
        The bands, in file order. The file has one dtype (the smallest that
        holds every band's) and one nodata value, which every band must share.
    tile_cells : int, default=256
        Side of a tile in cells: the unit of work, of resumption and of memory.
    work_dir : path-like, optional
        Folder of the finished tiles; default ``.<out name>.work`` beside
        ``out_path``. Deleted (its files written by the job) once the COG is in place.
    key : str, default=""
        The caller's hash of the model and inputs. Tiles saved under another
        key (or grid, bands or tile size) are discarded; an existing COG with
        the same fingerprint is returned without any work. WARNING: with the
        default empty key, tiles of an earlier run on the same grid and bands
        are reused even if the model changed; pass a key that changes with it.
    progress : bool, default=True
        Print progress (tiles done, cells per second) to stderr, at most every 5 seconds.

    Returns
    -------
    Path
        ``out_path``.

    Notes
    -----
    Memory is bounded by one tile: predictions are held for one tile at a time
    and the COG is assembled window by window with GDAL's cache capped at
    :data:`~eocausal.maps.cog.GDAL_CACHE_MB` MB. Killing the job at any point
    and running it again gives a byte-identical COG (with a deterministic
    ``predict_tile``) and leaves no temporary file.
    """
    if not isinstance(grid, RegionGrid):
        raise InputDataError(
            f"`grid` must be a RegionGrid; got {type(grid).__name__}. Build one with RegionGrid.from_bbox."
        )
    if not callable(predict_tile):
        raise InputDataError(
            f"`predict_tile` must be callable (tile, points) -> dict; got {type(predict_tile).__name__}."
        )
    if not isinstance(key, str):
        raise InputDataError(
            f"`key` must be a string (a hash of the model and inputs); got {type(key).__name__}."
        )
    checked = check_bands(bands)
    tiles = grid.tiles(tile_cells)
    out_path = Path(out_path)
    work = Path(work_dir) if work_dir is not None else out_path.with_name(f".{out_path.name}.work")
    fingerprint = job_fingerprint(grid, checked, tile_cells, key)
    store = _TileStore(
        work,
        fingerprint,
        {
            "key": key,
            "grid": grid.to_dict(),
            "tile_cells": int(tile_cells),
            "n_tiles": len(tiles),
            "bands": [
                {
                    "name": b.name,
                    "dtype": b.dtype.name,
                    "description": b.description,
                    "nodata": b.nodata,
                }
                for b in checked
            ],
        },
    )
    remove_stale_temporaries(out_path.parent, recursive=False)
    if _cog_fingerprint(out_path) == fingerprint:
        if work.is_dir():
            store.remove()
        _say(progress, f"map: {out_path} is up to date")
        return out_path
    kept = store.open()
    dtype = file_dtype(checked)
    todo = [t for t in tiles if not store.done(t)]
    _say(
        progress,
        f"map: {grid.n_cells} cells in {len(tiles)} tiles; {kept} tiles reused, {len(todo)} to predict",
    )
    start = last = time.perf_counter()
    n_done = 0
    for i, tile in enumerate(todo, start=1):
        points = grid.cell_points(tile)
        values = (
            predict_tile(tile, points) if len(points) else {b.name: np.empty(0) for b in checked}
        )
        store.save(tile, _tile_arrays(tile, points, values, checked, dtype))
        n_done += len(points)
        now = time.perf_counter()
        if now - last >= _PROGRESS_EVERY_S or i == len(todo):
            last = now
            _say(
                progress,
                f"map: {i}/{len(todo)} tiles, {n_done / max(now - start, 1e-9):,.0f} cells/s",
            )
    write_cog(
        out_path,
        grid,
        checked,
        tiles,
        store.load,
        tags={FINGERPRINT_TAG: fingerprint, "EOCAUSAL_MAP_KEY": key},
        gdal_tmp=store.gdal_tmp,
    )
    store.remove()
    _say(progress, f"map: wrote {out_path}")
    return out_path


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)
