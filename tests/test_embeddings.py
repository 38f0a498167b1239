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
