"""Cloud-Optimized GeoTIFFs assembled tile by tile, with bounded memory.

:func:`write_cog` writes a tiled, DEFLATE-compressed GeoTIFF (with a
predictor) one tile window at a time into a temporary file beside the target,
builds its overviews, copies it into COG layout (GDAL's ``COG`` driver, or
``GTiff`` with ``COPY_SRC_OVERVIEWS=YES`` where GDAL is older than 3.1), and
renames the result over the target. GDAL's block cache is capped during the
whole assembly, so memory stays that of one tile plus the cap, whatever the
size of the map. Temporary files are named as :mod:`eocausal.atomic` names
them, so :func:`~eocausal.atomic.remove_stale_temporaries` deletes those of a
killed writer.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.env import GDALVersion

from eocausal.atomic import atomic_path
from eocausal.errors import ConfigError
from eocausal.maps.grid import RegionGrid, Tile

__all__ = [
    "BLOCK_SIZE",
    "GDAL_CACHE_MB",
    "Band",
    "check_bands",
    "file_dtype",
    "overview_factors",
    "write_cog",
]

#: Side of the GeoTIFF blocks (tiles) in pixels.
BLOCK_SIZE = 256
#: GDAL block cache, in MB, while a map is assembled (GDAL's default is 5% of the RAM).
GDAL_CACHE_MB = 64


class Band(NamedTuple):
    """One band of a map.

    Attributes
    ----------
    name : str
        Key of the band in ``predict_tile``'s result; stored as the band tag ``name``.
    dtype : numpy dtype
        Type the band's values must fit (integer bands: integral values in range).
    description : str
        The GeoTIFF band description.
    nodata : float or int
        Value of cells outside the region and of missing (NaN) predictions.
    """

    name: str
    dtype: np.dtype
    description: str
    nodata: float


def _same_nodata(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


def check_bands(bands: Sequence) -> list[Band]:
    """Validate ``bands`` (a list of ``(name, dtype, description, nodata)``) and return them as :class:`Band`.

    A GeoTIFF holds one data type and one nodata value for all its bands: the
    file's type is :func:`numpy.result_type` of the bands' types, and every
    band must declare the same nodata.
    """
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or len(bands) == 0:
        raise ConfigError(
            f"`bands` must be a non-empty list of (name, dtype, description, nodata); got {bands!r}. "
            "E.g. [('wealth', 'float32', 'predicted wealth index', float('nan'))]."
        )
    out = []
    for i, spec in enumerate(bands):
        if not isinstance(spec, Sequence) or isinstance(spec, (str, bytes)) or len(spec) != 4:
            raise ConfigError(
                f"`bands[{i}]` must be (name, dtype, description, nodata); got {spec!r}."
            )
        name, dtype, description, nodata = spec
        if not isinstance(name, str) or not name:
            raise ConfigError(f"`bands[{i}]`: the name must be a non-empty string; got {name!r}.")
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            raise ConfigError(
                f"`bands[{i}]` ({name!r}): {dtype!r} is not a numpy dtype; use e.g. 'float32'."
            ) from None
        if dtype.kind not in "uif":
            raise ConfigError(
                f"`bands[{i}]` ({name!r}): dtype {dtype} cannot be stored in a GeoTIFF band; "
                "use an integer or float type (flags: 'uint8')."
            )
        try:
            nodata = float(nodata)
        except (TypeError, ValueError):
            raise ConfigError(
                f"`bands[{i}]` ({name!r}): nodata must be a number (NaN for float bands); got {nodata!r}."
            ) from None
        if dtype.kind in "ui" and not np.isnan(nodata) and not _fits(nodata, dtype):
            raise ConfigError(
                f"`bands[{i}]` ({name!r}): nodata {nodata!r} does not fit dtype {dtype}."
            )
        out.append(Band(name, dtype, str(description), nodata))
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"`bands` names must be unique; got {names}.")
    if not all(_same_nodata(b.nodata, out[0].nodata) for b in out):
        raise ConfigError(
            f"`bands` declare different nodata values {[b.nodata for b in out]}; a GeoTIFF stores one "
            "nodata value per file. Use the same nodata for every band: NaN when a band is float "
            "(integer bands such as uint8 flags are then stored in the float file, missing cells NaN)."
        )
    ftype = file_dtype(out)
    if np.isnan(out[0].nodata) and ftype.kind != "f":
        raise ConfigError(
            f"`bands` nodata is NaN but the file type is {ftype}; NaN needs a float band. Give integer "
            "bands an integer nodata (e.g. 255 for uint8 flags) or add a float band."
        )
    if not np.isnan(out[0].nodata) and not _fits(out[0].nodata, ftype):
        raise ConfigError(f"`bands` nodata {out[0].nodata!r} does not fit the file type {ftype}.")
    return out


def _fits(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return bool(np.isfinite(value) or np.isnan(value))
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


def file_dtype(bands: Sequence[Band]) -> np.dtype:
    """The one data type of the GeoTIFF: the smallest type holding every band's values."""
    return np.result_type(*[b.dtype for b in bands])


def overview_factors(width: int, height: int, block: int = BLOCK_SIZE) -> list[int]:
    """Factors 2, 4, 8, ... until the coarsest overview fits in one block."""
    factors, f = [], 1
    while max(width, height) / f > block:
        f *= 2
        factors.append(f)
    return factors


def _stage_path(path: Path) -> Path:
    """A temporary sibling for the intermediate GeoTIFF, named like :mod:`eocausal.atomic`'s temporaries."""
    return path.with_name(
        f".{path.name}.stage.tmp-{socket.gethostname()}-{os.getpid()}{path.suffix}"
    )


def _has_cog_driver() -> bool:
    return GDALVersion.runtime().at_least("3.1")


def _copy_to_cog(stage: Path, target: Path, *, predictor: int, gdal_tmp: Path) -> None:
    """Copy the tiled GeoTIFF ``stage`` (with overviews) into COG layout at ``target``."""
    if _has_cog_driver():
        options = {
            "driver": "COG",
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "YES",
            "BLOCKSIZE": BLOCK_SIZE,
            "OVERVIEWS": "FORCE_USE_EXISTING",
            "BIGTIFF": "IF_SAFER",
        }
    else:
        options = {
            "driver": "GTiff",
            "TILED": "YES",
            "BLOCKXSIZE": BLOCK_SIZE,
            "BLOCKYSIZE": BLOCK_SIZE,
            "COMPRESS": "DEFLATE",
            "PREDICTOR": predictor,
            "COPY_SRC_OVERVIEWS": "YES",
            "BIGTIFF": "IF_SAFER",
        }
    with rasterio.Env(CPL_TMPDIR=str(gdal_tmp)):
        rasterio.shutil.copy(stage, target, **options)


def write_cog(
    path: str | os.PathLike,
    grid: RegionGrid,
    bands: Sequence[Band],
    tiles: Sequence[Tile],
    read_tile: Callable[[Tile], Mapping[str, np.ndarray]],
    *,
    tags: Mapping[str, str] | None = None,
    gdal_tmp: str | os.PathLike,
) -> Path:
    """Assemble a COG from tiles, holding one tile in memory at a time, and rename it into place.

    Parameters
    ----------
    path : path-like
        The COG to write (replaced atomically).
    grid : RegionGrid
        Gives the CRS, transform and size.
    bands : sequence of Band
        From :func:`check_bands`.
    tiles : sequence of Tile
        Tiles covering the grid.
    read_tile : callable
        ``read_tile(tile)`` returns ``{band name: ndarray (tile.height, tile.width)}``
        in the file's dtype, nodata already in place.
    tags : mapping, optional
        Dataset tags (GDAL metadata) to store.
    gdal_tmp : path-like
        Folder for GDAL's own temporary files (``CPL_TMPDIR``).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    gdal_tmp = Path(gdal_tmp)
    gdal_tmp.mkdir(parents=True, exist_ok=True)
    dtype = file_dtype(bands)
    predictor = 3 if dtype.kind == "f" else 2
    nodata = bands[0].nodata
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": dtype.name,
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "compress": "deflate",
        "predictor": predictor,
        "BIGTIFF": "IF_SAFER",
    }
    resampling = Resampling.average if dtype.kind == "f" else Resampling.nearest
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), atomic_path(path) as tmp:
        stage = _stage_path(path)
        try:
            with rasterio.open(stage, "w", **profile) as dst:
                for tile in tiles:
                    arrays = read_tile(tile)
                    dst.write(np.stack([arrays[b.name] for b in bands]), window=tile.window)
                for i, b in enumerate(bands, start=1):
                    dst.set_band_description(i, b.description)
                    dst.update_tags(i, name=b.name)
                dst.update_tags(**dict(tags or {}))
                factors = overview_factors(grid.width, grid.height)
                if factors:
                    dst.build_overviews(factors, resampling)
                    dst.update_tags(ns="rio_overview", resampling=resampling.name)
            _copy_to_cog(stage, tmp, predictor=predictor, gdal_tmp=gdal_tmp)
        finally:
            stage.unlink(missing_ok=True)
    return path
