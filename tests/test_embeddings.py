"""The Embeddings artifact: round trip, one row per (unit, scale), clear errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyproj import CRS

from eocausal.embeddings import Embeddings
from eocausal.errors import EmbeddingsError


def _emb(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return Embeddings(
        np.arange(n), {"1km": rng.normal(size=(n, 4)), "6km": rng.normal(size=(n, 3))}, {"encoder": "x"}
    )


def test_round_trip(tmp_path):
    emb = _emb()
    path = emb.save(tmp_path / "e.parquet")
    back = Embeddings.load(path)
    assert back.unit_ids.tolist() == ["0", "1", "2", "3", "4"]
    assert back.scales == ["1km", "6km"]
    np.testing.assert_array_equal(back.block("1km"), emb.block("1km"))
    np.testing.assert_array_equal(back.block("6km"), emb.block("6km"))
    assert back.metadata == {"encoder": "x"}
    assert back.coords is None and back.crs is None
    assert pq.read_table(path).num_rows == 10
    header = json.loads(pq.read_schema(path).metadata[b"eocausal"])
    assert header == {"format": "eocausal.embeddings", "format_version": 2, "geometry": "none",
                      "metadata": {"encoder": "x"}}
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temporary file


def test_subset_reorders_and_names_missing():
    emb = _emb()
    sub = emb.subset(["3", "1"])
    np.testing.assert_array_equal(sub.block("1km"), emb.block("1km")[[3, 1]])
    with pytest.raises(EmbeddingsError, match=r"1 units have no embedding \(first: \['9'\]\)"):
        emb.subset(["1", "9"])


def test_from_records_checks_exactly_one_per_unit_and_scale():
    vec = [np.ones(2)] * 3
    with pytest.raises(EmbeddingsError, match="more than one embedding"):
        Embeddings.from_records(["a", "a", "b"], ["s", "s", "s"], vec)
    with pytest.raises(EmbeddingsError, match=r"Scale 't' lacks embeddings for 1 units \(first: \['b'\]\)"):
        Embeddings.from_records(["a", "b", "a"], ["s", "s", "t"], vec)
    ok = Embeddings.from_records(["b", "a", "a", "b"], ["s", "s", "t", "t"], [np.full(2, i) for i in range(4)])
    assert ok.unit_ids.tolist() == ["b", "a"]
    np.testing.assert_array_equal(ok.block("t"), [[3, 3], [2, 2]])


def test_invalid_blocks():
    with pytest.raises(EmbeddingsError, match="duplicated"):
        Embeddings(["a", "a"], {"s": np.zeros((2, 2))})
    with pytest.raises(EmbeddingsError, match="expected \\(2, D\\)"):
        Embeddings(["a", "b"], {"s": np.zeros((3, 2))})
    with pytest.raises(EmbeddingsError, match=r"non-finite values for units \['b'\]"):
        Embeddings(["a", "b"], {"s": np.array([[0.0, 1.0], [np.nan, 1.0]])})
    with pytest.raises(EmbeddingsError, match="available"):
        _emb().block("10km")
    with pytest.raises(EmbeddingsError, match="does not exist"):
        Embeddings.load("/nonexistent/e.parquet")


def _located(n=5):
    xy = np.column_stack([500_000.0 + 30.0 * np.arange(n), 100_000.0 - 30.0 * np.arange(n)])
    xy[3] = np.nan  # a unit without a point
    return Embeddings(_emb(n).unit_ids, _emb(n).vectors, {"encoder": "x"}, xy, "EPSG:32636")


def test_geoparquet_round_trip_with_points_crs_and_a_null_geometry(tmp_path):
    import geopandas as gpd

    emb = _located()
    path = emb.save(tmp_path / "e.parquet")
    gdf = gpd.read_parquet(path)
    assert CRS.from_user_input(gdf.crs).equals(CRS.from_epsg(32636))
    assert gdf["unit_id"].tolist() == ["0", "1", "2", "3", "4"] * 2
    assert gdf.geometry.isna().tolist() == [False, False, False, True, False] * 2
    for uid, point in zip(gdf["unit_id"], gdf.geometry, strict=True):
        if uid != "3":
            assert (point.x, point.y) == tuple(emb.coords[int(uid)])
    np.testing.assert_array_equal(np.stack(gdf["embedding"][:5]), emb.block("1km"))
    geo = json.loads(pq.read_schema(path).metadata[b"geo"])
    col = geo["columns"]["geometry"]
    assert (geo["version"], geo["primary_column"], col["encoding"], col["geometry_types"]) == (
        "1.1.0", "geometry", "WKB", ["Point"])
    assert CRS.from_json_dict(col["crs"]).equals(CRS.from_epsg(32636))
    assert col["bbox"] == [500_000.0, 99_880.0, 500_120.0, 100_000.0]
    back = Embeddings.load(path)
    np.testing.assert_array_equal(back.coords, emb.coords)  # NaN row kept
    assert back.crs.equals(emb.crs) and back.metadata == {"encoder": "x"}
    sub = back.subset(["4", "0"])
    np.testing.assert_array_equal(sub.coords, emb.coords[[4, 0]])
    assert sub.geometry.index.tolist() == ["4", "0"] and sub.geometry.crs == emb.crs


def test_file_written_before_geoparquet_still_reads(tmp_path):
    """Version 1: plain Parquet whose ``eocausal`` key holds the provenance itself."""
    n, d = 3, 2
    vec = np.arange(2 * n * d, dtype=np.float32).reshape(2 * n, d)
    table = pa.table(
        {
            "unit_id": ["a", "b", "c"] * 2,
            "scale": ["s"] * n + ["t"] * n,
            "embedding": pa.array(list(vec), type=pa.list_(pa.float32())),
        }
    ).replace_schema_metadata({b"eocausal": json.dumps({"encoder": "mosaiks", "seed": 0}).encode()})
    pq.write_table(table, tmp_path / "old.parquet")
    old = Embeddings.load(tmp_path / "old.parquet")
    assert old.unit_ids.tolist() == ["a", "b", "c"] and old.metadata == {"encoder": "mosaiks", "seed": 0}
    np.testing.assert_array_equal(old.block("t"), vec[n:])
    assert old.coords is None


def test_unreadable_or_foreign_files_name_the_file_and_the_fix(tmp_path):
    newer = _emb().to_table()
    header = json.loads(newer.schema.metadata[b"eocausal"]) | {"format_version": 99}
    pq.write_table(newer.replace_schema_metadata({b"eocausal": json.dumps(header).encode()}),
                   tmp_path / "newer.parquet")
    with pytest.raises(EmbeddingsError, match=r"newer\.parquet.*format_version 99.*upgrade eocausal or regenerate"):
        Embeddings.load(tmp_path / "newer.parquet")
    pq.write_table(pa.table({"unit_id": ["a"]}), tmp_path / "other.parquet")
    with pytest.raises(EmbeddingsError, match=r"other\.parquet.*lacks columns \['embedding', 'scale'\].*regenerate"):
        Embeddings.load(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(EmbeddingsError, match=r"junk\.parquet.*not readable Parquet.*regenerate"):
        Embeddings.load(tmp_path / "junk.parquet")


def test_points_are_checked():
    with pytest.raises(EmbeddingsError, match="need a `crs`"):
        Embeddings(["a"], {"s": np.zeros((1, 2))}, coords=[[1.0, 2.0]])
    with pytest.raises(EmbeddingsError, match=r"shape \(1, 2\)"):
        Embeddings(["a"], {"s": np.zeros((1, 2))}, coords=[1.0, 2.0], crs="EPSG:4326")
    with pytest.raises(EmbeddingsError, match="two finite numbers or two NaN"):
        Embeddings(["a"], {"s": np.zeros((1, 2))}, coords=[[1.0, np.nan]], crs="EPSG:4326")


def _shuffled_table(emb: Embeddings, seed: int = 1) -> pa.Table:
    """The long table of ``emb`` with its rows in a random order (as concatenated shards give)."""
    table = emb.to_table()
    order = np.random.default_rng(seed).permutation(table.num_rows)
    return table.take(pa.array(order)).replace_schema_metadata(table.schema.metadata)


def _reference_from_table(table: pa.Table) -> Embeddings:
    """The loader before streaming: one Python object per row, assembled by ``from_records``."""
    import shapely

    rows = table.to_pylist()
    header = json.loads(table.schema.metadata[b"eocausal"])
    metadata = header["metadata"] if header.get("format") == "eocausal.embeddings" else header
    out = Embeddings.from_records(
        [r["unit_id"] for r in rows],
        [r["scale"] for r in rows],
        [np.asarray(r["embedding"]).astype(np.float32) for r in rows],
        metadata,
    )
    if b"geo" not in table.schema.metadata:
        return out
    spec = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"]
    index = {u: i for i, u in enumerate(out.unit_ids)}
    coords = np.full((out.n_units, 2), np.nan)
    for r in rows:
        if r["geometry"] is not None:
            point = shapely.from_wkb(r["geometry"])
            coords[index[str(r["unit_id"])]] = (point.x, point.y)
    return Embeddings(out.unit_ids, out.vectors, out.metadata, coords, CRS.from_json_dict(spec["crs"]))


def _assert_identical(got: Embeddings, want: Embeddings) -> None:
    assert got.unit_ids.dtype == want.unit_ids.dtype
    np.testing.assert_array_equal(got.unit_ids, want.unit_ids)
    assert got.scales == want.scales
    for scale in want.scales:
        assert got.block(scale).dtype == np.float32 and got.block(scale).flags.c_contiguous
        assert got.block(scale).tobytes() == want.block(scale).tobytes()  # bit for bit
    assert got.metadata == want.metadata
    if want.coords is None:
        assert got.coords is None and got.crs is None
    else:
        assert got.coords.tobytes() == want.coords.tobytes() and got.crs.equals(want.crs)


@pytest.mark.parametrize("located", [True, False])
def test_streaming_load_is_identical_to_the_per_row_loader(tmp_path, monkeypatch, located):
    """Three scales of different widths, shuffled rows, several row groups and read batches."""
    import eocausal.embeddings as module

    n = 60
    rng = np.random.default_rng(3)
    vectors = {"6km": rng.normal(size=(n, 5)), "1km": rng.normal(size=(n, 4)), "250m": rng.normal(size=(n, 3))}
    ids = rng.permutation([f"site-{i:03d}" for i in range(n)])
    xy = None
    if located:
        xy = np.column_stack([30.0 + rng.random(n), 1.0 + rng.random(n)])
        xy[[4, 17]] = np.nan
    emb = Embeddings(ids, vectors, {"encoder": "x", "chip": {"size": 64}}, xy, "EPSG:4326" if located else None)
    table = _shuffled_table(emb)
    monkeypatch.setattr(module, "_BATCH_ROWS", 7)  # batches straddle scales and row groups
    monkeypatch.setattr(module, "_CHECK_ROWS", 11)
    pq.write_table(table, tmp_path / "e.parquet", row_group_size=25)
    want = _reference_from_table(table)
    assert want.unit_ids[0] != emb.unit_ids[0]  # the shuffle changed the unit order
    _assert_identical(Embeddings.load(tmp_path / "e.parquet"), want)
    _assert_identical(Embeddings.from_table(table), want)
    _assert_identical(Embeddings.load(emb.save(tmp_path / "saved.parquet")), emb)


def test_streaming_load_reads_float64_and_fixed_size_lists_like_the_per_row_loader(tmp_path):
    vec = np.random.default_rng(0).normal(size=(6, 3))  # float64: rounded to float32 on load
    for kind in (pa.list_(pa.float64()), pa.list_(pa.float64(), 3)):
        table = pa.table(
            {
                "unit_id": pa.array([3, 1, 2, 1, 2, 3]),  # integer ids are read as strings
                "scale": ["s", "s", "s", "t", "t", "t"],
                "embedding": pa.array(list(vec), type=kind),
            }
        ).replace_schema_metadata({b"eocausal": b"{}"})
        pq.write_table(table, tmp_path / "v1.parquet")
        got = Embeddings.load(tmp_path / "v1.parquet")
        _assert_identical(got, _reference_from_table(table))
        assert got.unit_ids.tolist() == ["3", "1", "2"]
        np.testing.assert_array_equal(got.block("t"), vec[[5, 3, 4]].astype(np.float32))


def _write_rows(path, unit_ids, scales, vectors, geometry=None):
    cols = {
        "unit_id": unit_ids,
        "scale": scales,
        "embedding": pa.array([np.asarray(v, dtype=np.float32) for v in vectors], type=pa.list_(pa.float32())),
    }
    meta = {b"eocausal": json.dumps({"format": "eocausal.embeddings", "format_version": 2,
                                     "geometry": "none", "metadata": {}}).encode()}
    if geometry is not None:
        import shapely

        cols["geometry"] = pa.array(shapely.to_wkb(shapely.points(geometry)), type=pa.binary())
        meta[b"geo"] = json.dumps({"version": "1.1.0", "primary_column": "geometry", "columns": {
            "geometry": {"encoding": "WKB", "geometry_types": ["Point"]}}}).encode()
    pq.write_table(pa.table(cols).replace_schema_metadata(meta), path)
    return path


def _same_error(path, pattern):
    """The streaming loader raises the per-row loader's error, word for word."""
    with pytest.raises(EmbeddingsError, match=pattern) as reference:
        _reference_from_table(pq.read_table(path))
    with pytest.raises(EmbeddingsError) as got:
        Embeddings.load(path)
    assert str(got.value) == str(reference.value)


def test_streaming_load_keeps_every_check(tmp_path):
    f = tmp_path / "bad.parquet"
    v = [np.ones(2)] * 4
    _same_error(_write_rows(f, ["a", "b", "a", "b"], ["s", "s", "s", "t"], v),
                r"1 \(unit, scale\) pairs have more than one embedding \(first: \['a @ s'\]\); shards")
    _same_error(_write_rows(f, ["a", "b", "c", "b"], ["s", "s", "s", "t"], v),
                r"Scale 't' lacks embeddings for 2 units \(first: \['a', 'c'\]\); rerun the job")
    _same_error(_write_rows(f, ["a", "b"], ["s", "s"], [np.ones(2), np.ones(3)]),
                r"Scale 's' mixes embedding shapes \[\(2,\), \(3,\)\]")
    _same_error(_write_rows(f, ["a", "b"], ["s", "s"], [np.ones(2), [1.0, np.inf]]),
                r"Block for scale 's' has non-finite values for units \['b'\]")
    with pytest.raises(EmbeddingsError, match=r"gives different points to the scales of one unit"):
        Embeddings.load(_write_rows(f, ["a", "a"], ["s", "t"], v[:2], geometry=[[1.0, 2.0], [1.0, 2.5]]))
    table = pa.table({"unit_id": ["a", "b"], "scale": ["s", "s"],
                      "embedding": pa.array([[1.0], None], type=pa.list_(pa.float32()))})
    with pytest.raises(EmbeddingsError, match=r"rows with a null embedding \(first: \['b @ s'\]\)"):
        Embeddings.from_table(table)
    table = pa.table({"unit_id": ["a", None], "scale": ["s", "s"],
                      "embedding": pa.array([[1.0], [2.0]], type=pa.list_(pa.float32()))})
    with pytest.raises(EmbeddingsError, match=r"1 rows with a null `unit_id`"):
        Embeddings.from_table(table)
    ok = Embeddings.load(_write_rows(f, ["a", "a"], ["s", "t"], v[:2], geometry=[[1.0, 2.0], [1.0, 2.0]]))
    np.testing.assert_array_equal(ok.coords, [[1.0, 2.0]])
    assert ok.crs.equals(CRS.from_user_input("OGC:CRS84"))  # the GeoParquet default
