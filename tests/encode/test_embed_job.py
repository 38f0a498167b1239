"""The embedding job: exact agreement with direct encoding, resume, DDP, exclusions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from encode_toydata import ToyChips

from eocausal.embeddings import Embeddings
from eocausal.encode import MosaiksEncoder, build_encoder, embed, merge_shards
from eocausal.encode import job as job_module
from eocausal.encode.job import EmbedModule, data_path_for
from eocausal.errors import EmbeddingsError, EocausalWarning, InputDataError

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:lightning.*")


def _run(ds, enc, out, **kw):
    kw = {"batch_size": 4, "progress": False, "accelerator": "cpu"} | kw
    return embed(ds, enc, out, **kw)


def _direct(ds, enc, i, scale, size=None):
    x = ds[i]["chips"][scale].unsqueeze(0)
    if size is not None:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    with torch.no_grad():
        return enc(x)[0].numpy()


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder and counts the images it encodes."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc
        self.name, self.in_chans, self.embed_dim = enc.name, enc.in_chans, enc.embed_dim
        self.input_size, self.weights_sha256 = enc.input_size, enc.weights_sha256
        self.count = 0

    def forward(self, x):
        self.count += x.shape[0]
        return self.enc(x)


class FailAfter(L.Callback):
    """Simulates a crash after ``k`` batches."""

    def __init__(self, k):
        self.k = k

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx + 1 >= self.k:
            raise RuntimeError("simulated node failure")


def test_embeddings_equal_direct_encoding_and_exclusions_are_recorded(tmp_path):
    ds = ToyChips(10, exclude={3, 7})
    enc = MosaiksEncoder(3, n_features=8, seed=1)
    res = _run(ds, enc, tmp_path)
    kept = [i for i in range(10) if i not in (3, 7)]
    assert res.embeddings.unit_ids.tolist() == [ds.unit_ids[i] for i in kept]
    for scale in ("small", "large"):
        want = np.stack([_direct(ds, enc, i, scale) for i in kept])
        np.testing.assert_allclose(res.embeddings.block(scale), want, rtol=1e-6, atol=1e-7)
    excl = pd.read_csv(tmp_path / "exclusions.csv")
    assert excl["unit_id"].tolist() == ["gone", "u003", "u007"]
    assert excl["reason"].iloc[1].startswith("valid fraction 0.000")
    assert res.exclusions.equals(excl)
    loaded = Embeddings.load(tmp_path / "embeddings.parquet")
    np.testing.assert_array_equal(loaded.block("large"), res.embeddings.block("large"))
    meta = loaded.metadata
    assert meta["encoder"] == "mosaiks" and meta["weights_sha256"] == enc.weights_sha256
    assert meta["temporal"] == "mean" and meta["seed"] == 0 and "torch" in meta["versions"]
    assert json.loads(json.dumps(res.to_dict()))["n_excluded"] == 3


def test_vit_chips_resized_to_model_input(tmp_path):
    ds = ToyChips(5, in_chans=2)
    enc = build_encoder("test_vit", in_chans=2, random_weights=True, img_size=32)
    res = _run(ds, enc, tmp_path, batch_size=3)
    for scale in ("small", "large"):
        want = np.stack([_direct(ds, enc, i, scale, size=32) for i in range(5)])
        np.testing.assert_allclose(res.embeddings.block(scale), want, rtol=1e-5, atol=1e-5)
    assert res.embeddings.block("small").shape == (5, 64)


def test_resume_after_crash_equals_uninterrupted_run(tmp_path):
    ds = ToyChips(12, exclude={5})
    enc = MosaiksEncoder(3, n_features=8, seed=2)
    full = _run(ds, enc, tmp_path / "full", batch_size=2)

    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated node failure"):
        _run(ds, enc, out, batch_size=2, shard_batches=1, callbacks=[FailAfter(3)])
    shards = sorted((out / "shards").glob("*.parquet"))
    assert len(shards) == 3 and not (out / "embeddings.parquet").exists()

    counting = CountingEncoder(enc)
    res = _run(ds, counting, out, batch_size=2, shard_batches=1)
    # items 0-5 (with the excluded item 5) were done; 6 remain, 2 scales each
    assert counting.count == (12 - 6) * 2
    for scale in res.embeddings.scales:
        np.testing.assert_array_equal(res.embeddings.block(scale), full.embeddings.block(scale))
    np.testing.assert_array_equal(res.embeddings.unit_ids, full.embeddings.unit_ids)
    assert res.exclusions.equals(full.exclusions)
    rows = sum(pq.read_table(f).num_rows for f in (out / "shards").glob("*.parquet"))
    assert rows == 11 * 2 + 1  # exactly one row per (unit, scale) plus one per excluded unit

    # A finished job resumes to a no-op.
    counting.count = 0
    again = _run(ds, counting, out, batch_size=2)
    assert counting.count == 0
    np.testing.assert_array_equal(again.embeddings.block("small"), full.embeddings.block("small"))


def test_changed_encoder_embeds_everything_again(tmp_path):
    ds = ToyChips(6)
    _run(ds, MosaiksEncoder(3, n_features=8, seed=0), tmp_path)
    other = CountingEncoder(MosaiksEncoder(3, n_features=8, seed=1))
    with pytest.warns(EocausalWarning, match=r"6 units .* changed shared inputs: \['encoder'\]"):
        res = _run(ds, other, tmp_path)
    assert other.count == 6 * 2
    want = np.stack([_direct(ds, other.enc, i, "small") for i in range(6)])
    np.testing.assert_allclose(res.embeddings.block("small"), want, rtol=1e-6, atol=1e-7)
    rows = sum(pq.read_table(f).num_rows for f in (tmp_path / "shards").glob("*.parquet"))
    assert rows == 6 * 2  # the stale rows were dropped from the shards
    # same encoder again: nothing to do; resume=False starts over
    other.count = 0
    _run(ds, other, tmp_path)
    assert other.count == 0
    _run(ds, other, tmp_path, resume=False)
    assert other.count == 6 * 2


def test_duplicate_shards_are_caught_at_merge(tmp_path):
    ds = ToyChips(4)
    _run(ds, MosaiksEncoder(3, n_features=4), tmp_path)
    shard = next((tmp_path / "shards").glob("*.parquet"))
    (tmp_path / "shards" / ("rank0001-copy-" + shard.name.split("-")[-1])).write_bytes(
        shard.read_bytes()
    )
    with pytest.raises(EmbeddingsError, match="more than one embedding"):
        merge_shards(tmp_path)


def test_temporal_mean_skips_masked_dates_and_concat_keeps_all(tmp_path):
    ds = ToyChips(4, n_dates=3, scales={"s": 12})
    enc = MosaiksEncoder(3, n_features=6, seed=0)
    mean = _run(ds, enc, tmp_path / "mean", temporal="mean").embeddings.block("s")
    cat = _run(ds, enc, tmp_path / "cat", temporal="concat").embeddings.block("s")
    assert cat.shape == (4, 18)
    for i in range(4):
        with torch.no_grad():
            per_date = enc(ds.chip(i, "s")).numpy()  # (T, D)
        np.testing.assert_allclose(cat[i], per_date.ravel(), rtol=1e-6, atol=1e-7)
        valid = [0, 2] if i % 2 else [0, 1, 2]
        np.testing.assert_allclose(mean[i], per_date[valid].mean(0), rtol=1e-6, atol=1e-7)
    with pytest.raises(InputDataError, match="temporal"):
        _run(ds, enc, tmp_path / "x", temporal="transformer")


_DDP_SCRIPT = """
import sys, numpy as np
sys.path[:0] = [{repo!r}, {here!r}]
from encode_toydata import ToyChips
from eocausal.encode import MosaiksEncoder, embed
res = embed(ToyChips(11, exclude={{4}}), MosaiksEncoder(3, n_features=8, seed=5), {out!r},
            batch_size=2, accelerator="cpu", devices={devices}, strategy={strategy!r},
            progress=False, shard_batches=1)
"""


def _run_script(tmp_path, out, devices, strategy):
    script = tmp_path / f"ddp_{devices}.py"
    script.write_text(
        textwrap.dedent(
            _DDP_SCRIPT.format(
                repo=str(REPO), here=str(HERE), out=str(out), devices=devices, strategy=strategy
            )
        )
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_ddp_on_cpu_equals_one_process(tmp_path):
    _run_script(tmp_path, tmp_path / "ddp", 2, "ddp")
    ranks = {p.name[:8] for p in (tmp_path / "ddp" / "shards").glob("*.parquet")}
    assert ranks == {"rank0000", "rank0001"}
    ddp = Embeddings.load(tmp_path / "ddp" / "embeddings.parquet")
    ds = ToyChips(11, exclude={4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = _run(ds, MosaiksEncoder(3, n_features=8, seed=5), tmp_path / "one", batch_size=2)
    np.testing.assert_array_equal(ddp.unit_ids, one.embeddings.unit_ids)
    for scale in one.embeddings.scales:
        np.testing.assert_allclose(
            ddp.block(scale), one.embeddings.block(scale), rtol=1e-5, atol=1e-7
        )
    excl = pd.read_csv(tmp_path / "ddp" / "exclusions.csv")
    assert excl["unit_id"].tolist() == ["gone", "u004"]


def test_end_to_end_from_a_geotiff(tmp_path):
    """Units -> ChipDataset over a generated GeoTIFF -> embed; a unit off the image is excluded."""
    import rasterio
    from affine import Affine

    from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale
    from eocausal.imagery.sources import RasterSource
    from eocausal.units import StudyUnits

    rng = np.random.default_rng(0)
    data = rng.integers(7000, 20000, size=(3, 128, 128)).astype("uint16")
    x0, y0, res = 500000.0, 100000.0, 30.0
    path = tmp_path / "scene.tif"
    profile = {
        "driver": "GTiff",
        "height": 128,
        "width": 128,
        "count": 3,
        "dtype": "uint16",
        "crs": "EPSG:32636",
        "transform": Affine(res, 0, x0, 0, -res, y0),
        "tiled": True,
        "blockxsize": 64,
        "blockysize": 64,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    cols = [20, 100, 64, 40, 90]
    rows = [30, 90, 64, 100, 20]
    frame = pd.DataFrame(
        {
            "unit_id": [f"p{i}" for i in range(5)] + ["off"],
            "x": [x0 + (c + 0.5) * res for c in cols] + [x0 - 50 * res],
            "y": [y0 - (r + 0.5) * res for r in rows] + [y0 + 50 * res],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        units = StudyUnits.from_frame(frame, lon_col="x", lat_col="y", crs="EPSG:32636")
        spec = ChipSpec(
            [Scale("s16", size_px=16, out_px=16), Scale("s32", size_px=32, out_px=16)],
            recipe="ssl4eo_l_sr_uint8",
        )
        ds = ChipDataset(units, RasterSource(path), spec)
    enc = MosaiksEncoder(3, n_features=16, seed=0, bias=0.0)
    res_ = _run(ds, enc, tmp_path / "out", batch_size=2, num_workers=1)
    assert sorted(res_.embeddings.unit_ids) == [f"p{i}" for i in range(5)]
    assert res_.exclusions["unit_id"].tolist() == ["off"]
    idx = {u: i for i, u in enumerate(ds.unit_ids)}
    for u, row in zip(res_.embeddings.unit_ids, res_.embeddings.block("s32"), strict=True):
        np.testing.assert_allclose(row, _direct(ds, enc, idx[u], "s32"), rtol=1e-6, atol=1e-7)
    # exact pixels: the 16 px chip of p0 is the window centred on its pixel, scaled by the recipe
    item = ds[idx["p0"]]
    window = data[:, 30 - 8 : 30 + 8, 20 - 8 : 20 + 8].astype(np.float64) * 0.0000275 - 0.2
    want = np.floor(np.clip(window / 0.3, 0, 1) * 255 + 1e-6) / 255
    np.testing.assert_allclose(item["chips"]["s16"].numpy(), want, atol=1e-6)
    assert res_.embeddings.metadata["chip_spec"]["recipe"] == "ssl4eo_l_sr_uint8"


@pytest.mark.shared_data
def test_uganda_precut_chips_embed_exactly(uganda_dir, tmp_path):
    """Real pre-cut chips: each unit's embedding is the encoding of its image_key's chip."""
    from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale
    from eocausal.imagery.sources import PrecutChipSource
    from eocausal.units import StudyUnits

    frame = pd.read_csv(uganda_dir / "units.csv").head(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        units = StudyUnits.from_frame(
            frame, treatment_col="treated", outcome_col="outcome", image_key_col="image_key"
        )
        source = PrecutChipSource.from_npz(uganda_dir / "images.npz")
        ds = ChipDataset(units, source, ChipSpec([Scale("full", size_px=35, out_px=35)]))
    enc = MosaiksEncoder(3, n_features=32, seed=0, bias=10.0)
    res = _run(ds, enc, tmp_path, batch_size=16)
    assert len(res.embeddings.unit_ids) + len(res.exclusions) == 40
    with np.load(uganda_dir / "images.npz") as npz:
        chip_of = dict(zip(npz["image_keys"].tolist(), npz["images"], strict=True))
    keys = frame.set_index(frame["unit_id"].astype(str))["image_key"]
    block = res.embeddings.block("full")
    for u, row in zip(res.embeddings.unit_ids, block, strict=True):
        x = torch.tensor(chip_of[int(keys[u])], dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            np.testing.assert_allclose(row, enc(x)[0].numpy(), rtol=1e-5, atol=1e-4)
    assert np.abs(block).sum() > 0


_KILL_SCRIPT = """
import sys
sys.path[:0] = [{repo!r}, {here!r}]
from encode_toydata import SlowEncoder, ToyChips
from eocausal.encode import MosaiksEncoder, embed
embed(ToyChips(30, exclude={{7}}), SlowEncoder(MosaiksEncoder(3, n_features=8, seed=9)), {out!r},
      batch_size=2, accelerator="cpu", progress=False, shard_batches=1)
"""


def test_sigkilled_job_resumes_without_duplicates(tmp_path):
    import time

    out = tmp_path / "killed"
    script = tmp_path / "kill_me.py"
    script.write_text(_KILL_SCRIPT.format(repo=str(REPO), here=str(HERE), out=str(out)))
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while len(list((out / "shards").glob("rank*.parquet"))) < 3:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "no shards appeared"
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.wait()
    n_shards = len(list((out / "shards").glob("rank*.parquet")))
    assert 3 <= n_shards < 15 and not (out / "embeddings.parquet").exists()
    # what a kill during a write leaves behind (the killed process named them; now dead)
    import socket

    orphans = [
        out / "shards" / f".rank0000-dead-000099.parquet.tmp-{socket.gethostname()}-{proc.pid}",
        out / f".manifest.json.tmp-{proc.pid}",  # the naming of older versions
    ]
    for orphan in orphans:
        orphan.write_bytes(b"half written")

    ds = ToyChips(30, exclude={7})
    enc = MosaiksEncoder(3, n_features=8, seed=9)
    counting = CountingEncoder(enc)
    res = _run(ds, counting, out, batch_size=2, shard_batches=1)
    assert counting.count < 29 * 2  # the finished shards were skipped
    full = _run(ds, enc, tmp_path / "full", batch_size=2)
    np.testing.assert_array_equal(res.embeddings.unit_ids, full.embeddings.unit_ids)
    for scale in full.embeddings.scales:
        np.testing.assert_array_equal(res.embeddings.block(scale), full.embeddings.block(scale))
    assert res.exclusions["unit_id"].tolist() == ["gone", "u007"]
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]


# -- stale inputs: a moved unit, a changed raster, a changed pre-cut image ---------------------
def _write_scene(path, seed, *, mtime_ns=None):
    """A 100 x 100 float32 GeoTIFF in EPSG:4326 over lon 30-31, lat 0-1 (0.01 degree pixels)."""
    import rasterio
    from affine import Affine

    data = np.random.default_rng(seed).random((3, 100, 100), dtype=np.float32)
    profile = {"driver": "GTiff", "height": 100, "width": 100, "count": 3, "dtype": "float32",
               "crs": "EPSG:4326", "transform": Affine(0.01, 0, 30.0, 0, -0.01, 1.0)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


_LON = [30.205, 30.305, 30.405, 30.505, 30.605, 30.705]
_LAT = [0.305, 0.405, 0.505, 0.605, 0.705, 0.505]


def _geo_chips(path, lon=_LON, lat=_LAT):
    from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale
    from eocausal.imagery.sources import RasterSource
    from eocausal.units import StudyUnits

    frame = pd.DataFrame({"unit_id": [f"p{i}" for i in range(len(lon))], "lon": lon, "lat": lat})
    spec = ChipSpec([Scale("s8", size_px=8, out_px=8), Scale("s16", size_px=16, out_px=8)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        units = StudyUnits.from_frame(frame, lon_col="lon", lat_col="lat", crs="EPSG:4326")
        return ChipDataset(units, RasterSource(path), spec)


def _assert_same(a, b):
    """Same units and vectors (up to the batch-size dependence of float32 convolutions)."""
    np.testing.assert_array_equal(a.unit_ids, b.unit_ids)
    for scale in b.scales:
        np.testing.assert_allclose(a.block(scale), b.block(scale), rtol=1e-5, atol=1e-8)


def _shard_rows(out):
    return sum(pq.read_table(f).num_rows for f in (out / "shards").glob("*.parquet"))


def test_artifact_is_geoparquet_with_the_units_points_and_crs(tmp_path):
    import geopandas as gpd
    from pyproj import CRS

    _write_scene(tmp_path / "scene.tif", 0)
    ds = _geo_chips(tmp_path / "scene.tif")
    res = _run(ds, MosaiksEncoder(3, n_features=8, seed=0), tmp_path / "out")
    gdf = gpd.read_parquet(tmp_path / "out" / "embeddings.parquet")
    assert CRS.from_user_input(gdf.crs).equals(CRS.from_epsg(4326))
    assert len(gdf) == 6 * 2 and sorted(set(gdf["scale"])) == ["s16", "s8"]
    want = dict(zip([f"p{i}" for i in range(6)], zip(_LON, _LAT, strict=True), strict=True))
    for uid, point in zip(gdf["unit_id"], gdf.geometry, strict=True):
        assert (point.x, point.y) == want[uid]  # exact: WKB keeps float64
    geo = json.loads(pq.read_schema(tmp_path / "out" / "embeddings.parquet").metadata[b"geo"])
    col = geo["columns"][geo["primary_column"]]
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Point"]
    assert CRS.from_json_dict(col["crs"]).equals(CRS.from_epsg(4326))
    assert col["bbox"] == [min(_LON), min(_LAT), max(_LON), max(_LAT)]
    back = Embeddings.load(tmp_path / "out" / "embeddings.parquet")
    np.testing.assert_array_equal(back.coords, res.embeddings.coords)
    assert back.crs.equals(CRS.from_epsg(4326))
    np.testing.assert_array_equal(back.block("s16"), res.embeddings.block("s16"))


def test_moved_unit_is_embedded_again_alone_and_equals_a_fresh_run(tmp_path):
    _write_scene(tmp_path / "scene.tif", 0)
    enc = MosaiksEncoder(3, n_features=8, seed=0)
    out = tmp_path / "out"
    first = _run(_geo_chips(tmp_path / "scene.tif"), enc, out)
    moved = list(_LON)
    moved[2] += 0.2  # 20 pixels east: other imagery under the same unit id
    ds = _geo_chips(tmp_path / "scene.tif", lon=moved)
    counting = CountingEncoder(enc)
    with pytest.warns(EocausalWarning, match=r"1 units .*\['p2'\].*no shared input changed"):
        res = _run(ds, counting, out)
    assert counting.count == 1 * 2  # one unit, two scales
    fresh = _run(ds, enc, tmp_path / "fresh").embeddings
    _assert_same(res.embeddings, fresh)
    p2 = list(res.embeddings.unit_ids).index("p2")
    others = np.arange(6) != p2
    for scale in ("s8", "s16"):  # the other units' vectors are the stored ones, bit for bit
        np.testing.assert_array_equal(
            res.embeddings.block(scale)[others], first.embeddings.block(scale)[others]
        )
    assert np.abs(res.embeddings.block("s8")[p2] - first.embeddings.block("s8")[p2]).max() > 1e-3
    assert res.embeddings.coords[p2].tolist() == [moved[2], _LAT[2]]
    assert _shard_rows(out) == 6 * 2  # the stale rows of p2 were dropped
    _assert_same(Embeddings.load(out / "embeddings.parquet"), fresh)


def test_changed_raster_is_embedded_again_and_a_touch_alone_is_not(tmp_path):
    path = tmp_path / "scene.tif"
    _write_scene(path, 0, mtime_ns=1_600_000_000 * 10**9)
    enc = MosaiksEncoder(3, n_features=8, seed=0)
    out = tmp_path / "out"
    _run(_geo_chips(path), enc, out)
    _write_scene(path, 1, mtime_ns=1_700_000_000 * 10**9)  # new pixels, same size
    counting = CountingEncoder(enc)
    with pytest.warns(EocausalWarning, match=r"6 units .*changed shared inputs: \['imagery'\]"):
        res = _run(_geo_chips(path), counting, out)
    assert counting.count == 6 * 2
    _assert_same(res.embeddings, _run(_geo_chips(path), enc, tmp_path / "fresh").embeddings)
    # touched only: the file is hashed again, its bytes are the same, every vector is reused
    os.utime(path, ns=(1_800_000_000 * 10**9,) * 2)
    counting.count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", EocausalWarning)
        again = _run(_geo_chips(path), counting, out)
    assert counting.count == 0
    _assert_same(again.embeddings, res.embeddings)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert [f["mtime_ns"] for f in files] == [1_800_000_000 * 10**9]


def test_changed_precut_image_re_embeds_only_its_units(tmp_path):
    from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale
    from eocausal.imagery.sources import PrecutChipSource
    from eocausal.units import StudyUnits

    images = np.random.default_rng(0).random((4, 3, 12, 12)).astype(np.float32)
    frame = pd.DataFrame({"unit_id": [f"u{i}" for i in range(8)], "image_key": [0, 1, 2, 3] * 2})
    spec = ChipSpec([Scale("full", size_px=12, out_px=12)])

    def chips(imgs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            units = StudyUnits.from_frame(frame, image_key_col="image_key")
            return ChipDataset(units, PrecutChipSource(imgs, [0, 1, 2, 3]), spec)

    enc = MosaiksEncoder(3, n_features=8, seed=0)
    out = tmp_path / "out"
    _run(chips(images), enc, out)
    changed = images.copy()
    changed[1, 0, 5, 5] += 1.0  # one pixel of the image of key 1 (units u1 and u5)
    counting = CountingEncoder(enc)
    with pytest.warns(EocausalWarning, match=r"2 units .*\['u1', 'u5'\]"):
        res = _run(chips(changed), counting, out)
    assert counting.count == 2
    _assert_same(res.embeddings, _run(chips(changed), enc, tmp_path / "fresh").embeddings)
    # no unit has a point: plain Parquet that says so
    meta = pq.read_schema(out / "embeddings.parquet").metadata
    assert b"geo" not in meta and json.loads(meta[b"eocausal"])["geometry"] == "none"
    assert "geometry" not in pq.read_schema(out / "embeddings.parquet").names
    assert Embeddings.load(out / "embeddings.parquet").coords is None


# ---------------------------------------------------------------- the data path on CUDA


def test_data_path_is_chosen_for_cuda_and_not_for_other_devices():
    on = data_path_for("cuda", 4)
    assert (on.pin_memory, on.persistent_workers, on.channels_last, on.non_blocking) == (
        True,
        True,
        True,
        True,
    )
    assert data_path_for("cuda", 0).persistent_workers is False  # no workers to keep
    for device in ("cpu", "mps"):
        off = data_path_for(device, 4)
        assert not (off.pin_memory or off.persistent_workers or off.channels_last)
        assert not off.non_blocking


class _Recorder:
    """Stands in for a tensor and records how it is copied."""

    def __init__(self):
        self.calls = []

    def to(self, device, **kwargs):
        self.calls.append((str(device), kwargs))
        return self


def test_transfer_copies_chips_and_masks_non_blocking_on_cuda_only():
    enc = MosaiksEncoder(3, n_features=4)
    for device_type, want in (("cuda", True), ("cpu", False)):
        module = EmbedModule(enc, ["s"], data_path=data_path_for(device_type, 0))
        chips, masks, flags = _Recorder(), _Recorder(), _Recorder()
        batch = {"chips": {"s": chips}, "masks": {"s": masks}, "excluded": flags, "unit_id": ["a"]}
        out = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
        assert chips.calls == masks.calls == [("cpu", {"non_blocking": want})]
        assert flags.calls == [] and out["excluded"] is flags  # host-side metadata stays put


class _SeesDataPath(L.Callback):
    """Records the loader's settings and the layout of the encoder's weights and input."""

    def __init__(self):
        self.seen = {}

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        loader = trainer.predict_dataloaders
        conv = pl_module.encoder.model.patch_embed.proj.weight
        self.seen = {
            "pin_memory": loader.pin_memory,
            "persistent_workers": loader.persistent_workers,
            "weights_channels_last": conv.is_contiguous(memory_format=torch.channels_last),
            "chips_device": next(iter(batch["chips"].values())).device.type,
            "excluded_device": batch["excluded"].device.type,
        }


def test_cuda_data_path_gives_the_cpu_embeddings(tmp_path, monkeypatch):
    """Channels-last weights and chips, persistent workers and the host-side metadata, run on
    CPU with the settings chosen for CUDA, give the embeddings of the plain CPU path."""
    ds = ToyChips(7, exclude={2})
    enc = build_encoder("test_vit", in_chans=3, random_weights=True, img_size=32)
    plain = _SeesDataPath()
    cpu = _run(ds, enc, tmp_path / "cpu", batch_size=3, num_workers=1, callbacks=[plain])
    real = job_module.data_path_for
    monkeypatch.setattr(job_module, "data_path_for", lambda device, n: real("cuda", n))
    gpu_like = _SeesDataPath()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        res = _run(ds, enc, tmp_path / "cuda", batch_size=3, num_workers=1, callbacks=[gpu_like])
    assert plain.seen == {
        "pin_memory": False,
        "persistent_workers": False,
        "weights_channels_last": False,
        "chips_device": "cpu",
        "excluded_device": "cpu",
    }
    assert gpu_like.seen["persistent_workers"] and gpu_like.seen["weights_channels_last"]
    assert gpu_like.seen["pin_memory"]
    np.testing.assert_array_equal(res.embeddings.unit_ids, cpu.embeddings.unit_ids)
    for scale in ("small", "large"):
        np.testing.assert_allclose(
            res.embeddings.block(scale), cpu.embeddings.block(scale), rtol=1e-5, atol=1e-5
        )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@needs_cuda
def test_bf16_job_on_cuda_matches_float32_on_cpu(tmp_path):
    ds = ToyChips(16, exclude={5})
    enc = build_encoder("vit_small_patch16_224", in_chans=3, random_weights=True, img_size=32)
    cpu = _run(ds, enc, tmp_path / "cpu", precision="32-true")
    gpu = _run(ds, enc, tmp_path / "gpu", accelerator="gpu", num_workers=2)
    assert gpu.embeddings.metadata["precision"] == "bf16-mixed"
    np.testing.assert_array_equal(gpu.embeddings.unit_ids, cpu.embeddings.unit_ids)
    for scale in ("small", "large"):
        a, b = gpu.embeddings.block(scale), cpu.embeddings.block(scale)
        rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
        # bf16 autocast on CPU gives 0.7 % on this model; 3 % leaves room for other kernels
        assert rel.max() < 0.03, rel


@pytest.mark.cuda
@needs_cuda
def test_cuda_job_pins_memory_and_feeds_channels_last(tmp_path):
    seen = _SeesDataPath()
    enc = build_encoder("test_vit", in_chans=3, random_weights=True, img_size=32)
    _run(ToyChips(6), enc, tmp_path, accelerator="gpu", num_workers=1, callbacks=[seen])
    assert seen.seen == {
        "pin_memory": True,
        "persistent_workers": True,
        "weights_channels_last": True,
        "chips_device": "cuda",
        "excluded_device": "cpu",
    }
