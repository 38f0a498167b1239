"""Sampling a map at points: the cell holding each point, or the mean of the cells around it."""

from __future__ import annotations

import os

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.windows import Window

from eocausal.errors import CRSMismatchError, ImageryError, InputDataError
from eocausal.validation import check_outcome

__all__ = ["band_index", "sample_map"]


def band_index(src: rasterio.DatasetReader, band: int | str) -> int:
    """The 1-based index of ``band``: an index, or a band's ``name`` tag or description."""
    if isinstance(band, str):
        for i in src.indexes:
            if band in (src.tags(i).get("name"), src.descriptions[i - 1]):
                return i
        names = [src.tags(i).get("name") or src.descriptions[i - 1] for i in src.indexes]
        raise InputDataError(f"`band` {band!r} is not in {src.name!r}; its bands are {names}.")
    if (
        not isinstance(band, (int, np.integer))
        or isinstance(band, bool)
        or not 1 <= band <= src.count
    ):
        raise InputDataError(
            f"`band` must be a band name or an index in [1, {src.count}]; got {band!r}."
        )
    return int(band)


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= values != nodata
    return valid


def sample_map(
    path: str | os.PathLike,
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    band: int | str = 1,
    radius_m: float | None = None,
) -> np.ndarray:
    """Values of a map at WGS84 points.

    Parameters
    ----------
    path : path-like
        A single-file raster (e.g. the COG of :func:`~eocausal.maps.run_map_job`).
    lon, lat : array-like of shape (n,)
        Points in WGS84 degrees.
    band : int or str, default=1
        1-based band index, or a band's name (its ``name`` tag or description).
    radius_m : float, optional
        Without it, the value of the cell holding each point. With it, the mean
        of the valid cells whose centre lies within ``radius_m`` metres of the
        point (the raster's CRS must be projected in metres); useful when the
        points are displaced, as DHS clusters are.

    Returns
    -------
    ndarray of float64, shape (n,)
        NaN where the point is off the map or no valid (non-nodata, finite) cell is found.

    Notes
    -----
    With cell centres :math:`c_j`, values :math:`v_j` and valid cells :math:`V`,

    .. math::

        \\hat v(p) = \\frac{1}{|A_p|}\\sum_{j \\in A_p} v_j, \\qquad
        A_p = \\{j \\in V : \\lVert c_j - p \\rVert_2 \\le r\\}.

    Cells are read window by window (points ordered by row, then column), never the whole raster.
    """
    lon = check_outcome(lon, name="lon")
    lat = check_outcome(lat, name="lat", n=len(lon))
    if np.any(np.abs(lat) > 90) or np.any(np.abs(lon) > 360):
        raise InputDataError(
            "`lon`/`lat` must be WGS84 degrees (|lat| <= 90); were they swapped or projected?"
        )
    if radius_m is not None:
        radius_m = float(radius_m)
        if not np.isfinite(radius_m) or radius_m < 0:
            raise InputDataError(
                f"`radius_m` must be a non-negative number of metres; got {radius_m!r}."
            )
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise ImageryError(f"`path` {os.fspath(path)!r}: cannot open the map ({exc}).") from exc
    with src:
        if src.crs is None:
            raise CRSMismatchError(
                f"`path` {os.fspath(path)!r} has no CRS; cannot place WGS84 points on it."
            )
        index = band_index(src, band)
        t = src.transform
        if t.b != 0 or t.d != 0:
            raise ImageryError(
                f"`path` {os.fspath(path)!r} is rotated; sample_map needs a north-up raster."
            )
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
        col_f, row_f = ~t @ (np.asarray(x), np.asarray(y))
        out = np.full(len(lon), np.nan)
        if radius_m is None:
            rows, cols = np.floor(row_f).astype(np.int64), np.floor(col_f).astype(np.int64)
            on = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
            for i in np.flatnonzero(on)[np.lexsort((cols[on], rows[on]))]:
                v = src.read(index, window=Window(int(cols[i]), int(rows[i]), 1, 1))
                out[i] = float(v[0, 0]) if _valid(v, src.nodata)[0, 0] else np.nan
            return out
        if not src.crs.is_projected or src.crs.linear_units_factor[1] != 1.0:
            raise CRSMismatchError(
                f"`radius_m` needs a map in a projected CRS in metres; {os.fspath(path)!r} is in "
                f"{src.crs.to_string()!r}. Sample without `radius_m` or reproject the map."
            )
        dx, dy = abs(t.a), abs(t.e)
        for i in np.lexsort((col_f, row_f)):
            # cells whose centre can lie within the radius: |(c + 0.5) - col_f| * dx <= r
            c0 = max(int(np.ceil(col_f[i] - 0.5 - radius_m / dx)), 0)
            c1 = min(int(np.floor(col_f[i] - 0.5 + radius_m / dx)), src.width - 1)
            r0 = max(int(np.ceil(row_f[i] - 0.5 - radius_m / dy)), 0)
            r1 = min(int(np.floor(row_f[i] - 0.5 + radius_m / dy)), src.height - 1)
            if c0 > c1 or r0 > r1:
                continue
            v = src.read(index, window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1)).astype(np.float64)
            cc, rr = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
            cx, cy = t @ (cc + 0.5, rr + 0.5)
            near = (cx - x[i]) ** 2 + (cy - y[i]) ** 2 <= radius_m**2
            use = near & _valid(v, src.nodata)
            if use.any():
                out[i] = float(v[use].mean())
        return out
