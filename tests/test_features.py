"""MultiScaleFeatures: block layout, PCA fitted on training units only, covariates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from eocausal.embeddings import Embeddings
from eocausal.errors import EmbeddingsError, InputDataError, NotFittedError
from eocausal.features import Features, MultiScaleFeatures


def _emb(n=40, seed=0, offset=0):
    rng = np.random.default_rng(seed)
    ids = [f"u{i + offset}" for i in range(n)]
    return Embeddings(
        ids, {"s32": rng.normal(size=(n, 6)), "s128": rng.normal(size=(n, 4)) * 3 + 1}
    )


def test_raw_blocks_concatenated_and_standardized():
    emb = _emb()
    feats = MultiScaleFeatures().fit_transform(emb)
    assert isinstance(feats, Features)
    assert feats.X.shape == (40, 10) and feats.X.dtype == np.float64
    assert feats.blocks == ["s32"] * 6 + ["s128"] * 4
    assert feats.columns[:2] == ["s32_0", "s32_1"] and feats.columns[-1] == "s128_3"
    np.testing.assert_allclose(feats.X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(feats.X.std(axis=0), 1, atol=1e-12)
    np.testing.assert_array_equal(feats.unit_ids, emb.unit_ids)
    np.testing.assert_array_equal(feats.block_columns("s128"), np.arange(6, 10))


def test_scale_subset_order_and_no_standardize():
    emb = _emb()
    feats = MultiScaleFeatures(scales=["s128"], standardize=False).fit_transform(emb)
    np.testing.assert_allclose(feats.X, emb.block("s128"), rtol=1e-6)
    assert set(feats.blocks) == {"s128"}
    with pytest.raises(EmbeddingsError, match="s999"):
        MultiScaleFeatures(scales=["s999"]).fit(emb)


def test_pca_fitted_on_training_units_only():
    train, test = _emb(40, 0), _emb(15, 1, offset=100)
    fx = MultiScaleFeatures(pca_components={"s32": 3, "s128": None}, standardize=False).fit(train)
    components = fx.pcas_["s32"].components_.copy()
    out = fx.transform(test)
    # Transforming new units does not refit: same components, and the values equal a
    # PCA fitted on the training block applied to the test block.
    np.testing.assert_array_equal(fx.pcas_["s32"].components_, components)
    ref = PCA(3, svd_solver="full").fit(train.block("s32").astype(np.float64))
    np.testing.assert_allclose(
        out.X[:, :3], ref.transform(test.block("s32").astype(np.float64)), atol=1e-6
    )
    refit = PCA(3, svd_solver="full").fit(test.block("s32").astype(np.float64))
    assert not np.allclose(np.abs(refit.components_), np.abs(components), atol=1e-3)
    assert out.columns[:3] == ["s32_pc0", "s32_pc1", "s32_pc2"]
    # Standardization also uses training means: test columns are not exactly centred.
    fz = MultiScaleFeatures(pca_components=2).fit(train)
    assert np.abs(fz.transform(test).X.mean(axis=0)).max() > 1e-3


def test_pca_components_capped_and_variance_share():
    emb = _emb(5)
    fx = MultiScaleFeatures(pca_components=50).fit(emb)
    assert fx.pcas_["s32"].n_components_ == 5 and fx.pcas_["s128"].n_components_ == 4
    fv = MultiScaleFeatures(pca_components=0.9).fit(_emb())
    assert 1 <= fv.pcas_["s32"].n_components_ <= 6
    with pytest.raises(InputDataError, match="pca_components"):
        MultiScaleFeatures(pca_components=0).fit(emb)


def test_covariates_by_index_or_position():
    emb = _emb(6)
    cov = pd.DataFrame({"age": np.arange(6.0), "f": [0, 1, 0, 1, 1, 0]}, index=emb.unit_ids)
    shuffled = cov.iloc[::-1]
    a = MultiScaleFeatures(scales=[], standardize=False).fit_transform(emb, shuffled)
    np.testing.assert_array_equal(a.X[:, 0], np.arange(6.0))
    assert a.blocks == ["covariates", "covariates"] and a.columns == ["age", "f"]
    positional = cov.reset_index(drop=True)
    b = MultiScaleFeatures(standardize=False).fit_transform(emb, positional)
    np.testing.assert_array_equal(b.X[:, -2], np.arange(6.0))


def test_covariate_errors_name_units_and_columns():
    emb = _emb(6)
    cov = pd.DataFrame({"age": [1.0, 2, np.nan, 4, 5, 6]}, index=emb.unit_ids)
    with pytest.raises(InputDataError, match=r"units \['u2'\] in columns \['age'\]"):
        MultiScaleFeatures().fit(emb, cov)
    with pytest.raises(InputDataError, match="not numeric"):
        MultiScaleFeatures().fit(emb, pd.DataFrame({"c": list("abcdef")}, index=emb.unit_ids))
    with pytest.raises(InputDataError, match="index it by unit_id"):
        MultiScaleFeatures().fit(emb, pd.DataFrame({"a": [1.0, 2.0]}))
    fx = MultiScaleFeatures().fit(emb, cov.fillna(0))
    with pytest.raises(InputDataError, match="pass `covariates`"):
        fx.transform(emb)


def test_not_fitted_and_width_mismatch():
    with pytest.raises(NotFittedError):
        MultiScaleFeatures().transform(_emb())
    fx = MultiScaleFeatures(pca_components=2).fit(_emb())
    narrow = Embeddings(["a"], {"s32": np.zeros((1, 5)), "s128": np.zeros((1, 4))})
    with pytest.raises(EmbeddingsError, match="width 5"):
        fx.transform(narrow)


def _reference_features(train, test, components, covariates=None):
    """The computation before chunking: whole float64 blocks, PCA on all units, X.mean / X.std."""
    pcas = {
        s: None if components[s] is None
        else PCA(components[s], svd_solver="full").fit(train.block(s).astype(np.float64))
        for s in train.scales
    }

    def unstandardized(emb, cov):
        parts = []
        for s in emb.scales:
            block = emb.block(s).astype(np.float64)
            parts.append(block if pcas[s] is None else pcas[s].transform(block))
        return np.hstack(parts + ([] if cov is None else [cov]))

    X = unstandardized(train, None if covariates is None else covariates[0])
    sd = X.std(axis=0)
    return (unstandardized(test, None if covariates is None else covariates[1]) - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def test_at_or_below_pca_fit_size_results_are_bit_identical_to_whole_block_computation():
    train, test = _emb(300, 0), _emb(50, 1, offset=1000)
    rng = np.random.default_rng(2)
    cov_train = pd.DataFrame({"c": rng.normal(size=300)}, index=train.unit_ids)  # one column: numpy
    cov_test = pd.DataFrame({"c": rng.normal(size=50)}, index=test.unit_ids)  # reduces it pairwise
    components = {"s32": 1, "s128": None}
    for fit_size in (300, None):
        fx = MultiScaleFeatures(pca_components=components, pca_fit_size=fit_size).fit(train, cov_train)
        assert fx.pca_fit_rows_ is None
        want = _reference_features(train, test, components, (cov_train.to_numpy(), cov_test.to_numpy()))
        np.testing.assert_array_equal(fx.transform(test, cov_test).X, want)


def test_chunked_fit_and_transform_equal_whole_block_to_rounding(monkeypatch):
    import eocausal.features as module

    train, test = _emb(40, 0), _emb(23, 1, offset=100)
    cov = pd.DataFrame({"c": np.arange(40.0) ** 2, "d": np.ones(40)}, index=train.unit_ids)
    whole = MultiScaleFeatures(pca_components={"s32": 3, "s128": None}).fit(train, cov)
    monkeypatch.setattr(module, "_CHUNK_ROWS", 7)
    chunked = MultiScaleFeatures(pca_components={"s32": 3, "s128": None}).fit(train, cov)
    np.testing.assert_array_equal(chunked.pcas_["s32"].components_, whole.pcas_["s32"].components_)
    np.testing.assert_allclose(chunked.mean_, whole.mean_, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(chunked.scale_, whole.scale_, rtol=1e-13)
    assert chunked.scale_[-1] == 1.0  # the constant covariate is left unscaled
    cov_test = pd.DataFrame({"c": np.arange(23.0), "d": np.ones(23)}, index=test.unit_ids)
    np.testing.assert_allclose(
        chunked.transform(test, cov_test).X, whole.transform(test, cov_test).X, rtol=1e-12, atol=1e-12
    )
    X = chunked.transform(train, cov).X  # pooled moments: the training columns are standardized
    np.testing.assert_allclose(X[:, :-1].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(X[:, :-1].std(axis=0), 1, atol=1e-12)


def _two_regime_block(n, d, seed):
    """First half of the units varies along e0, e1; the second half along e2, e3; plus noise.

    The top-4 principal subspace of the whole block is span(e0..e3) (eigenvalue 4.75 against
    0.25): a sample of the first units alone would miss e2, e3.
    """
    rng = np.random.default_rng(seed)
    block = 0.5 * rng.standard_normal((n, d))
    half = n // 2
    block[:half, :2] += 3.0 * rng.standard_normal((half, 2))
    block[half:, 2:4] += 3.0 * rng.standard_normal((n - half, 2))
    return Embeddings([f"u{i}" for i in range(n)], {"s": block})


def test_pca_on_a_random_sample_recovers_the_principal_subspace():
    from scipy.linalg import subspace_angles

    emb = _two_regime_block(20_000, 24, seed=0)
    truth = np.eye(24)[:4].T
    sampled = MultiScaleFeatures(pca_components=4, pca_fit_size=2_000, random_state=5).fit(emb)
    full = MultiScaleFeatures(pca_components=4, pca_fit_size=None).fit(emb)
    rows = sampled.pca_fit_rows_
    assert len(rows) == 2_000 and (np.diff(rows) > 0).all() and rows.max() < 20_000
    assert (rows >= 10_000).mean() == pytest.approx(0.5, abs=0.05)  # both regimes sampled
    # Theory: the estimated basis mixes each of the 4 signal directions with each of the 20
    # noise ones by about sigma_m = sqrt(4.75 * 0.25 / m) / (4.75 - 0.25) (first-order
    # perturbation); the largest principal angle is the top singular value of that 20 x 4
    # matrix, about (sqrt(20) + sqrt(4)) * sigma_m: 0.036 rad at m = 2,000, 0.011 at 20,000.
    def expected(m):
        return (np.sqrt(20) + 2) * np.sqrt(4.75 * 0.25 / m) / 4.5

    angle_sampled = subspace_angles(sampled.pcas_["s"].components_.T, truth).max()
    angle_full = subspace_angles(full.pcas_["s"].components_.T, truth).max()
    assert 0.5 < angle_sampled / expected(2_000) < 1.5
    assert 0.5 < angle_full / expected(20_000) < 1.5
    # The features span the same space: each full-PCA feature is a linear function of the
    # sample-PCA features (R^2 > 0.999).
    Xs, Xf = sampled.transform(emb).X, full.transform(emb).X
    coef, *_ = np.linalg.lstsq(np.column_stack([Xs, np.ones(len(Xs))]), Xf, rcond=None)
    resid = Xf - np.column_stack([Xs, np.ones(len(Xs))]) @ coef
    assert (1 - resid.var(axis=0) / Xf.var(axis=0)).min() > 0.999
    # The first units alone (a non-random "sample") miss half of the subspace.
    first = PCA(4, svd_solver="full").fit(emb.block("s")[:2_000].astype(np.float64))
    assert subspace_angles(first.components_.T, truth).max() > 1.0
    # The sample is fixed by random_state.
    again = MultiScaleFeatures(pca_components=4, pca_fit_size=2_000, random_state=5).fit(emb)
    np.testing.assert_array_equal(again.pca_fit_rows_, rows)
    np.testing.assert_array_equal(again.pcas_["s"].components_, sampled.pcas_["s"].components_)
    other = MultiScaleFeatures(pca_components=4, pca_fit_size=2_000, random_state=6).fit(emb)
    assert not np.array_equal(other.pca_fit_rows_, rows)


def test_pca_fit_size_is_checked():
    for bad in (0, 2.5, True):
        with pytest.raises(InputDataError, match=r"`pca_fit_size` must be an int >= 1 or None"):
            MultiScaleFeatures(pca_components=2, pca_fit_size=bad).fit(_emb())
        with pytest.raises(InputDataError, match=r"`pca_fit_size` must be"):
            MultiScaleFeatures(pca_fit_size=bad).fit(_emb())  # checked even without PCA
