"""Effect maps of the pipeline: an n x n grid of points over one raster, a small GeoTIFF out.

The grid's points are treated as study units without treatment or outcome:
they go through the same chips, encoder and feature transform as the units,
and a fitted CATE model predicts the effect at each. Cells whose chips were
excluded (nodata, clouds) are NaN in the map, never filled in. The grid is held
in memory; region-wide maps go through :class:`~eocausal.maps.RegionGrid` and
:func:`~eocausal.maps.run_map_job` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine, from_origin

from eocausal.atomic import atomic_path

__all__ = ["MapGrid", "grid_over_raster", "write_map"]


@dataclass
class MapGrid:
    """A regular grid of cell centres.

    Attributes
    ----------
    points : DataFrame
        One row per cell: ``unit_id`` (``"g{row}_{col}"``), ``x``, ``y`` (in ``crs``),
        ``lon``, ``lat`` (WGS84), ``row``, ``col``.
    transform : Affine
        Cell to ``crs`` coordinates.
    crs : str
        The raster's CRS.
    shape : tuple of int
        (rows, cols).
    """

    points: pd.DataFrame
    transform: Affine
    crs: str
    shape: tuple[int, int]

    def to_array(self, unit_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Place per-point ``values`` (for ``unit_ids``) into a (rows, cols) array, NaN elsewhere."""
        out = np.full(self.shape, np.nan, dtype=np.float32)
        pos = self.points.set_index("unit_id").loc[np.asarray(unit_ids, dtype=str), ["row", "col"]]
        out[pos["row"].to_numpy(), pos["col"].to_numpy()] = values
        return out


def grid_over_raster(path: str | os.PathLike, n: int, *, margin: float = 0.0) -> MapGrid:
    """An ``n`` x ``n`` grid of cell centres covering the raster's bounds.

    Parameters
    ----------
    path : path-like
        A raster readable by rasterio.
    n : int
        Cells per side.
    margin : float, default=0.0
        Distance (in CRS units) kept free at each edge.
    """
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs.to_string()
    left, bottom, right, top = left + margin, bottom + margin, right - margin, top - margin
    cell_x = (right - left) / n
    cell_y = (top - bottom) / n
    rows, cols = np.mgrid[0:n, 0:n]
    x = left + (cols.ravel() + 0.5) * cell_x
    y = top - (rows.ravel() + 0.5) * cell_y
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    points = pd.DataFrame(
        {
            "unit_id": [
                f"g{r:03d}_{c:03d}" for r, c in zip(rows.ravel(), cols.ravel(), strict=True)
            ],
            "x": x,
            "y": y,
            "lon": lon,
            "lat": lat,
            "row": rows.ravel(),
            "col": cols.ravel(),
        }
    )
    transform = from_origin(left, top, cell_x, cell_y)
    return MapGrid(points, transform, crs, (n, n))


def write_map(
    values: np.ndarray, grid: MapGrid, path: str | os.PathLike, *, description: str = "cate"
) -> Path:
    """Write a (rows, cols) float array as a single-band float32 GeoTIFF (NaN = nodata), atomically."""
    path = Path(path)
    values = np.asarray(values, dtype=np.float32)
    if values.shape != grid.shape:
        raise ValueError(f"map values have shape {values.shape}; the grid is {grid.shape}")
    with (
        atomic_path(path) as tmp,
        rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            height=grid.shape[0],
            width=grid.shape[1],
            count=1,
            dtype="float32",
            crs=grid.crs,
            transform=grid.transform,
            nodata=np.nan,
            compress="deflate",
        ) as dst,
    ):
        dst.write(values, 1)
        dst.set_band_description(1, description)
    return path
