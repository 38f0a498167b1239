"""Degenerate imagery is rejected with messages that name the file, the sizes and the fix;
every exclusion keeps its reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eocausal.errors import ConfigError, ExclusionWarning, ImageryError, UnitsError
from eocausal.imagery import ChipDataset, ChipSpec, PrecutChipSource, RasterSource, Scale
from eocausal.imagery.exclusions import all_excluded_error, count_by_kind, reason_kind
from eocausal.units import StudyUnits


def _centre_units(kit, n: int, rows: int, cols: int, res: float = 30.0):
    """n units spread over the inner part of a raster at the default origin."""
    o = (500000.0, 100000.0)
    pts = [
        (o[0] + (cols * (0.3 + 0.4 * i / max(n - 1, 1))) * res, o[1] - (rows * 0.5) * res)
        for i in range(n)
    ]
    return kit.units_at(pts)


def test_one_by_one_raster_is_rejected(kit, tmp_path) -> None:
    path = kit.write_tif(
        tmp_path / "one.tif", np.full((1, 1, 1), 7, "uint16"), res=9000.0, tiled=False
    )
    units = _centre_units(kit, 3, 1, 1, res=9000.0)
    with pytest.raises(ImageryError, match=r"one\.tif is 1 x 1 pixel"):
        ChipDataset(units, RasterSource(path), ChipSpec([Scale("p", size_px=1, out_px=4)]))


def test_raster_smaller_than_largest_chip_is_rejected(kit, tmp_path) -> None:
    small = kit.write_tif(tmp_path / "small.tif", kit.index_image(20, 30), tiled=False)
    spec = ChipSpec([Scale("a", size_px=8, out_px=8), Scale("big", size_km=1.2, out_px=8)])
    with pytest.raises(
        ImageryError,
        match=r"small\.tif is 20 x 30 pixels, .* 40 x 40 pixel window of scale 'big' "
        r"\(config field `imagery\.scales\[1\]\.size_km` = 1\.2\).*at most 30 pixels",
    ):
        ChipDataset(_centre_units(kit, 2, 20, 30), RasterSource(small), spec)
    # a strip longer than the chip in one dimension is fine: its chips are partly inside
    strip = kit.write_tif(tmp_path / "strip.tif", kit.index_image(20, 300), tiled=False)
    ds = ChipDataset(
        _centre_units(kit, 2, 20, 300),
        RasterSource(strip),
        ChipSpec(spec.scales, min_valid_fraction=0),
    )
    assert float(ds[0]["valid_fraction"]["big"]) == pytest.approx(20 / 40)


def test_keyed_scale_below_one_pixel_is_rejected() -> None:
    src = PrecutChipSource(np.ones((2, 1, 8, 8), "float32"), ["a", "b"], pixel_size_m=30.0)
    units = StudyUnits.from_frame(pd.DataFrame({"unit_id": ["u0"], "k": ["a"]}), image_key_col="k")
    spec = ChipSpec([Scale("fine", size_km=0.015, out_px=4)])
    with pytest.raises(
        ConfigError, match=r"'fine'.*scales\[0\]\.size_km.*covers only 0\.5 pixels.*at least 0\.03"
    ):
        ChipDataset(units, src, spec)


def test_all_nodata_raster_keeps_every_reason(kit, tmp_path) -> None:
    path = kit.write_tif(tmp_path / "empty.tif", np.zeros((1, 60, 60), "uint16"), nodata=0)
    units = _centre_units(kit, 6, 60, 60)
    ds = ChipDataset(units, RasterSource(path), ChipSpec([Scale("s", size_px=9, out_px=9)]))
    assert ds.exclusions.empty  # nothing is known before reading
    table = ds.scan_exclusions()
    assert sorted(table["unit_id"]) == sorted(units.unit_id.tolist())
    assert (table["reason"] == "valid fraction 0.000 < min_valid_fraction 0.5 at scale 's'").all()
    err = all_excluded_error(table, units.n_units, table_path=tmp_path / "exclusions.csv")
    assert isinstance(err, ImageryError)
    msg = str(err)
    assert msg.startswith(
        "all 6 units were excluded, none has chips to embed: 6 too little valid imagery"
    )
    assert "exclusions.csv" in msg and "imagery.min_valid_fraction" in msg


def test_all_outside_counts_reasons(kit, index_tif) -> None:
    far = [(0.0, 0.0), (10.0, 10.0), (20.0, 20.0)]
    with (
        pytest.warns(ExclusionWarning),
        pytest.raises(
            UnitsError,
            match=r"all 3 units were excluded, no unit can be cut from .*index\.tif: 3 outside the imagery",
        ),
    ):
        ChipDataset(
            kit.units_at(far), RasterSource(index_tif), ChipSpec([Scale("s", size_px=3, out_px=3)])
        )


def test_count_by_kind_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    pool = [
        "valid fraction 0.120 < min_valid_fraction 0.5 at scale 'a'",
        "valid fraction 0.300 < min_valid_fraction 0.5 at scale 'b'; unreadable imagery: x",
        "outside all imagery: point (1, 2) in EPSG:4326 is not covered by f.tif",
        "image key 'k1' not found in the pre-cut chips",
        "unreadable imagery: Could not read window of f.tif",
        "missing covariate age",
        "cloud cover 12% above 10%",
        "cloud cover 40% above 10%",
    ]
    kinds = [
        "too little valid imagery (below imagery.min_valid_fraction)",
        "too little valid imagery (below imagery.min_valid_fraction)",
        "outside the imagery",
        "image key not found",
        "unreadable imagery",
        "missing covariates",
        "cloud cover N% above N%",
        "cloud cover N% above N%",
    ]
    draws = rng.integers(0, len(pool), 500)
    counts = count_by_kind(pool[i] for i in draws)
    expected: dict[str, int] = {}
    for i in draws:
        expected[kinds[i]] = expected.get(kinds[i], 0) + 1
    assert counts == expected and sum(counts.values()) == 500
    assert list(counts.values()) == sorted(counts.values(), reverse=True)
    assert all(reason_kind(r) == k for r, k in zip(pool, kinds, strict=True))
