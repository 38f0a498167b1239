"""Scale comparison on embeddings whose heterogeneity lives at one known scale."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from evaluate_learners import LinearTLearner

from eocausal.embeddings import Embeddings
from eocausal.errors import InputDataError
from eocausal.evaluate import compare_scales, scale_combinations


def scene(rng, n=800):
    """Three scales; the effect depends on the first coordinate of scale 's64' only."""
    ids = np.array([f"u{i:04d}" for i in range(n)])
    blocks = {s: rng.normal(size=(n, 4)).astype(np.float32) for s in ("s32", "s64", "s256")}
    T = rng.binomial(1, 0.5, n)
    tau = 0.5 + 1.5 * blocks["s64"][:, 0]
    Y = blocks["s256"][:, 1] + T * tau + rng.normal(size=n)
    return Embeddings(ids, blocks), T, Y


def test_scale_combinations_tokens_and_lists():
    scales = ["a", "b", "c"]
    assert scale_combinations(scales, "singles+pairs+all") == [
        ("a",),
        ("b",),
        ("c",),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a", "b", "c"),
    ]
    assert scale_combinations(["a"], "singles+all") == [("a",)]
    assert scale_combinations(["a", "b"], "pairs+all") == [("a", "b")]
    assert scale_combinations(scales, [["c", "a"], "b"]) == [("a", "c"), ("b",)]
    with pytest.raises(InputDataError, match="singles"):
        scale_combinations(scales, "singles+triples")
    with pytest.raises(InputDataError, match="not in the embeddings"):
        scale_combinations(scales, [["a", "z"]])


def test_signal_scale_wins_and_gain_is_paired():
    rng = np.random.default_rng(0)
    emb, T, Y = scene(rng)
    res = compare_scales(emb, T, Y, learner=LinearTLearner(), n_bootstrap=100, seed=1)
    table = res.table.set_index("combination")
    assert list(table.index) == [
        "s32",
        "s64",
        "s256",
        "s32+s64",
        "s32+s256",
        "s64+s256",
        "s32+s64+s256",
    ]
    assert list(table["n_scales"]) == [1, 1, 1, 2, 2, 2, 3]
    singles = table[table["n_scales"] == 1]
    assert singles["estimate"].idxmax() == "s64"
    assert table.loc["s64", "ratio"] > 4
    assert abs(table.loc["s32", "ratio"]) < 3 and abs(table.loc["s256", "ratio"]) < 3
    # Every combination containing s64 detects the heterogeneity.
    assert all(table.loc[c, "ratio"] > 4 for c in table.index if "s64" in c)
    gain = res.gain
    assert gain.b.name == "s64"
    assert "s64" in gain.a.name
    reps = res.results[gain.a.name].replicates[:, 0] - res.results["s64"].replicates[:, 0]
    np.testing.assert_allclose(gain.std_err, np.std(reps, ddof=1))
    np.testing.assert_allclose(
        gain.difference, table.loc[gain.a.name, "estimate"] - table.loc["s64", "estimate"]
    )
    # One split and one set of draws for all: every result saw the same units.
    assert {r.n for r in res.results.values()} == {res.eval_index.size}
    d = json.loads(json.dumps(res.to_dict()))
    assert d["multiscale_gain"]["best_single"] == "s64"
    assert [row["combination"] for row in d["table"]] == list(table.index)


def test_same_seed_same_numbers_and_features_fitted_on_training_units():
    rng = np.random.default_rng(1)
    emb, T, Y = scene(rng, 400)

    class Sizes(LinearTLearner):
        seen: ClassVar[list] = []

        def fit(self, X, T, Y, *, clusters=None, sample_weight=None):
            Sizes.seen.append(X.shape)
            return super().fit(X, T, Y, clusters=clusters, sample_weight=sample_weight)

    Sizes.seen = []
    a = compare_scales(
        emb,
        T,
        Y,
        learner=Sizes(),
        combinations="singles+all",
        pca_components=2,
        n_bootstrap=30,
        seed=5,
    )
    b = compare_scales(
        emb,
        T,
        Y,
        learner=LinearTLearner(),
        combinations="singles+all",
        pca_components=2,
        n_bootstrap=30,
        seed=5,
    )
    pd.testing.assert_frame_equal(a.table, b.table)
    n_train, n_eval = a.train_index.size, a.eval_index.size
    # 3 singles (2 PCA components each) and all (6) on the training half; the evaluator on the other.
    assert Sizes.seen == [(n_train, 2), (n_train, 2), (n_train, 2), (n_train, 6), (n_eval, 6)]


def test_covariates_by_index_or_by_position_agree():
    rng = np.random.default_rng(2)
    emb, T, Y = scene(rng, 300)
    cov = pd.DataFrame({"elev": rng.normal(size=300)}, index=emb.unit_ids)
    shuffled = cov.sample(frac=1.0, random_state=0)
    kw = {"learner": LinearTLearner(), "combinations": "singles", "n_bootstrap": 20, "seed": 0}
    by_position = compare_scales(emb, T, Y, covariates=cov.reset_index(drop=True), **kw)
    by_index = compare_scales(emb, T, Y, covariates=shuffled, **kw)
    pd.testing.assert_frame_equal(by_position.table, by_index.table)
    assert by_index.gain is None
    with pytest.raises(InputDataError, match="index it by unit_id"):
        compare_scales(emb, T, Y, covariates=cov.iloc[:10], **kw)


def test_clusters_stay_on_one_side():
    rng = np.random.default_rng(3)
    emb, T, Y = scene(rng, 400)
    clusters = rng.integers(0, 20, 400)
    res = compare_scales(
        emb,
        T,
        Y,
        learner=LinearTLearner(),
        combinations="all",
        clusters=clusters,
        n_bootstrap=20,
        seed=0,
    )
    assert not set(clusters[res.train_index]) & set(clusters[res.eval_index])
    assert res.results["s32+s64+s256"].n_clusters == len(set(clusters[res.eval_index]))
