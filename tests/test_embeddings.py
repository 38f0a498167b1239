"""The Embeddings artifact: round trip, one row per (unit, scale), clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

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
    assert pq.read_table(path).num_rows == 10
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
