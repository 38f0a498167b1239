"""Imagery sources: where chips come from, and all CRS handling.

Two kinds of source exist:

- *Georeferenced* sources (:class:`RasterSource`, :class:`StacSource`) hold a
  list of :class:`Layer` grids (a GeoTIFF/COG/VRT file, or a STAC item whose
  bands are separate files), possibly in different CRSs and on different
  dates. Unit points are reprojected into each layer's CRS here, windows are
  sized here (pixels, or kilometres through a local UTM CRS when a layer is
  geographic), and windows are read in-bounds and padded in numpy.
- *Keyed* sources (:class:`PrecutChipSource`, :class:`CallableSource`) hold
  chips that are already cut, looked up by each unit's ``image_key``.

Sources keep only metadata when pickled; file handles are opened lazily, once
per process (a DataLoader worker reopens its own after a fork).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.errors import RasterioError
from rasterio.windows import Window

from eocausal.errors import BandError, ChipReadError, ConfigError, ImageryError
from eocausal.imagery.bands import find_qa_band, qa_pixel_invalid

__all__ = [
    "CallableSource",
    "GeoSource",
    "KeyedSource",
    "Layer",
    "PrecutChipSource",
    "RasterSource",
    "StacSource",
    "pad_window",
]


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


def _open_meta(path: str) -> dict[str, Any]:
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


class _Handles:
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


def _utm_crs(lon: float, lat: float) -> CRS:
    zone = int(np.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


class GeoSource:
    """Base class of georeferenced sources: a list of :class:`Layer` grids.

    Subclasses set ``layers`` (list of Layer), ``band_names`` (bands common
    to every layer, in order) and ``description`` (named in messages).
    """

    layers: list[Layer]
    band_names: list[str]
    description: str

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_handles", None)
        return state

    def _ds(self, path: str) -> Any:
        handles = self.__dict__.get("_handles")
        if handles is None:
            handles = self.__dict__["_handles"] = _Handles()
        return handles.get(path)

    def close(self) -> None:
        """Close the file handles this process opened."""
        handles = self.__dict__.pop("_handles", None)
        if handles is not None:
            handles.close()

    @property
    def dates(self) -> list[str | None]:
        """Sorted distinct layer dates (``[None]`` when no layer is dated)."""
        dated = sorted({lyr.date for lyr in self.layers if lyr.date is not None})
        return dated or [None]

    @property
    def qa_band(self) -> str | None:
        """The QA_PIXEL band name, if every layer has one."""
        return find_qa_band(self.band_names)

    # -------------------------------------------------------- geometry
    def pixel_coords(
        self, layer: int, x: np.ndarray, y: np.ndarray, crs: CRS
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fractional pixel coordinates (row, col) of points in ``layer``.

        Parameters
        ----------
        layer : int
            Index into ``layers``.
        x, y : ndarray of shape (n,)
            Point coordinates in ``crs``.
        crs : pyproj.CRS

        Returns
        -------
        row, col : ndarray of float, shape (n,)
            ``floor(row), floor(col)`` is the pixel containing the point.
        """
        lyr = self.layers[layer]
        lcrs = lyr.crs
        if not lcrs.equals(crs):
            x, y = Transformer.from_crs(crs, lcrs, always_xy=True).transform(x, y)
        col, row = ~lyr.affine @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return np.asarray(row), np.asarray(col)

    def window_px_for_km(
        self, layer: int, row: np.ndarray, col: np.ndarray, size_km: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Window height and width in pixels covering ``size_km`` x ``size_km`` around points.

        In a projected layer the pixel size gives the answer directly. In a
        geographic layer each point's square is built in its local UTM zone,
        its corners are projected back into the layer, and the pixel extent
        of that quadrilateral is taken.

        Returns
        -------
        height, width : ndarray of int, shape (n,)
            At least 1.
        """
        lyr = self.layers[layer]
        crs = lyr.crs
        n = len(row)
        if not crs.is_geographic:
            factor = crs.axis_info[0].unit_conversion_factor  # metres per CRS unit
            res_x = abs(lyr.transform[0]) * factor
            res_y = abs(lyr.transform[4]) * factor
            h = max(1, round(size_km * 1000.0 / res_y))
            w = max(1, round(size_km * 1000.0 / res_x))
            return np.full(n, h, dtype=np.int64), np.full(n, w, dtype=np.int64)
        lon, lat = lyr.affine @ (
            np.asarray(col, dtype=np.float64),
            np.asarray(row, dtype=np.float64),
        )
        to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        lon, lat = to_ll.transform(lon, lat)
        zones = np.array([_utm_crs(a, b).to_epsg() for a, b in zip(lon, lat, strict=True)])
        h = np.ones(n, dtype=np.int64)
        w = np.ones(n, dtype=np.int64)
        half = size_km * 500.0
        inv = ~lyr.affine
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
            h[sel] = np.maximum(1, np.round(rows_a.max(0) - rows_a.min(0))).astype(np.int64)
            w[sel] = np.maximum(1, np.round(cols_a.max(0) - cols_a.min(0))).astype(np.int64)
        return h, w

    # -------------------------------------------------------- reading
    def read(
        self,
        layer: int,
        bands: Sequence[str],
        row_off: int,
        col_off: int,
        height: int,
        width: int,
        *,
        qa_mask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of ``bands`` from one layer, in-bounds, padded in numpy.

        Parameters
        ----------
        layer : int
        bands : sequence of str
        row_off, col_off, height, width : int
            The window in the layer's pixel grid (may leave the grid).
        qa_mask : bool, default=False
            Mark pixels flagged by the QA_PIXEL band (fill, dilated cloud,
            cloud, cloud shadow) invalid.

        Returns
        -------
        values : ndarray of float32, shape (C, height, width)
            Zero where invalid.
        valid : ndarray of bool, shape (height, width)
            Inside the grid, not nodata in any band, finite, not QA-flagged.

        Raises
        ------
        ChipReadError
            When a file cannot be read; the message names the file.
        """
        lyr = self.layers[layer]
        C = len(bands)
        values = np.zeros((C, height, width), dtype=np.float32)
        r0, r1 = max(row_off, 0), min(row_off + height, lyr.height)
        c0, c1 = max(col_off, 0), min(col_off + width, lyr.width)
        valid = np.zeros((height, width), dtype=bool)
        if r1 <= r0 or c1 <= c0:
            return values, valid
        win = Window(c0, r0, c1 - c0, r1 - r0)
        sl = (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off))
        inner = np.ones((r1 - r0, c1 - c0), dtype=bool)
        by_path: dict[str, list[tuple[int, int]]] = {}
        for pos, name in enumerate(bands):
            path, bidx = lyr.bands[name]
            by_path.setdefault(path, []).append((pos, bidx))
        for path, pairs in by_path.items():
            data = self._read_file(path, [b for _, b in pairs], win)
            nodata = lyr.nodata.get(path)
            if nodata is not None and not np.isnan(nodata):
                inner &= ~np.any(data == nodata, axis=0)
            if np.issubdtype(data.dtype, np.floating):
                inner &= np.all(np.isfinite(data), axis=0)
            for k, (pos, _) in enumerate(pairs):
                values[(pos,) + sl] = data[k]
        if qa_mask:
            qa = self.qa_band
            if qa is None:
                raise BandError(
                    f"qa_mask=True but {self.description} has no QA_PIXEL band (bands: {self.band_names}). "
                    "Add the QA_PIXEL band or set ChipSpec(qa_mask=False)."
                )
            path, bidx = lyr.bands[qa]
            qa_values = self._read_file(path, [bidx], win)[0]
            inner &= ~qa_pixel_invalid(qa_values)
        valid[sl] = inner
        values[:, ~valid] = 0.0
        return values, valid

    def _read_file(self, path: str, indexes: list[int], win: Window) -> np.ndarray:
        ds = self._ds(path)
        try:
            return ds.read(indexes=indexes, window=win)
        except RasterioError as exc:
            raise ChipReadError(
                f"Could not read window {win} of imagery file {path}: {exc}"
            ) from exc


class RasterSource(GeoSource):
    """A mosaic of GeoTIFF/COG files (or a VRT), possibly in different CRSs.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        One file (GeoTIFF, COG, VRT, anything GDAL opens) or several.
        Every file must hold the same bands.
    band_names : sequence of str, optional
        Names of the bands in file order; by default the band descriptions
        stored in the files, else ``B1``, ``B2``, ...
    nodata : float, optional
        Overrides the files' nodata value.
    date : str, optional
        ISO date of the imagery (recorded in chip info).

    Raises
    ------
    ImageryError
        A file is missing, has no CRS, or its bands differ from the first file's.
    ChipReadError
        A file cannot be opened as a raster.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        date: str | None = None,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [str(p) for p in paths]
        if not paths:
            raise ImageryError("RasterSource needs at least one imagery file.")
        self.paths = paths
        self.description = (
            paths[0] if len(paths) == 1 else f"the mosaic of {len(paths)} files ({paths[0]}, ...)"
        )
        layers: list[Layer] = []
        names0: list[str] | None = None
        for path in paths:
            meta = _open_meta(path)
            if band_names is not None:
                if len(band_names) != meta["count"]:
                    raise BandError(
                        f"band_names has {len(band_names)} names but {path} has {meta['count']} bands; "
                        "give one name per band in file order."
                    )
                names = [str(b) for b in band_names]
            elif all(meta["descriptions"]):
                names = [str(d) for d in meta["descriptions"]]
            else:
                names = [f"B{i + 1}" for i in range(meta["count"])]
            if len({n.lower() for n in names}) != len(names):
                raise BandError(
                    f"Duplicate band names {names} in {path}; pass band_names= to rename them."
                )
            if names0 is None:
                names0 = names
            elif [n.lower() for n in names] != [n.lower() for n in names0]:
                raise ImageryError(
                    f"Imagery file {path} has bands {names}, but {paths[0]} has {names0}; "
                    "all files of a mosaic must hold the same bands in the same order."
                )
            layers.append(
                Layer(
                    name=path,
                    crs_wkt=meta["crs_wkt"],
                    transform=meta["transform"],
                    width=meta["width"],
                    height=meta["height"],
                    bands={n: (path, i + 1) for i, n in enumerate(names0)},
                    nodata={path: nodata if nodata is not None else meta["nodata"]},
                    block=meta["block"],
                    date=date,
                )
            )
        self.layers = layers
        self.band_names = list(names0 or [])

    def __repr__(self) -> str:
        return f"RasterSource({len(self.layers)} files, bands={self.band_names})"


def _asset_lookup(item: Any) -> dict[str, str]:
    """Lower-case band name -> asset key: asset keys first, then eo:bands name and common_name."""
    lookup: dict[str, str] = {}
    for key, asset in item.assets.items():
        for band in asset.extra_fields.get("eo:bands", []) or []:
            for field in ("name", "common_name"):
                if isinstance(band, dict) and band.get(field):
                    lookup.setdefault(str(band[field]).lower(), key)
    lookup.update({k.lower(): k for k in item.assets})
    return lookup


def _item_date(item: Any) -> str:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise ImageryError(
            f"STAC item {item.id!r} has no datetime; every item needs an acquisition date."
        )
    return dt.date().isoformat()


class StacSource(GeoSource):
    """Landsat Collection 2 (or similar) items from a local STAC catalog or ItemCollection.

    Each item is one :class:`Layer` whose bands are the item's raster assets
    (one single-band GeoTIFF/COG per asset, e.g. ``red``, ``nir08``,
    ``qa_pixel`` or ``SR_B4``). Items on several dates give time series;
    items on one date in several places form a mosaic.

    Parameters
    ----------
    path : path-like
        A ``catalog.json``/``collection.json`` (walked recursively) or an
        ItemCollection GeoJSON file.
    bands : sequence of str, optional
        Asset keys to use as bands (case-insensitive); by default every
        GeoTIFF/COG asset that all items share. A QA asset (``qa_pixel``) is
        added automatically when present so that ``ChipSpec(qa_mask=True)`` works.
    nodata : float, optional
        Nodata value for every asset (default: the files' own, else 0 for
        Landsat C2 SR, whose fill is 0 and flagged in QA_PIXEL).

    Raises
    ------
    ImageryError
        The catalog is missing or unreadable, or an item lacks a date.
    BandError
        An item lacks a requested band; the message names item and band.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bands: Sequence[str] | None = None,
        nodata: float | None = None,
    ) -> None:
        import pystac

        path = Path(path)
        if not path.exists():
            raise ImageryError(f"STAC catalog or ItemCollection not found: {path}.")
        self.path = str(path)
        self.description = f"the STAC catalog {path}"
        try:
            import json

            with open(path) as fh:
                kind = json.load(fh).get("type")
            if kind == "FeatureCollection":
                items = list(pystac.ItemCollection.from_file(str(path)))
            elif kind == "Feature":
                items = [pystac.Item.from_file(str(path))]
            else:
                items = list(pystac.read_file(str(path)).get_items(recursive=True))
        except (OSError, ValueError, pystac.STACError) as exc:
            raise ImageryError(f"Could not read the STAC catalog {path}: {exc}") from exc
        if not items:
            raise ImageryError(f"The STAC catalog {path} holds no items.")

        def raster_keys(item: Any) -> list[str]:
            out = []
            for key, asset in item.assets.items():
                mt = (asset.media_type or "").lower()
                if "tiff" in mt or asset.href.lower().endswith((".tif", ".tiff", ".vrt")):
                    out.append(key)
            return out

        if bands is None:
            common = [
                k for k in raster_keys(items[0]) if all(k in raster_keys(it) for it in items[1:])
            ]
            wanted = [k for k in common if find_qa_band([k]) is None]
        else:
            wanted = list(bands)
        qa_keys = [k for k in items[0].assets if find_qa_band([k]) is not None]
        if (
            qa_keys
            and all(qa_keys[0] in it.assets for it in items)
            and qa_keys[0].lower() not in {w.lower() for w in wanted}
        ):
            wanted.append(qa_keys[0])
        layers = []
        for item in items:
            lookup = _asset_lookup(item)
            missing = [b for b in wanted if b.lower() not in lookup]
            if missing:
                raise BandError(
                    f"STAC item {item.id!r} in {path} has no asset(s) {missing}; its assets are "
                    f"{sorted(item.assets)} (eo:bands names also match). "
                    "Choose bands present in every item."
                )
            band_map: dict[str, tuple[str, int]] = {}
            nodatas: dict[str, float | None] = {}
            grid = None
            for b in wanted:
                asset = item.assets[lookup[b.lower()]]
                href = asset.get_absolute_href() or asset.href
                meta = _open_meta(href)
                key = (meta["crs_wkt"], meta["transform"], meta["width"], meta["height"])
                if grid is None:
                    grid, block = key, meta["block"]
                elif key[1:] != grid[1:] or not CRS.from_wkt(key[0]).equals(CRS.from_wkt(grid[0])):
                    raise ImageryError(
                        f"STAC item {item.id!r}: asset {b!r} ({href}) is on a different grid from the item's "
                        "first band; resample the assets to one grid (e.g. drop the panchromatic band)."
                    )
                band_map[b] = (href, 1)
                nodatas[href] = nodata if nodata is not None else meta["nodata"]
            layers.append(
                Layer(
                    name=item.id,
                    crs_wkt=grid[0],
                    transform=grid[1],
                    width=grid[2],
                    height=grid[3],
                    bands=band_map,
                    nodata=nodatas,
                    block=block,
                    date=_item_date(item),
                )
            )
        self.layers = layers
        self.band_names = wanted

    def __repr__(self) -> str:
        return f"StacSource({len(self.layers)} items, {len(self.dates)} dates, bands={self.band_names})"


class KeyedSource(ABC):
    """Base class of sources of pre-cut chips looked up by image key.

    Subclasses provide ``band_names``, ``pixel_size_m`` (or None),
    ``has(keys)`` and ``get(keys)``.
    """

    band_names: list[str]
    pixel_size_m: float | None
    description: str

    @abstractmethod
    def has(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key can be served; ndarray of bool, shape (n,)."""

    @abstractmethod
    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chips for ``keys``: values (n, C, H, W) and valid masks (n, H, W)."""


def _key_strings(keys: Any) -> np.ndarray:
    arr = np.asarray(keys)
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
        arr = arr.astype(np.int64)
    return arr.astype(str)


class PrecutChipSource(KeyedSource):
    """Pre-cut chips in memory, keyed by image key (units -> chips many-to-one).

    Parameters
    ----------
    images : ndarray of shape (K, C, H, W)
    keys : array-like of shape (K,)
        Unique keys (compared as strings with the units' ``image_key``).
    band_names : sequence of str, optional
        Default ``B1``, ``B2``, ...
    nodata : float, optional
        Pixel value marking invalid pixels (in every band).
    pixel_size_m : float, optional
        Ground pixel size, needed for scales given in kilometres.
    """

    def __init__(
        self,
        images: np.ndarray,
        keys: Any,
        band_names: Sequence[str] | None = None,
        *,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.ndim != 4:
            raise ImageryError(f"Pre-cut images must have shape (K, C, H, W); got {images.shape}.")
        keys = _key_strings(keys)
        if keys.shape != (images.shape[0],):
            raise ImageryError(
                f"Got {keys.shape[0]} keys for {images.shape[0]} pre-cut images; give one key per image."
            )
        values, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            raise ImageryError(
                f"Pre-cut image keys must be unique; repeated: {values[counts > 1][:10].tolist()}."
            )
        if band_names is None:
            band_names = [f"B{i + 1}" for i in range(images.shape[1])]
        if len(band_names) != images.shape[1]:
            raise BandError(
                f"Got {len(band_names)} band names for pre-cut images with {images.shape[1]} bands."
            )
        self.images = images
        self.keys = keys
        self.band_names = [str(b) for b in band_names]
        self.nodata = nodata
        self.pixel_size_m = pixel_size_m
        self.description = f"the pre-cut chips ({images.shape[0]} images of {images.shape[1:]})"
        self._index = {k: i for i, k in enumerate(keys)}

    @classmethod
    def from_npz(
        cls,
        path: str | os.PathLike,
        *,
        images_key: str = "images",
        keys_key: str = "image_keys",
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> PrecutChipSource:
        """Load chips from an ``.npz`` file (no pickle) holding images and keys."""
        path = Path(path)
        if not path.exists():
            raise ImageryError(f"Pre-cut chip file not found: {path}.")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in (images_key, keys_key) if k not in data.files]
                if missing:
                    raise ImageryError(f"{path} lacks array(s) {missing}; it holds {data.files}.")
                images, keys = data[images_key], data[keys_key]
        except (OSError, ValueError) as exc:
            raise ChipReadError(f"Could not read pre-cut chip file {path}: {exc}") from exc
        return cls(images, keys, band_names, nodata=nodata, pixel_size_m=pixel_size_m)

    def has(self, keys: np.ndarray) -> np.ndarray:
        return np.array([k in self._index for k in _key_strings(keys)], dtype=bool)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = [self._index[k] for k in _key_strings(keys)]
        values = self.images[idx]
        valid = np.ones((len(idx),) + values.shape[-2:], dtype=bool)
        if self.nodata is not None:
            valid &= ~np.any(values == self.nodata, axis=1)
        return values, valid


class CallableSource(KeyedSource):
    """Chips produced by a user function of image keys.

    Parameters
    ----------
    fn : callable
        ``fn(keys: ndarray of shape (n,)) -> ndarray of shape (n, C, H, W)``.
        An ``OSError``, ``KeyError`` or ``ValueError`` raised by ``fn``
        excludes the unit (the message becomes the reason).
    band_names : sequence of str, optional
        Default ``B1``, ``B2``, ... (C is learnt from the first call).
    nodata : float, optional
    pixel_size_m : float, optional
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableSource needs a callable, got {type(fn).__name__}.")
        self.fn = fn
        self.band_names = list(band_names) if band_names is not None else []
        self.nodata = nodata
        self.pixel_size_m = pixel_size_m
        self.description = f"the callable {getattr(fn, '__name__', repr(fn))}"

    def has(self, keys: np.ndarray) -> np.ndarray:
        return np.ones(len(keys), dtype=bool)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys)
        values = np.asarray(self.fn(keys))
        if values.ndim != 4 or values.shape[0] != len(keys):
            raise ImageryError(
                f"{self.description} returned shape {values.shape} for {len(keys)} keys; "
                "it must return (n, C, H, W)."
            )
        if not self.band_names:
            self.band_names = [f"B{i + 1}" for i in range(values.shape[1])]
        elif len(self.band_names) != values.shape[1]:
            raise BandError(
                f"{self.description} returned {values.shape[1]} bands for band_names {self.band_names}."
            )
        valid = np.ones((len(keys),) + values.shape[-2:], dtype=bool)
        if self.nodata is not None:
            valid &= ~np.any(values == self.nodata, axis=1)
        return values, valid
