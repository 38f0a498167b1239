"""The map job: a valid COG, resumption by key, kill -9 at any point then rerun gives the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from eocausal.errors import ConfigError, EstimationError
from eocausal.maps import RegionGrid, run_map_job
from eocausal.maps.job import FINGERPRINT_TAG

NAN = float("nan")
BANDS = [
    ("value", "float32", "x in km plus row parity", NAN),
    ("flag", "uint8", "1 on odd columns", NAN),
]


def predict(tile, points):
    """Deterministic: band values follow from the cell position only."""
    return {
        "value": points["x"].to_numpy() / 1000 + points["row"].to_numpy() % 2,
        "flag": (points["col"].to_numpy() % 2).astype(float),
    }


def expected(grid):
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    x = grid.transform.c + (cols + 0.5) * grid.transform.a
    return (x / 1000 + rows % 2).astype(np.float32), (cols % 2).astype(np.float32)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def grid():
    return RegionGrid("EPSG:32636", from_origin(500_000, 250_000, 100, 100), 600, 500)


def test_cog_is_valid_tiled_with_overviews_and_metadata(tmp_path, grid):
    out = run_map_job(
        grid, predict, tmp_path / "map.tif", bands=BANDS, tile_cells=200, key="k1", progress=False
    )
    assert _files(tmp_path) == {"map.tif"}  # tiles, manifest and temporaries are gone
    with rasterio.open(out) as src:
        assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert (
            src.compression.name == "deflate" and src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        )
        assert src.block_shapes == [(256, 256), (256, 256)]
        assert src.overviews(1) == [2, 4] and src.overviews(2) == [2, 4]
        assert src.crs.to_epsg() == 32636 and src.transform == grid.transform
        assert (src.width, src.height, src.count) == (600, 500, 2) and src.dtypes == (
            "float32",
            "float32",
        )
        assert np.isnan(src.nodata)
        assert src.descriptions == ("x in km plus row parity", "1 on odd columns")
        assert [src.tags(i)["name"] for i in (1, 2)] == ["value", "flag"]
        assert FINGERPRINT_TAG in src.tags()
        value, flag = expected(grid)
        np.testing.assert_array_equal(src.read(1), value)
        np.testing.assert_array_equal(src.read(2), flag)
        # first overview: 2 x 2 block averages of the full resolution
        ov = src.read(2, out_shape=(250, 300))
        np.testing.assert_allclose(ov, flag.reshape(250, 2, 300, 2).mean(axis=(1, 3)))
    # COG layout by hand: GDAL's structural metadata sits in the header, IFDs before the data
    head = out.read_bytes()[:1024]
    assert head[:2] in (b"II", b"MM") and b"LAYOUT=IFDS_BEFORE_DATA" in head


def test_masked_cells_are_nodata_and_predict_sees_only_region_cells(tmp_path):
    region = shapely.Polygon(
        [(3.1, 7.7), (1993.3, 11.9), (13.7, 1989.1)]
    )  # no cell centre on an edge
    grid = RegionGrid("EPSG:32636", from_origin(0, 2000, 100, 100), 20, 20, polygons=(region,))
    seen = []

    def pred(tile, points):
        seen.append(len(points))
        return {"v": np.ones(len(points))}

    out = run_map_job(
        grid,
        pred,
        tmp_path / "m.tif",
        bands=[("v", "int16", "one", -1)],
        tile_cells=10,
        progress=False,
    )
    assert sum(seen) == grid.n_cells and len(seen) == 3  # the upper-right tile holds no cell
    with rasterio.open(out) as src:
        band = src.read(1)
        assert src.nodata == -1 and src.dtypes[0] == "int16" and src.overviews(1) == []
    rows, cols = np.mgrid[0:20, 0:20]
    inside = shapely.contains_xy(region, (cols + 0.5) * 100, 2000 - (rows + 0.5) * 100)
    np.testing.assert_array_equal(band, np.where(inside, 1, -1))


def test_fallback_without_the_cog_driver_is_still_tiled_with_overviews(tmp_path, grid, monkeypatch):
    monkeypatch.setattr("eocausal.maps.cog._has_cog_driver", lambda: False)
    out = run_map_job(
        grid, predict, tmp_path / "map.tif", bands=BANDS, tile_cells=256, progress=False
    )
    with rasterio.open(out) as src:
        assert src.block_shapes == [(256, 256), (256, 256)] and src.overviews(1) == [2, 4]
        np.testing.assert_array_equal(src.read(1), expected(grid)[0])


def test_tiles_are_reused_under_the_same_key_and_discarded_under_another(tmp_path, grid):
    calls = []

    def failing(tile, points):
        calls.append(tile.index)
        if len(calls) == 4:
            raise RuntimeError("stop")
        return predict(tile, points)

    kw = {"bands": BANDS, "tile_cells": 200, "progress": False, "work_dir": tmp_path / "work"}
    with pytest.raises(RuntimeError, match="stop"):
        run_map_job(grid, failing, tmp_path / "map.tif", key="a", **kw)
    assert len(list((tmp_path / "work" / "tiles").glob("[0-9]*.npz"))) == 3
    counted = []

    def counting(tile, points):
        counted.append(tile.index)
        return predict(tile, points)

    run_map_job(grid, counting, tmp_path / "map.tif", key="a", **kw)
    assert counted == [3, 4, 5, 6, 7, 8]  # 3 x 3 tiles; the first three were done
    assert not (tmp_path / "work").exists()
    counted.clear()
    run_map_job(grid, counting, tmp_path / "map.tif", key="a", **kw)
    assert counted == []  # the COG carries the fingerprint: nothing to do
    with pytest.raises(RuntimeError):
        calls.clear()
        run_map_job(grid, failing, tmp_path / "map2.tif", key="a", **kw)
    run_map_job(grid, counting, tmp_path / "map2.tif", key="b", **kw)
    assert counted == list(range(9))  # another key: every tile predicted again


def test_bands_and_predictions_are_checked(tmp_path, grid):
    with pytest.raises(ConfigError, match="one nodata value per file"):
        run_map_job(grid, predict, tmp_path / "m.tif", bands=[BANDS[0], ("flag", "uint8", "", 255)])
    with pytest.raises(ConfigError, match="NaN needs a float band"):
        run_map_job(grid, predict, tmp_path / "m.tif", bands=[("flag", "uint8", "", NAN)])
    with pytest.raises(EstimationError, match="missing \\['flag'\\]"):
        run_map_job(
            grid,
            lambda t, p: {"value": np.zeros(len(p))},
            tmp_path / "m.tif",
            bands=BANDS,
            progress=False,
        )
    with pytest.raises(EstimationError, match="non-integral"):
        run_map_job(
            grid,
            lambda t, p: {"value": np.zeros(len(p)), "flag": np.full(len(p), 0.5)},
            tmp_path / "m.tif",
            bands=BANDS,
            progress=False,
        )


_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from rasterio.transform import from_origin
    import eocausal.maps.cog as cog
    from eocausal.maps import RegionGrid, run_map_job

    out, mode = Path(sys.argv[1]), sys.argv[2]
    grid = RegionGrid("EPSG:32636", from_origin(500_000, 250_000, 100, 100), 300, 260)

    def predict(tile, points):
        if mode == "slow":
            time.sleep(0.5)
        return {"value": points["x"].to_numpy() / 1000 + points["row"].to_numpy() % 2,
                "flag": (points["col"].to_numpy() % 2).astype(float)}

    if mode == "hang_in_cog":  # stop after the COG temporary is complete, before the rename
        real = cog._copy_to_cog
        def copy_then_hang(stage, target, **kw):
            real(stage, target, **kw)
            (out.parent / "ready").write_text("")
            time.sleep(120)
        cog._copy_to_cog = copy_then_hang
    nan = float("nan")
    run_map_job(grid, predict, out, tile_cells=100, progress=False, key="same",
                bands=[("value", "float32", "x in km plus row parity", nan),
                       ("flag", "uint8", "1 on odd columns", nan)])
    """
)


def _run(tmp_path: Path, out: Path, mode: str, until) -> None:
    """Start the job in a subprocess, wait until ``until()`` holds, then kill -9 it."""
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out), mode])
    deadline = time.monotonic() + 60
    while not until():
        assert proc.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def small():
    return RegionGrid("EPSG:32636", from_origin(500_000, 250_000, 100, 100), 300, 260)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small):
    folder = tmp_path_factory.mktemp("reference")
    return run_map_job(
        small, predict, folder / "map.tif", bands=BANDS, tile_cells=100, key="same", progress=False
    ).read_bytes()


@pytest.mark.parametrize("mode", ["slow", "hang_in_cog"])
def test_kill_9_then_rerun_gives_identical_bytes_and_no_temporaries(
    tmp_path, small, reference, mode
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "map.tif"
    work = out_dir / ".map.tif.work"
    if mode == "slow":  # killed between tiles: some tiles saved, some not
        _run(tmp_path, out, mode, lambda: len(list((work / "tiles").glob("[0-9]*.npz"))) >= 2)
    else:  # killed during assembly: every tile saved, the COG and stage temporaries on disk
        _run(tmp_path, out, mode, lambda: (out_dir / "ready").exists())
        assert any(".tmp-" in f for f in _files(out_dir))
        (out_dir / "ready").unlink()
    assert not out.exists()
    n_saved = len(list((work / "tiles").glob("[0-9]*.npz")))
    assert 2 <= n_saved <= 9 and (mode == "slow") == (n_saved < 9)
    calls = []

    def counting(tile, points):
        calls.append(tile.index)
        return predict(tile, points)

    run_map_job(small, counting, out, bands=BANDS, tile_cells=100, key="same", progress=False)
    assert len(calls) == 9 - n_saved
    assert _files(out_dir) == {"map.tif"}
    assert out.read_bytes() == reference  # byte for byte
