"""The built-in study: a real GeoTIFF with known structure, and a trial with known tau."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from eocausal.simulate import BAND_NAMES, make_demo_study, make_scene, simulate_trial


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_demo_study(tmp_path_factory.mktemp("study"), seed=3, n_units=400, scene_size=512)


def test_geotiff_is_landsat_like(study):
    with rasterio.open(study.scene_path) as src:
        assert src.count == 6 and src.dtypes[0] == "uint16"
        assert src.crs.to_epsg() == 32636
        assert src.res == (30.0, 30.0)
        assert src.nodata == 0
        assert tuple(src.descriptions) == BAND_NAMES
        assert src.block_shapes[0] == (256, 256)
        dn = src.read()
    valid = dn[0] > 0
    assert 0.85 < valid.mean() < 0.99  # an irregular nodata margin, not the whole scene
    assert (dn[:, ~valid] == 0).all()
    refl = dn[:, valid].astype(float) * 0.0000275 - 0.2  # Collection 2 SR scaling
    assert refl.min() > -0.01 and refl.max() < 0.6
    # vegetation makes nir08 brighter than red on average (a Landsat-like spectrum)
    assert refl[3].mean() > refl[2].mean()


def test_same_seed_same_files(tmp_path, study):
    again = make_demo_study(tmp_path, seed=3, n_units=400, scene_size=512)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    with rasterio.open(study.scene_path) as a, rasterio.open(again.scene_path) as b:
        assert np.array_equal(a.read(), b.read())
    assert digest(study.units_path) == digest(again.units_path)
    other = make_demo_study(tmp_path / "other", seed=4, n_units=400, scene_size=512)
    assert not other.units["tau_true"].equals(study.units["tau_true"])


def test_tau_is_the_documented_function_of_local_and_regional_features():
    scene = make_scene(512, seed=1)
    units = simulate_trial(scene, n_units=300, seed=2, effect_local=0.7, effect_regional=1.1)
    rows = np.floor((units["y"] - scene.transform.f) / scene.transform.e - 0.5).astype(int)
    cols = np.floor((units["x"] - scene.transform.c) / scene.transform.a - 0.5).astype(int)
    built = ndimage.uniform_filter(scene.built.astype(float), 33, mode="constant")[rows, cols]
    green = ndimage.uniform_filter(scene.greenness_regional, 201, mode="constant")[rows, cols]
    np.testing.assert_allclose(units["built_1km"], built, rtol=1e-12)
    np.testing.assert_allclose(units["green_6km"], green, rtol=1e-12)
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    np.testing.assert_allclose(units["tau_true"], 1 + 0.7 * z(built) + 1.1 * z(green), rtol=1e-10)


def test_features_live_at_different_scales():
    """The local feature varies within 1 km, the regional one barely does."""
    scene = make_scene(512, seed=0)
    built_1km = ndimage.uniform_filter(scene.built.astype(float), 33)
    green_6km = ndimage.uniform_filter(scene.greenness_regional, 201)
    # shift by 1 km: the local feature decorrelates much more than the regional one
    def lag_corr(a, k):
        return np.corrcoef(a[100:400, 100:400].ravel(), a[100:400, 100 + k : 400 + k].ravel())[0, 1]

    assert lag_corr(built_1km, 33) < 0.5
    assert lag_corr(green_6km, 33) > 0.9


def test_trial_is_randomized_and_units_cover_the_margin(study):
    u = study.units
    assert set(u["treated"].unique()) == {0, 1}
    assert abs(u["treated"].mean() - 0.5) < 0.1
    assert u["unit_id"].is_unique
    assert {"lon", "lat", "village", "tau_true", "propensity"} <= set(u.columns)
    with rasterio.open(study.scene_path) as src:
        vals = np.array([v[0] for v in src.sample(zip(u["x"], u["y"]))])
    assert (vals == 0).sum() >= 1  # some units fall in the nodata margin: they must be reported
