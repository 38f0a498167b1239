"""Georeferenced sources: the base class of sources made of :class:`Layer` grids.

Unit points are reprojected into each layer's CRS here, windows are sized here
(pixels, or kilometres through a local UTM CRS when a layer is geographic; see
:mod:`eocausal.imagery.geometry`), and windows are read in-bounds and padded in
numpy. Sources keep only metadata when pickled; file handles are opened lazily,
once per process (a DataLoader worker reopens its own after a fork).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pyproj import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from eocausal.errors import BandError, ChipReadError
from eocausal.imagery.bands import find_qa_band, qa_pixel_invalid
from eocausal.imagery.geometry import pixel_coords, window_px_for_km
from eocausal.imagery.layers import FileHandles, Layer

__all__ = ["GeoSource"]


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
            handles = self.__dict__["_handles"] = FileHandles()
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
        """Fractional pixel coordinates (row, col) of points in ``layers[layer]``.

        See :func:`eocausal.imagery.geometry.pixel_coords`.
        """
        return pixel_coords(self.layers[layer], x, y, crs)

    def window_px_for_km(
        self, layer: int, row: np.ndarray, col: np.ndarray, size_km: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Window height and width in pixels covering ``size_km`` x ``size_km`` around points.

        In a projected layer the pixel size gives the answer directly. In a
        geographic layer each point's square is built in its local UTM zone,
        its corners are projected back into the layer, and the pixel extent
        of that quadrilateral is taken
        (:func:`eocausal.imagery.geometry.window_px_for_km`).

        Returns
        -------
        height, width : ndarray of int, shape (n,)
            At least 1.
        """
        return window_px_for_km(self.layers[layer], row, col, size_km)

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
                    f"qa_mask=True (config field `imagery.qa_mask`) but {self.description} has no "
                    f"QA_PIXEL band (bands: {self.band_names}); add the QA_PIXEL band or set "
                    "`imagery.qa_mask: false` (ChipSpec(qa_mask=False))."
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
