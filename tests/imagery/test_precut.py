"""Pre-cut chips keyed by image key (the Uganda chips) and callable sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eocausal.errors import ConfigError, ExclusionWarning
from eocausal.imagery import CallableSource, ChipDataset, ChipSpec, PrecutChipSource, Scale
from eocausal.units import StudyUnits


@pytest.mark.shared_data
def test_uganda_chips_through_precut_source(uganda_dir):
    units = StudyUnits.read(
        uganda_dir / "units.csv",
        treatment_col="treated",
        outcome_col="outcome",
        image_key_col="image_key",
    )
    source = PrecutChipSource.from_npz(uganda_dir / "images.npz")
    with np.load(uganda_dir / "images.npz") as d:
        images, keys = d["images"], d["image_keys"]
    assert units.n_units == 2082 and images.shape == (327, 3, 35, 35)
    spec = ChipSpec(
        [
            Scale("full", size_px=35, out_px=35),
            Scale("centre", size_px=15, out_px=15),
            Scale("wide", size_px=64, out_px=64),
        ],
        min_valid_fraction=0.2,
    )
    ds = ChipDataset(units, source, spec)
    assert len(ds) == 2082 and ds.exclusions.empty
    lookup = {str(k): i for i, k in enumerate(keys)}
    for i in (0, 1, 500, 2081):
        item = ds[i]
        img = images[lookup[str(units.image_key[item["index"]])]].astype(np.float32)
        np.testing.assert_array_equal(item["chips"]["full"].numpy(), img)
        np.testing.assert_array_equal(item["chips"]["centre"].numpy(), img[:, 10:25, 10:25])
        wide, mask = item["chips"]["wide"].numpy(), item["masks"]["wide"].numpy()
        # 35 px chip centred at 17 inside a 64 px window centred at 32: rows/cols 15..49
        np.testing.assert_array_equal(wide[:, 15:50, 15:50], img)
        assert mask.sum() == 35 * 35 and mask[15:50, 15:50].all()
        assert float(item["valid_fraction"]["wide"]) == pytest.approx(35 * 35 / 64**2)


def test_precut_unknown_key_and_km_scales():
    images = np.arange(2 * 1 * 9 * 9, dtype=np.uint8).reshape(2, 1, 9, 9)
    frame = pd.DataFrame({"unit_id": ["a", "b", "c"], "image_key": [10, 11, 99]})
    units = StudyUnits.from_frame(frame, image_key_col="image_key")
    src = PrecutChipSource(images, [10, 11], ["red"], pixel_size_m=30.0)
    with pytest.warns(ExclusionWarning):
        ds = ChipDataset(units, src, ChipSpec([Scale("k", size_km=0.15, out_px=5)]))
    assert ds.exclusions.to_dict("records") == [
        {
            "unit_id": "c",
            "reason": "image key '99' not found in the pre-cut chips (2 images of (1, 9, 9))",
        }
    ]
    np.testing.assert_array_equal(ds[1]["chips"]["k"][0].numpy(), images[1, 0, 2:7, 2:7])
    with pytest.raises(ConfigError, match="pixel_size_m"):
        ChipDataset(
            units.subset(["a"]),
            PrecutChipSource(images, [10, 11]),
            ChipSpec([Scale("k", size_km=1, out_px=5)]),
        )


def test_callable_source_and_its_failures():
    def fetch(keys):
        if str(keys[0]) == "bad":
            raise KeyError(f"no chip for {keys[0]}")
        return np.stack([np.full((2, 6, 6), float(len(str(k)))) for k in keys])

    frame = pd.DataFrame({"unit_id": [1, 2], "image_key": ["abc", "bad"]})
    ds = ChipDataset(
        StudyUnits.from_frame(frame, image_key_col="image_key"),
        CallableSource(fetch),
        ChipSpec([Scale("s", size_px=4, out_px=2)]),
    )
    assert ds.band_names == ["B1", "B2"]
    ok, bad = ds[0], ds[1]
    assert (
        ok["unit_id"] == "1"
        and (ok["chips"]["s"] == 3.0).all()
        and ok["chips"]["s"].shape == (2, 2, 2)
    )
    assert (
        bad["excluded"]
        and "no chip for bad" in bad["reason"]
        and bad["chips"]["s"].shape == (2, 2, 2)
    )
