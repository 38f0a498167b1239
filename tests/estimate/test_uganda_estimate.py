"""Uganda YOP tutorial (real Landsat chips, real randomised trial): ATE and CATE.

Features are a deterministic per-chip image summary (per-band mean, sd and
quantiles; many units share one chip through ``image_key``) wrapped in an
Embeddings object, plus the pre-treatment covariates X2, X4, X6. X1 equals the
treatment, and X3, X5, X7 are the treatment interactions X2·T, X4·T, X6·T (checked
below), so all four would leak the treatment into X and are dropped. X4 misses 7
values, mean-imputed with a missingness flag. Skips cleanly when ../shared/data is absent.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eocausal.embeddings import Embeddings
from eocausal.errors import OverlapWarning
from eocausal.estimate import CausalForest, aipw_ate, split_units
from eocausal.features import MultiScaleFeatures

pytestmark = pytest.mark.shared_data

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def chip_summary(images: np.ndarray) -> np.ndarray:
    """Per-band mean, sd and quantiles of each chip: (K, C, H, W) -> (K, C * (2 + 5))."""
    flat = images.reshape(images.shape[0], images.shape[1], -1).astype(np.float64) / 255.0
    parts = [flat.mean(axis=2), flat.std(axis=2)]
    parts += list(np.quantile(flat, QUANTILES, axis=2))
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def uganda(uganda_dir):
    units = pd.read_csv(uganda_dir / "units.csv")
    with np.load(uganda_dir / "images.npz", allow_pickle=False) as npz:
        images, keys = npz["images"], npz["image_keys"]
    T = units["treated"]
    assert (units["X1"] == T).all()  # the documented leak
    for inter, base in (("X3", "X2"), ("X5", "X4"), ("X7", "X6")):  # undocumented: T interactions
        assert np.allclose(units[inter].fillna(0), (units[base] * T).fillna(0))
    units = units.drop(columns=["X1", "X3", "X5", "X7"])
    summary = chip_summary(images)
    row_of_key = {int(k): i for i, k in enumerate(keys)}
    rows = np.array([row_of_key[int(k)] for k in units["image_key"]])
    ids = units["unit_id"].astype(str).to_numpy()
    emb = Embeddings(ids, {"chip35": summary[rows]}, {"encoder": "chip_summary"})
    covariates = units[["X2", "X4", "X6"]].set_axis(ids)
    # X4 is missing for 7 units: impute the mean and add an explicit flag
    # (MultiScaleFeatures refuses NaN and names the units).
    covariates["X4_missing"] = covariates["X4"].isna().astype(float)
    covariates["X4"] = covariates["X4"].fillna(covariates["X4"].mean())
    return units, emb, covariates


def test_uganda_ate_with_known_randomisation(uganda):
    units, emb, covariates = uganda
    T = units["treated"].to_numpy()
    Y = units["outcome"].to_numpy()
    clusters = units["image_key"].to_numpy()
    p = T.mean()  # known assignment share of the trial
    X = MultiScaleFeatures(pca_components=10).fit_transform(emb, covariates).X
    assert X.shape == (2082, 14) and np.isfinite(X).all()
    model = CausalForest(n_estimators=100, n_folds=3, propensity=p, n_jobs=1, random_state=0)
    with pytest.warns(OverlapWarning, match="278 of 327 clusters hold units of one arm only"):
        model.fit(X, T, Y, clusters=clusters)
    ate = model.ate()
    dim = Y[T == 1].mean() - Y[T == 0].mean()
    dim_res = aipw_ate(
        Y,
        T,
        p,
        mu0=np.full(len(Y), Y[T == 0].mean()),
        mu1=np.full(len(Y), Y[T == 1].mean()),
        clusters=clusters,
    )
    assert abs(ate.estimate - dim) < ate.std_err
    assert ate.ci_lower < dim < ate.ci_upper
    assert ate.n_clusters == len(np.unique(clusters))
    assert 0.5 * dim_res.std_err < ate.std_err < 1.5 * dim_res.std_err
    json.dumps(ate.to_dict())


def test_uganda_cate_on_held_out_units(uganda):
    units, emb, covariates = uganda
    T = units["treated"].to_numpy()
    Y = units["outcome"].to_numpy()
    clusters = units["image_key"].to_numpy()
    train, test = split_units(len(T), clusters=clusters, seed=0)
    assert not set(clusters[train]) & set(clusters[test])
    ids = emb.unit_ids
    feats = MultiScaleFeatures(pca_components=10).fit(
        emb.subset(ids[train]), covariates.loc[ids[train]]
    )
    X_train = feats.transform(emb.subset(ids[train]), covariates.loc[ids[train]]).X
    X_test = feats.transform(emb.subset(ids[test]), covariates.loc[ids[test]]).X
    model = CausalForest(n_estimators=100, n_folds=3, propensity=T.mean(), n_jobs=1, random_state=0)
    with pytest.warns(OverlapWarning, match="clusters hold units of one arm only"):
        model.fit(X_train, T[train], Y[train], clusters=clusters[train])
    tau = model.effect(X_test)
    lower, upper = model.effect_interval(X_test)
    assert tau.shape == (len(test),) and np.isfinite(tau).all()
    assert (lower <= tau).all() and (tau <= upper).all()
    assert np.isfinite(model.dr_scores_).all() and model.effect_oof_.shape == (len(train),)
