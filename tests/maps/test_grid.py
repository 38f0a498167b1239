"""Region grids: exact cell size, transform and centres; polygon masks; raster footprints."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import Affine, from_origin

from eocausal.errors import CRSMismatchError, InputDataError
from eocausal.maps import RegionGrid, utm_crs


def _all_points(grid):
    import pandas as pd

    return pd.concat([grid.cell_points(t) for t in grid.tiles(7)], ignore_index=True)


def test_from_bbox_in_utm_is_exact():
    grid = RegionGrid.from_bbox(
        (500_250, 1_000_100, 503_700, 1_002_000), bbox_crs="EPSG:32636", cell_size_m=1000
    )
    assert grid.crs.to_epsg() == 32636
    # snapped outwards to multiples of the cell size
    assert grid.transform == Affine(1000.0, 0.0, 500_000.0, 0.0, -1000.0, 1_002_000.0)
    assert (grid.width, grid.height, grid.n_cells) == (4, 2, 8)
    pts = _all_points(grid)
    rows, cols = np.divmod(np.arange(8), 4)
    np.testing.assert_array_equal(pts["row"], rows)
    np.testing.assert_array_equal(pts["col"], cols)
    np.testing.assert_array_equal(pts["x"], 500_000.0 + (cols + 0.5) * 1000.0)
    np.testing.assert_array_equal(pts["y"], 1_002_000.0 - (rows + 0.5) * 1000.0)
    assert pts["unit_id"].tolist()[:5] == ["r0_c0", "r0_c1", "r0_c2", "r0_c3", "r1_c0"]
    lon, lat = Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True).transform(
        pts["x"], pts["y"]
    )
    np.testing.assert_array_equal(pts["lon"], lon)
    np.testing.assert_array_equal(pts["lat"], lat)


def test_from_bbox_in_degrees_uses_the_utm_zone_and_covers_the_box_tightly():
    bbox = (32.1, 0.2, 32.4, 0.5)
    grid = RegionGrid.from_bbox(bbox, bbox_crs="EPSG:4326", cell_size_m=500)
    assert grid.crs.to_epsg() == 32636  # zone 36 spans 30-36 E
    t = grid.transform
    assert (t.a, t.b, t.d, t.e) == (500.0, 0.0, 0.0, -500.0)
    assert t.c % 500 == 0 and t.f % 500 == 0
    # the box's densified outline lies inside the grid, with less than one cell to spare per side
    s = np.linspace(0, 1, 50)
    lons = np.concatenate([32.1 + 0.3 * s, np.full(50, 32.4), 32.1 + 0.3 * s, np.full(50, 32.1)])
    lats = np.concatenate([np.full(50, 0.2), 0.2 + 0.3 * s, np.full(50, 0.5), 0.2 + 0.3 * s])
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True).transform(lons, lats)
    left, bottom, right, top = grid.bounds
    assert left <= x.min() < left + 500 and right - 500 < x.max() <= right
    assert bottom <= y.min() < bottom + 500 and top - 500 < y.max() <= top
    assert grid.width == round((right - left) / 500) and grid.n_cells == grid.width * grid.height


def test_grid_needs_a_metric_crs_and_valid_inputs():
    with pytest.raises(CRSMismatchError, match="projected CRS in metres"):
        RegionGrid.from_bbox(
            (32, 0, 33, 1), bbox_crs="EPSG:4326", cell_size_m=1000, crs="EPSG:4326"
        )
    with pytest.raises(InputDataError, match="west < east"):
        RegionGrid.from_bbox((33, 0, 32, 1), bbox_crs="EPSG:4326", cell_size_m=1000)
    with pytest.raises(InputDataError, match="cell_size_m"):
        RegionGrid.from_bbox((32, 0, 33, 1), bbox_crs="EPSG:4326", cell_size_m=0)
    with pytest.raises(InputDataError, match="north-up"):
        RegionGrid("EPSG:32636", Affine(10, 0, 0, 0, 10, 0), 3, 3)
    assert utm_crs(-70.6, -33.4).to_epsg() == 32719 and utm_crs(179.9, 10).to_epsg() == 32660


def test_tiles_cover_every_cell_once():
    grid = RegionGrid("EPSG:32636", from_origin(0, 1000, 10, 10), 23, 17)
    tiles = grid.tiles(8)
    assert [(t.height, t.width) for t in tiles[:3]] == [(8, 8), (8, 8), (8, 7)]
    assert tiles[-1].height == 1 and [t.index for t in tiles] == list(range(len(tiles)))
    count = np.zeros(grid.shape, dtype=int)
    for t in tiles:
        count[t.row_off : t.row_off + t.height, t.col_off : t.col_off + t.width] += 1
    assert (count == 1).all()
    ids = _all_points(grid)["unit_id"]
    assert ids.is_unique and len(ids) == 23 * 17


def test_from_polygons_masks_cells_whose_centre_is_outside(tmp_path):
    square = shapely.box(500_000, 100_000, 502_000, 101_000)
    # vertices off the cell lattice, so that no cell centre lies on an edge
    triangle = shapely.Polygon(
        [(503_003.7, 100_001.3), (504_987.1, 100_011.9), (503_021.3, 101_993.3)]
    )
    path = tmp_path / "region.gpkg"
    gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[square, triangle], crs="EPSG:32636").to_file(
        path
    )
    grid = RegionGrid.from_polygons(path, cell_size_m=100)
    assert grid.crs.to_epsg() == 32636
    assert grid.transform == Affine(100.0, 0.0, 500_000.0, 0.0, -100.0, 102_000.0)
    assert (grid.width, grid.height) == (50, 20)
    pts = _all_points(grid)
    # brute force over every cell of the grid
    rows, cols = np.mgrid[0:20, 0:50]
    cx, cy = 500_000 + (cols.ravel() + 0.5) * 100, 102_000 - (rows.ravel() + 0.5) * 100
    inside = shapely.contains_xy(square, cx, cy) | shapely.contains_xy(triangle, cx, cy)
    assert grid.n_cells == inside.sum() == len(pts)
    assert set(pts["unit_id"]) == {
        f"r{r}_c{c}" for r, c in zip(rows.ravel()[inside], cols.ravel()[inside])
    }
    assert shapely.contains_xy(square, cx, cy).sum() == 20 * 10


def test_from_polygons_in_degrees_goes_to_utm(tmp_path):
    path = tmp_path / "region.geojson"
    gpd.GeoDataFrame(geometry=[shapely.box(32.2, 0.3, 32.3, 0.4)], crs="EPSG:4326").to_file(path)
    grid = RegionGrid.from_polygons(path, cell_size_m=1000)
    assert grid.crs.to_epsg() == 32636
    pts = _all_points(grid)
    assert pts["lon"].between(32.2, 32.3).all() and pts["lat"].between(0.3, 0.4).all()
    assert 90 <= grid.n_cells <= 150  # ~11.1 km x 11.1 km


def test_from_polygons_rejects_points(tmp_path):
    path = tmp_path / "pts.geojson"
    gpd.GeoDataFrame(geometry=[shapely.Point(32, 0)], crs="EPSG:4326").to_file(path)
    with pytest.raises(InputDataError, match="must hold polygons"):
        RegionGrid.from_polygons(path, cell_size_m=1000)


def _raster(path, crs, transform, h, w):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=h,
        width=w,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(np.ones((1, h, w), dtype="uint8"))
    return path


def test_from_raster_footprint_covers_the_rasters(tmp_path):
    a = _raster(tmp_path / "a.tif", "EPSG:32636", from_origin(500_010, 200_020, 30, 30), 100, 200)
    b = _raster(tmp_path / "b.tif", "EPSG:32636", from_origin(506_000, 199_000, 30, 30), 50, 50)
    grid = RegionGrid.from_raster_footprint([a, b], cell_size_m=300)
    left, bottom, right, top = grid.bounds
    assert (left, top) == (499_800.0, 200_100.0) and grid.cell_size == 300
    assert (
        left <= 500_010 and right >= 506_000 + 1500 and bottom <= 200_020 - 3000 and top >= 200_020
    )
    pts = _all_points(grid)
    boxes = [
        shapely.box(500_010, 197_020, 506_010, 200_020),
        shapely.box(506_000, 197_500, 507_500, 199_000),
    ]
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    cx, cy = left + (cols.ravel() + 0.5) * 300, top - (rows.ravel() + 0.5) * 300
    inside = shapely.contains_xy(boxes[0], cx, cy) | shapely.contains_xy(boxes[1], cx, cy)
    assert len(pts) == grid.n_cells == inside.sum()


def test_from_raster_footprint_of_a_geographic_raster(tmp_path):
    a = _raster(tmp_path / "g.tif", "EPSG:4326", from_origin(32.0, 1.0, 0.001, 0.001), 200, 300)
    grid = RegionGrid.from_raster_footprint(a, cell_size_m=1000)
    assert grid.crs.to_epsg() == 32636
    pts = _all_points(grid)
    assert pts["lon"].between(32.0, 32.3).all() and pts["lat"].between(0.8, 1.0).all()
    # 33.4 km x 22.1 km of footprint at 1 km cells
    assert abs(grid.n_cells - 33.4 * 22.1) < 0.1 * 33.4 * 22.1
