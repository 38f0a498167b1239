"""Region grids: square cells of a fixed size in metres over a region, cut into tiles.

A :class:`RegionGrid` is a north-up raster grid (CRS, affine transform, width,
height) and, optionally, the polygons of the region in the grid's CRS. A cell
belongs to the region when its centre lies inside one of the polygons (the
rule of :func:`rasterio.features.geometry_mask` with ``all_touched=False``);
without polygons every cell does. Nothing is ever allocated for the whole grid:
the region mask and the cell centres are computed one :class:`Tile` at a time.

Grids built by the ``from_*`` constructors are snapped to the cell size: the
left and bottom edges are multiples of ``cell_size_m`` below the region, the
right and top edges multiples above, so two grids with the same CRS and cell
size share their cell boundaries.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.transform import Affine
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from eocausal.errors import CRSMismatchError, ImageryError, InputDataError

__all__ = ["RegionGrid", "Tile", "utm_crs"]

# snapping tolerance, in cells: a bound within 1e-9 cells of a cell edge is on it
_SNAP_TOL = 1e-9
# points per edge when a footprint or bounding box is carried to another CRS
_DENSIFY = 21


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS holding ``(lon, lat)`` (north or south by the sign of ``lat``)."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


@dataclass(frozen=True)
class Tile:
    """A rectangular block of cells of a :class:`RegionGrid`.

    Attributes
    ----------
    index : int
        Position in :meth:`RegionGrid.tiles` (row-major).
    row_off, col_off : int
        Grid row and column of the tile's upper-left cell.
    height, width : int
        Cells in the tile (edge tiles may be smaller than ``tile_cells``).
    """

    index: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def window(self) -> Window:
        """The tile as a rasterio window of the grid."""
        return Window(self.col_off, self.row_off, self.width, self.height)


def _parse_crs(crs: Any, name: str) -> CRS:
    try:
        return CRS.from_user_input(crs)
    except (CRSError, rasterio.errors.CRSError, TypeError, ValueError) as exc:
        raise InputDataError(
            f"`{name}` {crs!r} is not a valid CRS ({exc}); give e.g. 'EPSG:32636'."
        ) from exc


def _check_metric(crs: CRS, name: str) -> CRS:
    """Return ``crs`` if it is projected with axes in metres, else raise."""
    pcrs = ProjCRS.from_user_input(crs.to_wkt())
    units = {axis.unit_name for axis in pcrs.axis_info}
    if not pcrs.is_projected or units != {"metre"}:
        raise CRSMismatchError(
            f"`{name}` must be a projected CRS in metres for cells of a size in metres; got "
            f"{crs.to_string()!r} (units {sorted(units)}). Pass a UTM or equal-area CRS, or leave "
            "`crs=None` to use the UTM zone of the region's centre."
        )
    return crs


def _check_cell_size(cell_size_m: Any) -> float:
    try:
        size = float(cell_size_m)
    except (TypeError, ValueError):
        raise InputDataError(
            f"`cell_size_m` must be a number of metres; got {cell_size_m!r}."
        ) from None
    if not np.isfinite(size) or size <= 0:
        raise InputDataError(
            f"`cell_size_m` must be positive and finite; got {cell_size_m!r}. Use e.g. 1000 for 1 km cells."
        )
    return size


def _densified_box(
    left: float, bottom: float, right: float, top: float
) -> tuple[np.ndarray, np.ndarray]:
    """The boundary of a box as a closed ring of ``4 * _DENSIFY`` points."""
    t = np.linspace(0.0, 1.0, _DENSIFY, endpoint=False)
    xs = np.concatenate(
        [
            left + (right - left) * t,
            np.full_like(t, right),
            right - (right - left) * t,
            np.full_like(t, left),
        ]
    )
    ys = np.concatenate(
        [
            np.full_like(t, bottom),
            bottom + (top - bottom) * t,
            np.full_like(t, top),
            top - (top - bottom) * t,
        ]
    )
    return xs, ys


def _box_polygon(bounds: Sequence[float], src: CRS, dst: CRS) -> shapely.Polygon:
    """The box ``bounds`` (in ``src``) as a polygon in ``dst`` (edges densified when reprojected)."""
    left, bottom, right, top = bounds
    if src == dst:
        return shapely.box(left, bottom, right, top)
    xs, ys = _densified_box(left, bottom, right, top)
    x, y = Transformer.from_crs(src, dst, always_xy=True).transform(xs, ys)
    return shapely.Polygon(np.column_stack([x, y]))


def _default_crs(crs: Any, native: CRS, lonlat_centre: tuple[float, float], name: str) -> CRS:
    """``crs`` if given; else ``native`` when metric; else the UTM zone of the centre."""
    if crs is not None:
        return _check_metric(_parse_crs(crs, "crs"), "crs")
    try:
        return _check_metric(native, name)
    except CRSMismatchError:
        return utm_crs(*lonlat_centre)


def _to_lonlat(crs: CRS, x: float, y: float) -> tuple[float, float]:
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


@dataclass(frozen=True, eq=False)
class RegionGrid:
    """A grid of square cells over a region, processed tile by tile.

    Parameters
    ----------
    crs : str or CRS
        The grid's CRS (projected, in metres, for the ``from_*`` constructors).
    transform : Affine
        Cell (col, row) to ``crs`` coordinates; north-up: ``b == d == 0``, ``a > 0``, ``e < 0``.
    width, height : int
        Columns and rows of cells.
    polygons : tuple of shapely geometries, default=()
        The region, in ``crs``; a cell is in the region when its centre lies
        inside one of them. Empty: every cell is in the region.

    Attributes
    ----------
    n_cells : int
        Cells inside the region (computed tile by tile on first use).
    cell_size : float
        Side of a cell in CRS units (``transform.a``).
    bounds : tuple of float
        ``(left, bottom, right, top)`` of the grid in ``crs``.

    Notes
    -----
    Cell ``(row, col)`` has its centre at

    .. math::

        x = x_0 + (col + \\tfrac12)\\, s, \\qquad y = y_0 - (row + \\tfrac12)\\, s

    with :math:`(x_0, y_0)` the upper-left corner (``transform.c, transform.f``)
    and :math:`s` the cell size; its id is ``"r{row}_c{col}"``.

    Examples
    --------
    >>> grid = RegionGrid.from_bbox((500_000, 0, 503_000, 2_000), bbox_crs="EPSG:32636",
    ...                             cell_size_m=1000)
    >>> grid.width, grid.height, grid.n_cells
    (3, 2, 6)
    >>> grid.cell_points(grid.tiles(256)[0])["unit_id"].tolist()[:2]
    ['r0_c0', 'r0_c1']
    """

    crs: CRS
    transform: Affine
    width: int
    height: int
    polygons: tuple = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "crs", _parse_crs(self.crs, "crs"))
        if not isinstance(self.transform, Affine):
            raise InputDataError(
                f"`transform` must be a rasterio Affine; got {type(self.transform).__name__}. "
                "Build one with rasterio.transform.from_origin(left, top, size, size)."
            )
        t = self.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise InputDataError(
                f"`transform` must be north-up (b = d = 0, a > 0, e < 0); got {tuple(t)[:6]}. "
                "Use rasterio.transform.from_origin(left, top, size, size)."
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise InputDataError(
                    f"`{name}` must be a positive integer number of cells; got {value!r}."
                )
            object.__setattr__(self, name, int(value))
        polygons = tuple(self.polygons)
        for geom in polygons:
            if not isinstance(geom, (shapely.Polygon, shapely.MultiPolygon)):
                raise InputDataError(
                    f"`polygons` must hold shapely Polygons or MultiPolygons; got {type(geom).__name__}."
                )
        object.__setattr__(self, "polygons", polygons)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_bbox(
        cls,
        bbox: Sequence[float],
        *,
        bbox_crs: Any,
        cell_size_m: float,
        crs: Any = None,
    ) -> RegionGrid:
        """A grid covering a bounding box.

        Parameters
        ----------
        bbox : sequence of 4 floats
            ``(west, south, east, north)`` (``(left, bottom, right, top)``) in ``bbox_crs``.
        bbox_crs : str or CRS
            CRS of ``bbox``, e.g. ``"EPSG:4326"`` for degrees.
        cell_size_m : float
            Side of a cell in metres.
        crs : str or CRS, optional
            The grid's CRS (projected, in metres). Default: ``bbox_crs`` when it
            is projected in metres, else the UTM zone of the box's centre.
        """
        try:
            box = [float(v) for v in bbox]
        except (TypeError, ValueError):
            raise InputDataError(
                f"`bbox` must be 4 numbers (west, south, east, north); got {bbox!r}."
            ) from None
        if len(box) != 4 or not np.all(np.isfinite(box)) or box[0] >= box[2] or box[1] >= box[3]:
            raise InputDataError(
                f"`bbox` must be 4 finite numbers (west, south, east, north) with west < east and "
                f"south < north; got {bbox!r}."
            )
        size = _check_cell_size(cell_size_m)
        src = _parse_crs(bbox_crs, "bbox_crs")
        centre = _to_lonlat(src, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        grid_crs = _default_crs(crs, src, centre, "bbox_crs")
        outline = _box_polygon(box, src, grid_crs)
        return cls._snapped(grid_crs, outline.bounds, size)

    @classmethod
    def from_polygons(
        cls,
        path: str | os.PathLike,
        *,
        cell_size_m: float,
        layer: str | int | None = None,
        crs: Any = None,
    ) -> RegionGrid:
        """A grid over the polygons of a vector file; cells outside every polygon are masked.

        Parameters
        ----------
        path : path-like
            Any vector file geopandas reads (GeoPackage, GeoJSON, shapefile, ...).
        cell_size_m : float
            Side of a cell in metres.
        layer : str or int, optional
            Layer of a multi-layer file.
        crs : str or CRS, optional
            The grid's CRS. Default: the file's CRS when projected in metres,
            else the UTM zone of the polygons' centre.
        """
        import geopandas as gpd

        size = _check_cell_size(cell_size_m)
        try:
            frame = gpd.read_file(path, layer=layer)
        except Exception as exc:  # pyogrio raises its own DataSourceError/DataLayerError types
            raise InputDataError(
                f"`path` {os.fspath(path)!r}: cannot read polygons ({exc})."
            ) from exc
        if frame.crs is None:
            raise CRSMismatchError(
                f"`path` {os.fspath(path)!r} has no CRS; set one (e.g. GeoDataFrame.set_crs('EPSG:4326')) and save again."
            )
        geoms = frame.geometry[~frame.geometry.is_empty & frame.geometry.notna()]
        kinds = sorted(set(geoms.geom_type) - {"Polygon", "MultiPolygon"})
        if len(geoms) == 0 or kinds:
            found = f"geometry types {kinds}" if kinds else "no geometries"
            raise InputDataError(
                f"`path` {os.fspath(path)!r} must hold polygons; found {found}. "
                "Buffer points or lines into polygons first, or select a polygon layer with `layer`."
            )
        src = CRS.from_user_input(frame.crs.to_wkt())
        left, bottom, right, top = geoms.total_bounds
        centre = _to_lonlat(src, (left + right) / 2, (bottom + top) / 2)
        grid_crs = _default_crs(crs, src, centre, "path's CRS")
        projected = geoms.to_crs(grid_crs.to_wkt())
        polygons = tuple(shapely.make_valid(g) for g in projected)
        polygons = tuple(
            g for g in polygons if isinstance(g, (shapely.Polygon, shapely.MultiPolygon))
        )
        return cls._snapped(grid_crs, projected.total_bounds, size, polygons)

    @classmethod
    def from_raster_footprint(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        cell_size_m: float,
        crs: Any = None,
    ) -> RegionGrid:
        """A grid over the footprints (extents) of one or more rasters.

        Cells whose centre lies outside every raster's extent are masked; the
        rasters' nodata pixels are not (chips read there are excluded later).

        Parameters
        ----------
        paths : path-like or sequence of path-like
            Rasters readable by rasterio.
        cell_size_m : float
            Side of a cell in metres.
        crs : str or CRS, optional
            The grid's CRS. Default: the first raster's CRS when projected in
            metres, else the UTM zone of its centre.
        """
        size = _check_cell_size(cell_size_m)
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        if not paths:
            raise InputDataError("`paths` is empty; pass at least one raster.")
        extents = []
        for p in paths:
            try:
                with rasterio.open(p) as src:
                    if src.crs is None:
                        raise CRSMismatchError(
                            f"`paths`: raster {os.fspath(p)!r} has no CRS; georeference it first."
                        )
                    extents.append((src.crs, tuple(src.bounds)))
            except rasterio.errors.RasterioIOError as exc:
                raise ImageryError(
                    f"`paths`: cannot open raster {os.fspath(p)!r} ({exc})."
                ) from exc
        first_crs, (left, bottom, right, top) = extents[0]
        centre = _to_lonlat(first_crs, (left + right) / 2, (bottom + top) / 2)
        grid_crs = _default_crs(crs, first_crs, centre, "the first raster's CRS")
        polygons = tuple(_box_polygon(bounds, src_crs, grid_crs) for src_crs, bounds in extents)
        return cls._snapped(grid_crs, shapely.union_all(polygons).bounds, size, polygons)

    @classmethod
    def _snapped(
        cls, crs: CRS, bounds: Sequence[float], size: float, polygons: tuple = ()
    ) -> RegionGrid:
        left, bottom, right, top = (float(v) for v in bounds)
        c0 = math.floor(left / size + _SNAP_TOL)
        c1 = math.ceil(right / size - _SNAP_TOL)
        r0 = math.floor(bottom / size + _SNAP_TOL)
        r1 = math.ceil(top / size - _SNAP_TOL)
        width, height = max(c1 - c0, 1), max(r1 - r0, 1)
        transform = Affine(size, 0.0, c0 * size, 0.0, -size, r1 * size)
        return cls(crs, transform, width, height, polygons)

    # ------------------------------------------------------------------ geometry
    @property
    def cell_size(self) -> float:
        """Side of a cell in CRS units."""
        return float(self.transform.a)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in cells."""
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the grid in its CRS."""
        t = self.transform
        return t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f

    def tiles(self, tile_cells: int) -> list[Tile]:
        """Cut the grid into tiles of ``tile_cells x tile_cells`` cells (smaller at the edges), row-major."""
        if (
            not isinstance(tile_cells, (int, np.integer))
            or isinstance(tile_cells, bool)
            or tile_cells < 1
        ):
            raise InputDataError(
                f"`tile_cells` must be a positive integer; got {tile_cells!r}. Use e.g. 256."
            )
        tile_cells = int(tile_cells)
        out = []
        for r in range(0, self.height, tile_cells):
            for c in range(0, self.width, tile_cells):
                out.append(
                    Tile(
                        len(out),
                        r,
                        c,
                        min(tile_cells, self.height - r),
                        min(tile_cells, self.width - c),
                    )
                )
        return out

    def _check_tile(self, tile: Tile) -> Tile:
        if (
            not isinstance(tile, Tile)
            or tile.row_off < 0
            or tile.col_off < 0
            or tile.row_off + tile.height > self.height
            or tile.col_off + tile.width > self.width
        ):
            raise InputDataError(
                f"`tile` {tile!r} is not a tile of this {self.height} x {self.width} grid; take tiles from grid.tiles()."
            )
        return tile

    def inside(self, tile: Tile) -> np.ndarray:
        """Boolean array of shape ``(tile.height, tile.width)``: the tile's cells inside the region."""
        tile = self._check_tile(tile)
        shape = (tile.height, tile.width)
        if not self.polygons:
            return np.ones(shape, dtype=bool)
        return geometry_mask(
            self.polygons,
            out_shape=shape,
            invert=True,
            all_touched=False,
            transform=window_transform(tile.window, self.transform),
        )

    def cell_points(self, tile: Tile) -> pd.DataFrame:
        """Centres of the tile's cells inside the region.

        Returns
        -------
        DataFrame
            Columns ``unit_id`` (``"r{row}_c{col}"``), ``lon``, ``lat`` (WGS84),
            ``x``, ``y`` (grid CRS), ``row``, ``col`` (in the grid), row-major.
        """
        rr, cc = np.nonzero(self.inside(tile))
        rows = rr + tile.row_off
        cols = cc + tile.col_off
        t = self.transform
        x = t.c + (cols + 0.5) * t.a
        y = t.f + (rows + 0.5) * t.e
        lon, lat = self._to_wgs84.transform(x, y)
        ids = np.char.add(np.char.add("r", rows.astype(str)), np.char.add("_c", cols.astype(str)))
        return pd.DataFrame(
            {
                "unit_id": ids.astype(object),
                "lon": lon,
                "lat": lat,
                "x": x,
                "y": y,
                "row": rows,
                "col": cols,
            }
        )

    @cached_property
    def _to_wgs84(self) -> Transformer:
        return Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    @cached_property
    def n_cells(self) -> int:
        """Cells inside the region."""
        if not self.polygons:
            return self.width * self.height
        return int(sum(int(self.inside(t).sum()) for t in self.tiles(1024)))

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """JSON description: CRS (WKT), transform, width, height and a digest of the polygons."""
        return {
            "crs": self.crs.to_wkt(),
            "transform": [float(v) for v in tuple(self.transform)[:6]],
            "width": self.width,
            "height": self.height,
            "polygons_sha256": self.polygons_digest(),
        }

    def polygons_digest(self) -> str | None:
        """SHA-256 of the polygons' WKB (``None`` without polygons)."""
        if not self.polygons:
            return None
        h = hashlib.sha256()
        for geom in self.polygons:
            h.update(shapely.to_wkb(geom, hex=False, output_dimension=2, byte_order=1))
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegionGrid):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value
