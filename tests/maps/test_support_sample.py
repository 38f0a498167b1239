"""Out-of-support flags against brute force; sampling a map at points against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy.spatial.distance import cdist

from eocausal.errors import CRSMismatchError, InputDataError
from eocausal.maps import FeatureSupport, sample_map, support_flags


def test_support_flags_inside_cloud_kept_far_points_flagged():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 3))
    inside = rng.normal(scale=0.3, size=(200, 3))
    direction = rng.normal(size=(50, 3))
    far = 8 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    flag, dist = support_flags(train, np.vstack([inside, far]), k=10)
    assert not flag[:200].any() and flag[200:].all()
    assert dist.shape == (250,) and (dist[200:] > dist[:200].max()).all()


def test_support_flags_match_brute_force_leave_one_out_with_duplicates():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(60, 2))
    train = np.vstack([train, train[:5]])  # duplicated locations
    cells = rng.normal(scale=1.5, size=(300, 2))
    k, q = 4, 0.9
    flag, dist = support_flags(train, cells, k=k, quantile=q)
    d_train = cdist(train, train)
    np.fill_diagonal(
        d_train, np.inf
    )  # leave each location out of its own neighbours (not its duplicate)
    threshold = np.quantile(np.sort(d_train, axis=1)[:, k - 1], q)
    brute = np.sort(cdist(cells, train), axis=1)[:, k - 1]
    np.testing.assert_allclose(dist, brute, rtol=1e-12)
    np.testing.assert_array_equal(flag, brute > threshold)
    assert 0 < flag.sum() < len(cells)


def test_fitted_support_is_exact_in_many_dimensions_and_blocks(monkeypatch):
    """Hundreds of features (where trees degrade), blocks of a few rows: still the brute-force k-th distance."""
    from eocausal.maps import support as support_module

    rng = np.random.default_rng(2)
    train = rng.normal(size=(300, 256))
    cells = np.vstack([rng.normal(size=(200, 256)), train[:3] + 1e-9])  # three cells nearly on training points
    monkeypatch.setattr(support_module, "_BLOCK_BYTES", 8 * 300 * 7)  # 7 rows per block
    k = 5
    fitted = FeatureSupport(k=k, quantile=0.95).fit(train)
    d_train = cdist(train, train)
    np.fill_diagonal(d_train, np.inf)
    assert fitted.threshold_ == pytest.approx(np.quantile(np.sort(d_train, axis=1)[:, k - 1], 0.95), rel=1e-12)
    brute = np.sort(cdist(cells, train), axis=1)[:, k - 1]
    np.testing.assert_allclose(fitted.distance(cells), brute, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(cells), brute > fitted.threshold_)
    flag, dist = support_flags(train, cells, k=k, quantile=0.95)
    np.testing.assert_array_equal(dist, fitted.distance(cells))
    assert fitted.n_features_in_ == 256 and fitted.distance(np.zeros((0, 256))).shape == (0,)
    with pytest.raises(InputDataError, match="not fitted"):
        FeatureSupport().predict(cells)
    with pytest.raises(InputDataError, match="columns"):
        fitted.predict(cells[:, :10])


def test_support_flags_check_inputs():
    train = np.zeros((5, 2))
    with pytest.raises(InputDataError, match="fewer than the 5 training"):
        support_flags(train, np.zeros((1, 2)), k=5)
    with pytest.raises(InputDataError, match="same feature space"):
        support_flags(train + np.arange(5)[:, None], np.zeros((1, 3)), k=2)
    with pytest.raises(InputDataError, match="quantile"):
        support_flags(train, np.zeros((1, 2)), k=2, quantile=0)


@pytest.fixture(scope="module")
def raster(tmp_path_factory):
    """A 40 x 50 float32 map, 30 m cells in UTM 36N, value 100 * row + col, a block of nodata."""
    path = tmp_path_factory.mktemp("sample") / "m.tif"
    rows, cols = np.mgrid[0:40, 0:50]
    values = (100 * rows + cols).astype(np.float32)
    values[10:14, 20:25] = np.nan
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=40,
        width=50,
        count=2,
        dtype="float32",
        crs="EPSG:32636",
        transform=from_origin(500_000, 200_000, 30, 30),
        nodata=np.nan,
    ) as dst:
        dst.write(values, 1)
        dst.write(-values, 2)
        dst.set_band_description(2, "negated")
        dst.update_tags(2, name="neg")
    return path, values


def _lonlat(x, y):
    return Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True).transform(x, y)


def test_sample_map_exact_at_cell_centres_and_anywhere_inside(raster):
    path, values = raster
    rows, cols = np.array([0, 5, 39, 12, 20]), np.array([0, 7, 49, 22, 3])
    x, y = 500_000 + (cols + 0.5) * 30, 200_000 - (rows + 0.5) * 30
    lon, lat = _lonlat(x, y)
    got = sample_map(path, lon, lat)
    want = values[rows, cols].astype(float)
    np.testing.assert_array_equal(got, want)  # row 12, col 22 is nodata: NaN on both sides
    assert np.isnan(got[3])
    lon2, lat2 = _lonlat(x + 11, y - 13)  # off-centre, same cells
    np.testing.assert_array_equal(sample_map(path, lon2, lat2), want)
    np.testing.assert_array_equal(sample_map(path, lon, lat, band="neg"), -want)
    np.testing.assert_array_equal(sample_map(path, lon, lat, band="negated"), -want)
    off = sample_map(
        path, *_lonlat(np.array([499_000.0, 502_000.0]), np.array([199_000.0, 195_000.0]))
    )
    assert np.isnan(off).all()


def test_sample_map_radius_mean_matches_brute_force(raster):
    path, values = raster
    rng = np.random.default_rng(2)
    x = rng.uniform(499_950, 501_550, 60)
    y = rng.uniform(198_750, 200_050, 60)
    lon, lat = _lonlat(x, y)
    xr, yr = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True).transform(lon, lat)
    rows, cols = np.mgrid[0:40, 0:50]
    cx, cy = 500_000 + (cols.ravel() + 0.5) * 30, 200_000 - (rows.ravel() + 0.5) * 30
    flat = values.ravel().astype(float)
    for radius in (20.0, 75.0, 200.0):
        got = sample_map(path, lon, lat, radius_m=radius)
        want = np.full(60, np.nan)
        for i in range(60):
            near = ((cx - xr[i]) ** 2 + (cy - yr[i]) ** 2 <= radius**2) & np.isfinite(flat)
            if near.any():
                want[i] = flat[near].mean()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        assert np.isnan(got).any() == np.isnan(want).any()
    assert np.isfinite(sample_map(path, lon, lat, radius_m=200.0)).mean() > 0.8


def test_sample_map_checks(raster, tmp_path):
    path, _ = raster
    with pytest.raises(InputDataError, match="its bands are"):
        sample_map(path, [33.0], [1.8], band="wealth")
    with pytest.raises(InputDataError, match="swapped"):
        sample_map(path, [1.8], [120.0])
    geo = tmp_path / "geo.tif"
    with rasterio.open(
        geo,
        "w",
        driver="GTiff",
        height=2,
        width=2,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(32, 1, 0.1, 0.1),
    ) as dst:
        dst.write(np.ones((1, 2, 2), dtype="float32"))
    assert sample_map(geo, [32.05], [0.95])[0] == 1.0
    with pytest.raises(CRSMismatchError, match="metres"):
        sample_map(geo, [32.05], [0.95], radius_m=100)
