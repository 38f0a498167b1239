"""Report figures: the CATE map drawn in the map's CRS whatever the imagery's CRS."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import rasterio
from rasterio.transform import from_bounds
from rasterio.warp import transform_bounds

from eocausal.report import plot_cate_map


def _write(path, data, crs, bounds, descriptions=None):
    h, w = data.shape[-2:]
    data = data.reshape(-1, h, w)
    profile = {"driver": "GTiff", "height": h, "width": w, "count": data.shape[0], "dtype": "float32",
               "crs": crs, "transform": from_bounds(*bounds, w, h), "nodata": np.nan}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.float32))
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def test_a_degree_background_is_warped_to_the_metre_map(tmp_path):
    lonlat = (32.0, 0.5, 32.2, 0.7)  # the imagery in EPSG:4326 degrees
    utm = transform_bounds("EPSG:4326", "EPSG:32636", *lonlat)  # the CATE grid in UTM metres
    rgb = np.random.default_rng(0).random((3, 40, 40))
    background = _write(tmp_path / "scene.tif", rgb, "EPSG:4326", lonlat, ["red", "green", "blue"])
    cate_map = _write(tmp_path / "cate.tif", np.linspace(-1, 1, 100).reshape(10, 10), "EPSG:32636", utm)
    points = np.array([[(utm[0] + utm[2]) / 2, (utm[1] + utm[3]) / 2]])
    fig = plot_cate_map(cate_map, background=background, points_xy=points)
    bg_img, cate_img = fig.axes[0].images
    left, right, bottom, top = bg_img.get_extent()
    # the background sits on the map's metres (not at 32 degrees east), covering the same ground
    assert np.allclose([left, bottom, right, top], utm, rtol=0, atol=2500)
    assert np.allclose(cate_img.get_extent(), (utm[0], utm[2], utm[1], utm[3]))
