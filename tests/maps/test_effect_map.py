"""The pipeline's in-memory effect-map grid and GeoTIFF writer (eocausal.maps.effect)."""

from __future__ import annotations

import numpy as np
import rasterio
from rasterio.transform import from_origin

from eocausal.maps import grid_over_raster, write_map


def test_grid_covers_raster_and_round_trips(tmp_path):
    src_path = tmp_path / "r.tif"
    with rasterio.open(
        src_path,
        "w",
        driver="GTiff",
        height=100,
        width=200,
        count=1,
        dtype="uint8",
        crs="EPSG:32636",
        transform=from_origin(500_000, 200_000, 30, 30),
    ) as dst:
        dst.write(np.ones((1, 100, 200), dtype="uint8"))
    grid = grid_over_raster(src_path, 4)
    assert grid.shape == (4, 4) and len(grid.points) == 16
    # cell centres: first at (left + w/8, top - h/8)
    first = grid.points.iloc[0]
    assert np.isclose(first["x"], 500_000 + 6000 / 8) and np.isclose(first["y"], 200_000 - 3000 / 8)
    values = grid.to_array(grid.points["unit_id"].to_numpy()[::-1][:10], np.arange(10, dtype=float))
    assert np.isnan(values).sum() == 6 and values[3, 3] == 0.0
    out = write_map(values, grid, tmp_path / "m.tif")
    with rasterio.open(out) as m:
        assert m.crs.to_epsg() == 32636 and m.shape == (4, 4)
        back = m.read(1)
        # the map's pixel (r, c) lies at the grid point (r, c)
        x, y = m.xy(2, 1)
        p = grid.points.query("row == 2 and col == 1").iloc[0]
        assert np.isclose(x, p["x"]) and np.isclose(y, p["y"])
    np.testing.assert_array_equal(np.isnan(back), np.isnan(values))
