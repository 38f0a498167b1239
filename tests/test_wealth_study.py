"""The built-in wealth study: imagery rendered from wealth, exact unit effects, DHS displacement limits."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer

from eocausal.errors import ConfigError
from eocausal.simulate import WealthStudy, make_wealth_study
from eocausal.simulate import wealth as wealth_module

SIZES = {"scene_size": 384, "n_survey": 300, "n_trials": 9, "units_per_trial": 10}
HALF = wealth_module.AREA_PX // 2  # a unit's area: |row - r| <= HALF and |col - c| <= HALF


@pytest.fixture(scope="module")
def world():
    return wealth_module._simulate(seed=3, **SIZES)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_wealth_study(tmp_path_factory.mktemp("wealth"), seed=3, **SIZES)


def _read(path):
    with rasterio.open(path) as src:
        return src.read()


def _pixels(path, lon, lat):
    """Row and column of WGS84 points on the grid of the raster at ``path``."""
    with rasterio.open(path) as src:
        x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
        rows, cols = rasterio.transform.rowcol(src.transform, x, y)
    return np.asarray(rows), np.asarray(cols)


def _brute_force_endline(world, only=None):
    """Baseline wealth plus tau_j on the area of each treated unit j (or of unit ``only``)."""
    units = world.units
    h, w = world.wealth_base.shape
    rr, cc = np.mgrid[0:h, 0:w]
    wealth = world.wealth_base.copy()
    which = [only] if only is not None else np.flatnonzero(units["treated"].to_numpy() == 1)
    for j in which:
        r, c, tau = units.loc[j, ["row", "col", "tau_true"]]
        wealth += tau * ((np.abs(rr - r) <= HALF) & (np.abs(cc - c) <= HALF))
    return wealth


def test_same_seed_same_study_other_seed_other_study(study, tmp_path):
    again = make_wealth_study(tmp_path / "again", seed=3, **SIZES)
    other = make_wealth_study(tmp_path / "other", seed=4, **SIZES)
    assert isinstance(again, WealthStudy)
    for path_a, path_b in [(study.survey_path, again.survey_path)] + [
        (a[1], b[1]) for a, b in zip(study.trials, again.trials, strict=True)
    ]:
        assert path_a.read_bytes() == path_b.read_bytes()
    for attr in ("scene_path", "baseline_scene_path", "wealth_raster_path"):
        np.testing.assert_array_equal(_read(getattr(study, attr)), _read(getattr(again, attr)))
    pd.testing.assert_frame_equal(study.truth, again.truth)
    assert not np.array_equal(_read(study.scene_path), _read(other.scene_path))
    assert not study.truth["true_ate"].equals(other.truth["true_ate"])


def test_files_follow_the_contract(study):
    survey = pd.read_csv(study.survey_path)
    assert list(survey.columns) == ["cluster_id", "lon", "lat", "true_lon", "true_lat", "urban", "wealth"]
    assert len(survey) == SIZES["n_survey"]
    assert [name for name, _ in study.trials] == list(study.truth["trial"])
    for _, path in study.trials:
        units = pd.read_csv(path)
        assert {"unit_id", "lon", "lat", "treated", "wealth_true", "tau_true"} <= set(units.columns)
        assert len(units) == SIZES["units_per_trial"] and set(units["treated"]) == {0, 1}
    assert list(study.truth.columns) == ["trial", "true_ate", "n", "intensity"]


def test_true_ates_differ_between_trials_and_average_the_unit_effects(study):
    ate = study.truth["true_ate"].to_numpy()
    assert ate.min() == 0.0  # the trial with intensity 0
    assert ate.max() > 0.8 and np.std(ate) > 0.25
    # tau_i = tau_t h_i with h_i ~ U(0.5, 1.5): the ATE is the intensity up to the mean of 60 h_i
    np.testing.assert_allclose(ate, study.truth["intensity"], atol=0.1)
    for (_, path), true_ate in zip(study.trials, ate, strict=True):
        assert pd.read_csv(path)["tau_true"].mean() == pytest.approx(true_ate, rel=1e-12, abs=1e-15)


def test_endline_wealth_and_unit_effects_match_a_brute_force_recomputation(world, study):
    end = _brute_force_endline(world)
    np.testing.assert_allclose(world.wealth_end, end, atol=1e-12)
    units = world.units
    r, c = units["row"].to_numpy(), units["col"].to_numpy()
    np.testing.assert_allclose(units["wealth_true"], end[r, c], atol=1e-12)
    written = pd.concat([pd.read_csv(p) for _, p in study.trials], ignore_index=True)
    np.testing.assert_allclose(written["wealth_true"], end[r, c], atol=1e-9)
    # unit i's own effect: wealth at x_i with only unit i treated, minus baseline
    rng = np.random.default_rng(0)
    for i in rng.choice(np.flatnonzero(units["tau_true"] > 0), size=5, replace=False):
        alone = _brute_force_endline(world, only=i)
        assert alone[r[i], c[i]] - world.wealth_base[r[i], c[i]] == pytest.approx(units.loc[i, "tau_true"])
    # the written truth surface is the endline wealth (NaN off the valid scene)
    surface = _read(study.wealth_raster_path)[0]
    valid = world.noise.valid
    np.testing.assert_allclose(surface[valid], end[valid].astype(np.float32))
    assert np.isnan(surface[~valid]).all()


def test_endline_scene_differs_from_baseline_only_on_treated_areas(world, study):
    units = world.units
    on = units[(units["treated"] == 1) & (units["tau_true"] > 0)]
    h, w = world.wealth_base.shape
    rr, cc = np.mgrid[0:h, 0:w]
    areas = np.zeros((h, w), dtype=bool)
    for r, c in on[["row", "col"]].to_numpy():
        areas |= (np.abs(rr - r) <= HALF) & (np.abs(cc - c) <= HALF)
    changed = np.any(_read(study.scene_path) != _read(study.baseline_scene_path), axis=0)
    assert not (changed & ~areas).any()
    assert changed[areas].mean() > 0.5  # greenness moves on most pixels, roofs on some
    new_roofs = world.endline.built & ~world.baseline.built
    assert new_roofs.sum() > 100 and not (new_roofs & ~areas).any()
    assert not (world.baseline.built & ~world.endline.built).any()  # wealth only rises


def test_rendering_is_one_function_of_wealth_whatever_moved_it(world):
    """Pixels of equal endline wealth have the same roof frequency on treated areas and elsewhere."""
    change = world.wealth_end - world.wealth_base
    valid = world.noise.valid & ~world.noise.roads
    treated_px = valid & (change > 0.3)  # wealth raised by a treatment
    untouched = valid & (change == 0)  # wealth from the surface only
    y, roof = world.wealth_end, world.endline.built
    edges = np.quantile(y[treated_px], np.linspace(0.05, 0.95, 7))
    checked = 0
    for lo, hi in itertools.pairwise(edges):
        a = treated_px & (y >= lo) & (y < hi)
        b = untouched & (y >= lo) & (y < hi)
        pa, pb = roof[a].mean(), roof[b].mean()
        se = np.sqrt(pa * (1 - pa) / a.sum() + pb * (1 - pb) / b.sum())
        assert abs(pa - pb) < 4 * se + 1e-3
        # and both follow rho(y), the roof probability the module documents
        expected = wealth_module.roof_probability(y[a]).mean()
        assert pa == pytest.approx(expected, abs=4 * np.sqrt(expected / a.sum()) + 1e-3)
        checked += 1
    assert checked == 6
    # the treatment did move wealth enough to change the rendering (the comparison has power)
    assert roof[treated_px].mean() > world.baseline.built[treated_px].mean() + 0.01


def test_units_are_areas_that_tile_their_windows_without_spillovers(world):
    """Disjoint areas inside their trial's window: a unit's change is exactly its own W_i tau_i."""
    units = world.units
    r, c = units["row"].to_numpy(), units["col"].to_numpy()
    change = world.wealth_end[r, c] - world.wealth_base[r, c]
    np.testing.assert_allclose(change, units["treated"].to_numpy() * units["tau_true"].to_numpy(), atol=1e-12)
    for (_, a), (_, b) in itertools.combinations(units[["row", "col"]].iterrows(), 2):
        assert max(abs(a["row"] - b["row"]), abs(a["col"] - b["col"])) >= 2 * HALF + 1
    side = SIZES["scene_size"] // 3
    window = (r // side) * 3 + c // side
    assert (units["trial"].str[-2:].astype(int).to_numpy() == window).all()
    valid = world.noise.valid
    assert all(valid[i - HALF : i + HALF + 1, j - HALF : j + HALF + 1].all() for i, j in zip(r, c, strict=True))


def test_every_whole_area_is_a_unit_by_default():
    world = wealth_module._simulate(seed=3, **{**SIZES, "units_per_trial": None})
    per_trial = world.units.groupby("trial").size()
    assert per_trial.max() == (SIZES["scene_size"] // 3 // wealth_module.AREA_PX) ** 2
    assert per_trial.min() >= 4 and len(world.units) > len(world.units.drop_duplicates(["trial"])) * 10


def test_survey_displacement_obeys_the_dhs_limits(world, study):
    survey = pd.read_csv(study.survey_path)
    to_utm = Transformer.from_crs("EPSG:4326", world.endline.crs, always_xy=True)
    x0, y0 = to_utm.transform(survey["true_lon"], survey["true_lat"])
    x1, y1 = to_utm.transform(survey["lon"], survey["lat"])
    d = np.hypot(np.asarray(x1) - x0, np.asarray(y1) - y0)
    urban = survey["urban"].to_numpy() == 1
    assert 10 < urban.sum() < len(survey) - 10
    assert d[urban].max() <= 2000.5 and d[~urban].max() <= 10000.5
    assert np.mean(d[~urban] > 5000.5) <= 0.03
    # distances uniform on [0, limit]: means near 1 km (urban, within 4 SE) and 2.5 km (rural)
    assert abs(d[urban].mean() - 1000) < 4 * (2000 / np.sqrt(12)) / np.sqrt(urban.sum())
    assert d[~urban].mean() == pytest.approx(2500, rel=0.2)
    # displaced points stay on the valid scene
    r, c = _pixels(study.scene_path, survey["lon"], survey["lat"])
    assert world.noise.valid[r, c].all()


def test_survey_wealth_is_the_cluster_mean_around_the_true_location(world, study):
    """Mean endline wealth over the valid pixels within 300 m of the true location, plus N(0, 0.1²)."""
    survey = pd.read_csv(study.survey_path)
    surface = _read(study.wealth_raster_path)[0].astype(np.float64)
    r0, c0 = _pixels(study.wealth_raster_path, survey["true_lon"], survey["true_lat"])
    h, w = surface.shape
    rr, cc = np.mgrid[0:h, 0:w]
    reach = wealth_module.CLUSTER_RADIUS_M / wealth_module.PIXEL_M
    brute = np.array([
        np.nanmean(np.where((rr - r) ** 2 + (cc - c) ** 2 <= reach**2, surface, np.nan))
        for r, c in zip(r0, c0, strict=True)
    ])
    noise = survey["wealth"].to_numpy() - brute
    assert abs(noise.mean()) < 0.03 and noise.std() == pytest.approx(wealth_module.SURVEY_SD, rel=0.2)
    # the point value is farther from the measurement than the cluster mean is
    assert np.std(survey["wealth"].to_numpy() - surface[r0, c0]) > 1.2 * noise.std()


def test_sizes_out_of_range_raise_with_the_argument_named(tmp_path):
    with pytest.raises(ConfigError, match="`n_trials`"):
        make_wealth_study(tmp_path, n_trials=0)
    with pytest.raises(ConfigError, match="units_per_trial"):
        make_wealth_study(tmp_path, scene_size=256, n_trials=9, units_per_trial=5000)


def test_regional_greenness_weighs_the_regional_field_in_the_vegetation_noise(world, tmp_path):
    """0 by default; 0.4 puts the 5 km field in the greenness and moves nothing else."""
    green = wealth_module._simulate(seed=3, **SIZES, regional_greenness=0.4)
    np.testing.assert_array_equal(green.noise.regional, world.noise.regional)
    np.testing.assert_allclose(green.noise.veg_logit - world.noise.veg_logit, 0.4 * world.noise.regional, atol=1e-12)
    np.testing.assert_array_equal(green.wealth_end, world.wealth_end)
    pd.testing.assert_frame_equal(green.units, world.units)
    with pytest.raises(ConfigError, match="regional_greenness"):
        make_wealth_study(tmp_path, scene_size=256, n_trials=1, regional_greenness=-1.0)
