"""Chips from one GeoTIFF: exact pixels, centring, padding, masks, km sizes, resampling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eocausal.errors import BandError, ConfigError, ExclusionWarning, UnitsError
from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale
from eocausal.imagery.chips import resample, resample_weights

ORIGIN = (500000.0, 100000.0)


def test_exact_centre_pixel_and_window(kit, index_tif):
    rows_cols = [(50, 60), (120, 7 + 100), (100, 150)]
    units = kit.units_at([kit.pixel_centre(ORIGIN, 30.0, r, c) for r, c in rows_cols])
    spec = ChipSpec([Scale("s5", size_px=5, out_px=5), Scale("s4", size_px=4, out_px=4)])
    ds = ChipDataset(units, RasterSource(index_tif), spec)
    img = kit.index_image(200, 300, 2)
    by_id = {ds[i]["unit_id"]: ds[i] for i in range(len(ds))}
    for k, (r, c) in enumerate(rows_cols):
        item = by_id[f"u{k}"]
        assert item["index"] == k and not item["excluded"]
        chip5 = item["chips"]["s5"].numpy()
        assert chip5.shape == (2, 5, 5) and chip5.dtype == np.float32
        assert chip5[0, 2, 2] == r * 1000 + c
        assert chip5[1, 2, 2] == 1_000_000 + r * 1000 + c
        np.testing.assert_array_equal(chip5, img[:, r - 2 : r + 3, c - 2 : c + 3])
        # even size: the unit's pixel sits at index size // 2
        chip4 = item["chips"]["s4"].numpy()
        np.testing.assert_array_equal(chip4, img[:, r - 2 : r + 2, c - 2 : c + 2])
        assert item["masks"]["s5"].all() and float(item["valid_fraction"]["s5"]) == 1.0


def test_point_anywhere_inside_a_pixel_maps_to_that_pixel(kit, index_tif):
    x, y = kit.pixel_centre(ORIGIN, 30.0, 40, 70)
    units = kit.units_at([(x - 14.9, y + 14.9), (x + 14.9, y - 14.9)])
    ds = ChipDataset(units, RasterSource(index_tif), ChipSpec([Scale("a", size_px=3, out_px=3)]))
    for i in range(2):
        assert ds[i]["chips"]["a"][0, 1, 1] == 40 * 1000 + 70


def test_edge_padding_is_not_shifted_and_masked(kit, index_tif):
    units = kit.units_at([kit.pixel_centre(ORIGIN, 30.0, 1, 298)])
    spec = ChipSpec([Scale("a", size_px=7, out_px=7)], min_valid_fraction=0.0)
    ds = ChipDataset(units, RasterSource(index_tif), spec)
    item = ds[0]
    chip, mask = item["chips"]["a"][0].numpy(), item["masks"]["a"].numpy()
    assert chip[3, 3] == 1 * 1000 + 298  # centre stays the unit's pixel
    # window rows -2..4, cols 295..301: rows 0-1 and cols 5-6 (301, 300 > 299) are outside
    expected_mask = np.zeros((7, 7), bool)
    expected_mask[2:, :5] = True
    np.testing.assert_array_equal(mask, expected_mask)
    assert np.all(chip[~mask] == 0)
    np.testing.assert_array_equal(chip[2:, :5], kit.index_image(200, 300)[0, 0:5, 295:300])
    assert float(item["valid_fraction"]["a"]) == pytest.approx(25 / 49)
    info = ds.chip_info(0)["scales"]["a"][0]
    assert info["window"] == (-2, 295, 7, 7)
    assert info["transform"][2] == pytest.approx(ORIGIN[0] + 295 * 30) and info["transform"][
        5
    ] == pytest.approx(ORIGIN[1] + 2 * 30)


def test_nodata_pixels_are_invalid(kit, tmp_path):
    data = np.full((1, 20, 20), 7, dtype=np.uint16)
    data[0, 10, 11] = 0
    path = kit.write_tif(tmp_path / "nd.tif", data, nodata=0)
    ds = ChipDataset(
        kit.units_at([kit.pixel_centre(ORIGIN, 30.0, 10, 10)]),
        RasterSource(path),
        ChipSpec([Scale("a", size_px=3, out_px=3)]),
    )
    mask = ds[0]["masks"]["a"].numpy()
    assert mask.sum() == 8 and not mask[1, 2]
    assert float(ds[0]["valid_fraction"]["a"]) == pytest.approx(8 / 9)


def test_low_valid_fraction_excluded_with_reason(kit, index_tif):
    units = kit.units_at(
        [kit.pixel_centre(ORIGIN, 30.0, 0, 0), kit.pixel_centre(ORIGIN, 30.0, 100, 100)]
    )
    spec = ChipSpec(
        [Scale("small", size_px=3, out_px=3), Scale("big", size_px=21, out_px=7)],
        min_valid_fraction=0.5,
    )
    ds = ChipDataset(units, RasterSource(index_tif), spec)
    items = {ds[i]["unit_id"]: ds[i] for i in range(len(ds))}
    corner = items["u0"]
    assert (
        corner["excluded"]
        and "scale 'big'" in corner["reason"]
        and "min_valid_fraction" in corner["reason"]
    )
    assert corner["chips"]["big"].shape == (2, 7, 7) and not corner["masks"]["big"].any()
    assert float(corner["valid_fraction"]["big"]) == pytest.approx(11 * 11 / 21**2)
    assert not items["u1"]["excluded"]
    table = ds.scan_exclusions()
    assert table.unit_id.tolist() == ["u0"] and "scale 'big'" in table.reason.iloc[0]


def test_units_outside_all_imagery_reported(kit, index_tif):
    units = kit.units_at([kit.pixel_centre(ORIGIN, 30.0, 10, 10), (100.0, 100.0)])
    with pytest.warns(ExclusionWarning, match="1 of 2 units excluded"):
        ds = ChipDataset(
            units, RasterSource(index_tif), ChipSpec([Scale("a", size_px=3, out_px=3)])
        )
    assert len(ds) == 1 and list(ds.unit_ids) == ["u0"]
    assert ds.exclusions.unit_id.tolist() == ["u1"]
    assert "outside all imagery" in ds.exclusions.reason.iloc[0]


def test_swapped_lon_lat_detected(kit, tmp_path):
    path = kit.write_tif(
        tmp_path / "geo.tif",
        np.ones((1, 100, 100), "uint8"),
        crs="EPSG:4326",
        origin=(32.0, 2.0),
        res=0.01,
    )
    frame_units = kit.units_at(
        [(1.5, 32.5), (1.2, 32.3)], crs="EPSG:4326"
    )  # (lat, lon) given as (lon, lat)
    with pytest.raises(UnitsError, match="look swapped"):
        ChipDataset(frame_units, RasterSource(path), ChipSpec([Scale("a", size_px=3, out_px=3)]))


def test_km_scale_projected_and_geographic(kit, tmp_path, index_tif):
    units = kit.units_at([kit.pixel_centre(ORIGIN, 30.0, 100, 100)])
    spec = ChipSpec([Scale("k", size_km=0.3, out_px=10)])
    ds = ChipDataset(units, RasterSource(index_tif), spec)
    assert ds.chip_info(0)["scales"]["k"][0]["window"][2:] == (10, 10)
    np.testing.assert_array_equal(
        ds[0]["chips"]["k"][0].numpy(), kit.index_image(200, 300)[0, 95:105, 95:105]
    )
    # geographic grid at the equator: 1 km is about 1000 / (0.0003 * 111320) = 29.9 columns, 30.2 rows
    path = kit.write_tif(
        tmp_path / "geo.tif",
        np.ones((1, 400, 400), "uint8"),
        crs="EPSG:4326",
        origin=(33.94, 0.06),
        res=0.0003,
    )
    ds = ChipDataset(
        kit.units_at([(34.0, 0.0)], crs="EPSG:4326"),
        RasterSource(path),
        ChipSpec([Scale("k", size_km=1.0, out_px=16)]),
    )
    _, _, h, w = ds.chip_info(0)["scales"]["k"][0]["window"]
    assert h == 30 and w == 30
    assert ds[0]["chips"]["k"].shape == (1, 16, 16)


def test_band_selection_by_name_and_absent_band(kit, index_tif):
    units = kit.units_at([kit.pixel_centre(ORIGIN, 30.0, 10, 10)])
    ds = ChipDataset(
        units, RasterSource(index_tif), ChipSpec([Scale("a", size_px=1, out_px=1)], bands=["NIR"])
    )
    assert ds.band_names == ["nir"]
    assert (
        ds[0]["chips"]["a"].shape == (1, 1, 1) and ds[0]["chips"]["a"].item() == 1_000_000 + 10_010
    )
    with pytest.raises(BandError, match=r"\['swir16'\].*available bands: \['red', 'nir'\]"):
        ChipDataset(
            units,
            RasterSource(index_tif),
            ChipSpec([Scale("a", size_px=1, out_px=1)], bands=["swir16"]),
        )


def test_dataloader_collate_workers_and_pickle(kit, index_tif):
    units = kit.units_at(
        [kit.pixel_centre(ORIGIN, 30.0, 20 + 7 * k, 30 + 11 * k) for k in range(10)]
    )
    spec = ChipSpec([Scale("a", size_px=5, out_px=8), Scale("b", size_px=9, out_px=4)])
    ds = ChipDataset(units, RasterSource(index_tif), spec)
    ds[0]  # open a handle in the parent; workers must not reuse it
    clone = pickle.loads(pickle.dumps(ds))
    torch.testing.assert_close(clone[3]["chips"]["a"], ds[3]["chips"]["a"])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert batches[0]["chips"]["a"].shape == (4, 2, 8, 8) and batches[0]["chips"]["b"].shape == (
        4,
        2,
        4,
        4,
    )
    ids = [u for b in batches for u in b["unit_id"]]
    assert sorted(ids) == sorted(units.unit_id.tolist())
    got = torch.cat([b["chips"]["a"] for b in batches])
    torch.testing.assert_close(got, torch.stack([ds[i]["chips"]["a"] for i in range(len(ds))]))


def test_spec_validation():
    with pytest.raises(ConfigError, match="exactly one of size_px or size_km"):
        Scale("a", size_px=3, size_km=1.0, out_px=3)
    with pytest.raises(ConfigError, match="duplicate names"):
        ChipSpec([Scale("a", size_px=3, out_px=3), Scale("a", size_px=5, out_px=3)])
    with pytest.raises(ConfigError, match="Unknown recipe"):
        ChipSpec([Scale("a", size_px=3, out_px=3)], recipe="dn")
    spec = ChipSpec([Scale("a", size_km=1.5, out_px=3)], bands=["red"], recipe="c2_sr")
    assert spec.to_dict()["scales"][0] == {
        "name": "a",
        "size_px": None,
        "size_km": 1.5,
        "out_px": 3,
    }


# ------------------------------------------------------------------ resampling
@pytest.mark.parametrize(("n_in", "n_out"), [(10, 10), (12, 4), (10, 7), (5, 12), (7, 16)])
def test_constant_image_stays_constant(n_in, n_out):
    vals = np.full((2, n_in, n_in), 3.25)
    out, m = resample(vals, np.ones((n_in, n_in), bool), n_out, n_out)
    assert m.all()
    np.testing.assert_allclose(out, 3.25, rtol=1e-6)
    # with masked pixels too: the constant survives and masked inputs carry no weight
    valid = np.ones((n_in, n_in), bool)
    valid[0, :] = False
    vals[:, 0, :] = 1e6
    out, m = resample(vals, valid, n_out, n_out)
    np.testing.assert_allclose(out[:, m], 3.25, rtol=1e-6)


def test_area_shrink_of_gradient_is_block_mean():
    g = np.arange(8 * 8, dtype=float).reshape(1, 8, 8)
    out, _ = resample(g, np.ones((8, 8), bool), 4, 4)
    expected = g[0].reshape(4, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    ref = F.interpolate(torch.tensor(g[None]), size=(4, 4), mode="area")[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_area_shrink_non_integer_matches_brute_force():
    rng = np.random.default_rng(0)
    img = rng.random((1, 10, 10))
    out, _ = resample(img, np.ones((10, 10), bool), 4, 4)
    fine = np.repeat(np.repeat(img[0], 2, 0), 2, 1)  # 20 x 20; 4 outputs of 5 fine pixels each
    expected = fine.reshape(4, 5, 4, 5).mean(axis=(1, 3))
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    M = resample_weights(10, 4)
    np.testing.assert_allclose(M.sum(1), 1.0)


def test_bilinear_enlarge_matches_torch():
    rng = np.random.default_rng(1)
    img = rng.random((3, 5, 7))
    out, m = resample(img, np.ones((5, 7), bool), 13, 16)
    ref = F.interpolate(
        torch.tensor(img[None]), size=(13, 16), mode="bilinear", align_corners=False
    )[0].numpy()
    assert m.all()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    # a linear ramp is reproduced exactly away from the clamped edges
    ramp = np.tile(np.arange(4, dtype=float), (4, 1))[None]
    up, _ = resample(ramp, np.ones((4, 4), bool), 8, 8)
    np.testing.assert_allclose(up[0, 0, 1:-1], (np.arange(1, 7) + 0.5) / 2 - 0.5, rtol=1e-6)
