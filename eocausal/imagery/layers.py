"""Georeferenced grids: :class:`Layer`, the metadata of a raster file, and open file handles."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.errors import RasterioError

from eocausal.errors import ChipReadError, ImageryError

__all__ = ["FileHandles", "Layer", "open_raster_meta"]


@dataclass(frozen=True)
class Layer:
    """One georeferenced grid of bands.

    Attributes
    ----------
    name : str
        The file path, or the STAC item id.
    crs_wkt : str
    transform : tuple of 6 floats
        Affine coefficients ``(a, b, c, d, e, f)`` (rasterio order).
    width, height : int
    bands : dict of str -> (str, int)
        Band name -> (file path, 1-based band index in that file).
    nodata : dict of str -> float or None
        Nodata value per file path.
    block : (int, int)
        Block (tile or strip) shape (rows, cols) of the first band's file.
    date : str or None
        ISO date (YYYY-MM-DD) of the acquisition, None when undated.
    """

    name: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    bands: dict[str, tuple[str, int]]
    nodata: dict[str, float | None]
    block: tuple[int, int]
    date: str | None = None

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def paths(self) -> list[str]:
        return sorted({p for p, _ in self.bands.values()})


def open_raster_meta(path: str) -> dict[str, Any]:
    """Read the grid metadata of one raster file, with errors naming the file."""
    if not str(path).startswith("/vsi") and not Path(path).exists():
        raise ImageryError(
            f"Imagery file not found: {path}. Check the path (or the STAC asset href)."
        )
    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                raise ImageryError(
                    f"Imagery file {path} has no CRS; georeference it (e.g. gdal_edit.py -a_srs)."
                )
            if ds.transform.b != 0 or ds.transform.d != 0:
                raise ImageryError(
                    f"Imagery file {path} is rotated; warp it to a north-up grid first (gdalwarp)."
                )
            block = ds.block_shapes[0] if ds.block_shapes else (1, ds.width)
            return {
                "crs_wkt": ds.crs.to_wkt(),
                "transform": tuple(ds.transform)[:6],
                "width": ds.width,
                "height": ds.height,
                "count": ds.count,
                "descriptions": list(ds.descriptions),
                "nodata": ds.nodata,
                "block": (int(block[0]), int(block[1])),
            }
    except RasterioError as exc:
        raise ChipReadError(f"Could not open imagery file {path} as a raster: {exc}") from exc


class FileHandles:
    """Open rasterio datasets of one process, keyed by path (never pickled).

    At most ``max_open`` stay open (least recently used closed first), so a
    long STAC time series does not exhaust file descriptors.
    """

    def __init__(self, max_open: int = 128) -> None:
        self.pid = os.getpid()
        self.max_open = max_open
        self.open: OrderedDict[str, Any] = OrderedDict()

    def get(self, path: str) -> Any:
        if self.pid != os.getpid():  # forked into a worker: never share a parent's handles
            self.pid, self.open = os.getpid(), OrderedDict()
        ds = self.open.get(path)
        if ds is not None:
            self.open.move_to_end(path)
            return ds
        try:
            ds = rasterio.open(path)
        except RasterioError as exc:
            raise ChipReadError(f"Could not open imagery file {path}: {exc}") from exc
        self.open[path] = ds
        while len(self.open) > self.max_open:
            self.open.popitem(last=False)[1].close()
        return ds

    def close(self) -> None:
        if self.pid == os.getpid():
            for ds in self.open.values():
                ds.close()
        self.open = OrderedDict()
