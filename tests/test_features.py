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
