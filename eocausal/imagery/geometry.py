"""Chip geometry: the pixel of a point, the size of a window, and cutting windows.

Conventions
-----------
The unit's point falls in pixel ``(r, c) = (floor(row), floor(col))`` of the
layer it is read from (:func:`pixel_coords`). A window of ``h x w`` pixels
starts at ``(r - h // 2, c - w // 2)`` (:func:`window_origin`), so the unit's
pixel sits at index ``(h // 2, w // 2)`` of the window (for odd sizes, the
exact centre). Windows that leave the imagery are padded, never shifted: the
padding is invalid in the mask (:func:`pad_window`). Every scale of a unit is
centred on the same pixel; the largest window is read once and the smaller
ones are cropped from it (:func:`centre_crop`).

A scale in kilometres covers ``size_km x size_km`` on the ground
(:func:`km_window_extent`): in a projected layer

.. math::

    h = \\frac{1000\\, s_{km}}{|e|\\, f}, \\qquad w = \\frac{1000\\, s_{km}}{|a|\\, f},

with ``a, e`` the pixel width and height of the affine transform and ``f`` the
metres per CRS unit; in a geographic layer the square is built in the point's
UTM zone and its corners are projected back. Windows are ``max(1, round(.))``
pixels (:func:`window_px_for_km`).
"""

from __future__ import annotations

import numpy as np
from pyproj import CRS, Transformer

from eocausal.imagery.layers import Layer

__all__ = [
    "centre_crop",
    "km_window_extent",
    "morton_key",
    "pad_window",
    "pixel_coords",
    "utm_crs",
    "window_origin",
    "window_px_for_km",
]


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS holding ``(lon, lat)`` (north or south by the sign of lat)."""
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def pixel_coords(
    layer: Layer, x: np.ndarray, y: np.ndarray, crs: CRS
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel coordinates (row, col) of points in ``layer``.

    Parameters
    ----------
    layer : Layer
    x, y : ndarray of shape (n,)
        Point coordinates in ``crs``.
    crs : pyproj.CRS

    Returns
    -------
    row, col : ndarray of float, shape (n,)
        ``floor(row), floor(col)`` is the pixel containing the point.
    """
    lcrs = layer.crs
    if not lcrs.equals(crs):
        x, y = Transformer.from_crs(crs, lcrs, always_xy=True).transform(x, y)
    col, row = ~layer.affine @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.asarray(row), np.asarray(col)


def km_window_extent(
    layer: Layer, row: np.ndarray, col: np.ndarray, size_km: float
) -> tuple[np.ndarray, np.ndarray]:
    """Height and width in (fractional) pixels of ``size_km`` x ``size_km`` around points.

    Parameters
    ----------
    layer : Layer
    row, col : ndarray of shape (n,)
        Fractional pixel coordinates of the points in ``layer``.
    size_km : float

    Returns
    -------
    height, width : ndarray of float, shape (n,)
        Not rounded; below 1 when the square is smaller than a pixel.
    """
    crs = layer.crs
    n = len(row)
    if not crs.is_geographic:
        factor = crs.axis_info[0].unit_conversion_factor  # metres per CRS unit
        res_x = abs(layer.transform[0]) * factor
        res_y = abs(layer.transform[4]) * factor
        return np.full(n, size_km * 1000.0 / res_y), np.full(n, size_km * 1000.0 / res_x)
    lon, lat = layer.affine @ (
        np.asarray(col, dtype=np.float64),
        np.asarray(row, dtype=np.float64),
    )
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(lon, lat)
    zones = np.array([utm_crs(a, b).to_epsg() for a, b in zip(lon, lat, strict=True)])
    h = np.zeros(n)
    w = np.zeros(n)
    half = size_km * 500.0
    inv = ~layer.affine
    for epsg in np.unique(zones):
        sel = zones == epsg
        fwd = Transformer.from_crs("EPSG:4326", CRS.from_epsg(int(epsg)), always_xy=True)
        back = Transformer.from_crs(CRS.from_epsg(int(epsg)), crs, always_xy=True)
        ex, ny = fwd.transform(lon[sel], lat[sel])
        rows, cols = [], []
        for dx, dy in ((-half, -half), (-half, half), (half, -half), (half, half)):
            cx, cy = back.transform(ex + dx, ny + dy)
            c, r = inv @ (np.asarray(cx), np.asarray(cy))
            rows.append(r)
            cols.append(c)
        rows_a, cols_a = np.vstack(rows), np.vstack(cols)
        h[sel] = rows_a.max(0) - rows_a.min(0)
        w[sel] = cols_a.max(0) - cols_a.min(0)
    return h, w


def window_px_for_km(
    layer: Layer, row: np.ndarray, col: np.ndarray, size_km: float
) -> tuple[np.ndarray, np.ndarray]:
    """Window height and width in whole pixels covering ``size_km`` x ``size_km`` around points.

    Returns
    -------
    height, width : ndarray of int, shape (n,)
        :func:`km_window_extent` rounded half to even, at least 1.
    """
    h, w = km_window_extent(layer, row, col, size_km)
    return (
        np.maximum(1, np.round(h)).astype(np.int64),
        np.maximum(1, np.round(w)).astype(np.int64),
    )


def window_origin(row: np.ndarray, col: np.ndarray, h: np.ndarray, w: np.ndarray):
    """Top-left pixel ``(r - h // 2, c - w // 2)`` of windows centred on the pixels holding points.

    Parameters
    ----------
    row, col : ndarray of float or int
        Pixel coordinates of the points (floored here).
    h, w : ndarray of int
        Window sizes.

    Returns
    -------
    row_off, col_off : ndarray of int
    """
    r = np.floor(row).astype(np.int64)
    c = np.floor(col).astype(np.int64)
    return r - np.asarray(h) // 2, c - np.asarray(w) // 2


def pad_window(
    array: np.ndarray, row_off: int, col_off: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a window from an in-memory array, padding with zeros outside it.

    Parameters
    ----------
    array : ndarray of shape (..., H, W)
    row_off, col_off : int
        Top-left corner of the window in pixels (may be negative).
    height, width : int

    Returns
    -------
    window : ndarray of shape (..., height, width)
        Same dtype; zeros where the window leaves the array.
    inside : ndarray of bool, shape (height, width)
        True where the window lies on the array.
    """
    H, W = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (height, width), dtype=array.dtype)
    inside = np.zeros((height, width), dtype=bool)
    r0, r1 = max(row_off, 0), min(row_off + height, H)
    c0, c1 = max(col_off, 0), min(col_off + width, W)
    if r1 > r0 and c1 > c0:
        out[..., r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = array[
            ..., r0:r1, c0:c1
        ]
        inside[r0 - row_off : r1 - row_off, c0 - col_off : c1 - col_off] = True
    return out, inside


def centre_crop(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """The ``h x w`` window of ``array`` (..., H, W) that shares its centre pixel ``(H // 2, W // 2)``."""
    H, W = array.shape[-2:]
    r0, c0 = H // 2 - h // 2, W // 2 - w // 2
    return array[..., r0 : r0 + h, c0 : c0 + w]


def morton_key(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Interleave the bits of non-negative block rows and columns (Z-order key)."""
    key = np.zeros(len(r), dtype=np.int64)
    r = np.clip(r, 0, 2**20 - 1).astype(np.int64)
    c = np.clip(c, 0, 2**20 - 1).astype(np.int64)
    for bit in range(20):
        key |= ((r >> bit) & 1) << (2 * bit + 1)
        key |= ((c >> bit) & 1) << (2 * bit)
    return key
