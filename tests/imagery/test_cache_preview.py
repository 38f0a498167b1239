"""On-disk chip cache (hits equal misses, stale sources miss, atomic files) and the preview PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.errors import ConfigError
from eocausal.imagery import (
    CallableSource,
    ChipCache,
    ChipDataset,
    ChipSpec,
    RasterSource,
    Scale,
    write_chip_preview,
)

O = (500000.0, 100000.0)


def test_cache_round_trip_and_invalidation(kit, tmp_path, index_tif):
    units = kit.units_at(
        [kit.pixel_centre(O, 30.0, 10 + 20 * k, 15 + 25 * k) for k in range(5)]
        + [kit.pixel_centre(O, 30.0, 0, 0)]
    )
    spec = ChipSpec(
        [Scale("a", size_px=5, out_px=3), Scale("b", size_px=31, out_px=8)], min_valid_fraction=0.5
    )
    ds = ChipDataset(units, RasterSource(index_tif), spec, cache=ChipCache(tmp_path / "cache"))
    first = [ds[i] for i in range(len(ds))]
    assert any(item["excluded"] for item in first)
    files = sorted((tmp_path / "cache").rglob("*"))
    assert len([f for f in files if f.suffix == ".npz"]) == 6 and not [
        f for f in files if ".tmp" in f.name
    ]

    # a fresh dataset is served from the cache: reading the imagery would fail
    cached = ChipDataset(units, RasterSource(index_tif), spec, cache=ChipCache(tmp_path / "cache"))

    def no_reads(*args, **kwargs):
        raise AssertionError("read imagery despite a warm cache")

    cached.source.read = no_reads
    for i in range(len(ds)):
        a, b = first[i], cached[i]
        assert (a["unit_id"], a["index"], a["excluded"], a["reason"]) == (
            b["unit_id"],
            b["index"],
            b["excluded"],
            b["reason"],
        )
        for s in ("a", "b"):
            torch.testing.assert_close(a["chips"][s], b["chips"][s])
            assert torch.equal(a["masks"][s], b["masks"][s])
            assert float(a["valid_fraction"][s]) == float(b["valid_fraction"][s])

    # new file content (new size/mtime) -> a new cache folder and fresh chips
    kit.write_tif(index_tif, kit.index_image(200, 300, 2) + 5, descriptions=["red", "nir"])
    changed = ChipDataset(units, RasterSource(index_tif), spec, cache=ChipCache(tmp_path / "cache"))
    assert changed.cache.folder(changed) != ds.cache.folder(ds)
    i = next(k for k in range(len(changed)) if not first[k]["excluded"])
    torch.testing.assert_close(changed[i]["chips"]["a"], first[i]["chips"]["a"] + 5)
    # a different spec uses another folder too
    other = ChipDataset(
        units,
        RasterSource(index_tif),
        ChipSpec([Scale("a", size_px=5, out_px=4)]),
        cache=ChipCache(tmp_path / "cache"),
    )
    assert other.cache.folder(other) != changed.cache.folder(changed)


def test_cache_needs_namespace_for_callables(tmp_path):
    import pandas as pd

    from eocausal.units import StudyUnits

    units = StudyUnits.from_frame(pd.DataFrame({"unit_id": ["a"], "k": [1]}), image_key_col="k")
    src = CallableSource(lambda keys: np.ones((len(keys), 1, 4, 4)))
    ds = ChipDataset(
        units, src, ChipSpec([Scale("s", size_px=4, out_px=4)]), cache=ChipCache(tmp_path)
    )
    with pytest.raises(ConfigError, match="namespace"):
        ds[0]
    ds = ChipDataset(
        units,
        src,
        ChipSpec([Scale("s", size_px=4, out_px=4)]),
        cache=ChipCache(tmp_path, namespace="ones-v1"),
    )
    assert (ds[0]["chips"]["s"] == 1).all() and len(list(tmp_path.rglob("*.npz"))) == 1


def test_preview_png(kit, tmp_path, index_tif):
    import matplotlib.image as mpimg

    units = kit.units_at([kit.pixel_centre(O, 30.0, 20 + 10 * k, 20 + 10 * k) for k in range(8)])
    ds = ChipDataset(
        units,
        RasterSource(index_tif),
        ChipSpec([Scale("a", size_px=9, out_px=9), Scale("b", size_px=40, out_px=16)]),
    )
    out = write_chip_preview(ds, tmp_path / "prev" / "chips.png", n_units=3, bands=["red"], seed=1)
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert not list((tmp_path / "prev").glob(".*"))
    with pytest.raises(ConfigError, match="1 or 3"):
        write_chip_preview(ds, tmp_path / "x.png", bands=["red", "nir"])


def test_cache_never_serves_a_moved_unit_its_old_chips(kit, tmp_path, index_tif):
    spec = ChipSpec([Scale("a", size_px=5, out_px=5)])
    here = kit.units_at([kit.pixel_centre(O, 30.0, 40, 40)])
    moved = kit.units_at([kit.pixel_centre(O, 30.0, 90, 120)])  # same unit id, another place
    assert here.unit_id.tolist() == moved.unit_id.tolist()
    cache = tmp_path / "cache"
    old = ChipDataset(here, RasterSource(index_tif), spec, cache=ChipCache(cache))[0]
    fresh = ChipDataset(moved, RasterSource(index_tif), spec)[0]
    served = ChipDataset(moved, RasterSource(index_tif), spec, cache=ChipCache(cache))[0]
    assert not torch.equal(old["chips"]["a"], fresh["chips"]["a"])
    assert torch.equal(served["chips"]["a"], fresh["chips"]["a"])
