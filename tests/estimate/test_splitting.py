"""Folds and splits: coverage, balance, determinism, clusters kept together."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.errors import InputDataError
from eocausal.estimate import fold_splits, make_folds, split_units


def test_folds_cover_balance_and_repeat():
    T = np.array([0, 1] * 50)
    folds = make_folds(100, 5, stratify=T, seed=1)
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    assert np.bincount(folds).tolist() == [20] * 5
    for k in range(5):
        assert T[folds == k].sum() == 10  # stratified: 10 treated per fold
    np.testing.assert_array_equal(folds, make_folds(100, 5, stratify=T, seed=1))
    assert not np.array_equal(folds, make_folds(100, 5, stratify=T, seed=2))


def test_clusters_never_split_across_folds():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 30, size=300)
    T = rng.integers(0, 2, size=300)
    for stratify in (None, T):
        folds = make_folds(300, 5, clusters=clusters, stratify=stratify, seed=0)
        for c in np.unique(clusters):
            assert len(np.unique(folds[clusters == c])) == 1
        assert len(np.unique(folds)) == 5


def test_cluster_folds_depend_on_seed():
    clusters = np.repeat(np.arange(20), 5)
    a = make_folds(100, 4, clusters=clusters, seed=0)
    b = make_folds(100, 4, clusters=clusters, seed=1)
    assert not np.array_equal(a, b)


def test_fold_splits_partition():
    folds = make_folds(23, 3, seed=0)
    seen = np.concatenate([test for _, test in fold_splits(folds)])
    assert sorted(seen.tolist()) == list(range(23))
    for train, test in fold_splits(folds):
        assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == 23


def test_fold_errors():
    with pytest.raises(InputDataError, match="3 clusters"):
        make_folds(9, 5, clusters=np.repeat([0, 1, 2], 3))
    with pytest.raises(InputDataError, match="n_folds"):
        make_folds(10, 1)
    with pytest.raises(InputDataError, match="one label per unit"):
        make_folds(10, 2, clusters=np.zeros(9))


def test_split_units_disjoint_and_clustered():
    train, test = split_units(100, test_size=0.3, seed=0, stratify=np.array([0, 1] * 50))
    assert len(test) == 30 and np.intersect1d(train, test).size == 0
    assert len(train) + len(test) == 100
    clusters = np.repeat(np.arange(25), 4)
    train, test = split_units(100, clusters=clusters, seed=0)
    assert not set(clusters[train]) & set(clusters[test])
    np.testing.assert_array_equal(test, split_units(100, clusters=clusters, seed=0)[1])
    with pytest.raises(InputDataError, match="test_size"):
        split_units(10, test_size=1.5)
