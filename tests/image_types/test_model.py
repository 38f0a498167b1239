"""ImageTypeModel: recovery of known types and effects, salience, seeds, invariances, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from eocausal.errors import InputDataError, NotFittedError
from eocausal.image_types import ImageTypeModel

from .dgp import FAST, oracle_type_effects, simulate_chips, simulate_embeddings


def test_recovers_known_types_and_effects_from_chips(chip_fit):
    model, (_chips, T, Y, types, tau, mu0) = chip_fit
    effects = model.type_effects_["mean"].to_numpy()
    # types ordered by effect: type 0 = lowest
    assert list(model.type_effects_["type"]) == [0, 1]
    assert effects[0] < effects[1]
    np.testing.assert_allclose(effects, [0.0, 2.0], atol=0.3)
    np.testing.assert_allclose(effects, oracle_type_effects(Y, T, types, mu0), atol=0.12)
    assert (model.type_effects_["sd"] > 0).all() and (model.type_effects_["sd"] < 0.3).all()
    accuracy = (model.type_probabilities_.argmax(axis=1) == types).mean()
    assert accuracy > 0.85
    assert abs(model.ate_ - tau.mean()) < 0.2
    np.testing.assert_allclose(model.ate_, model.effect_.mean())
    np.testing.assert_allclose(model.effect_, model.type_probabilities_ @ effects)
    np.testing.assert_allclose(model.type_probabilities_.sum(axis=1), 1.0, atol=1e-6)
    assert model.noise_sd_ == pytest.approx(0.5, abs=0.2)
    assert model.history_.shape == (FAST["epochs"],)
    assert model.history_[-1] < model.history_[0]


def test_generalises_to_new_chips(chip_fit):
    model, _ = chip_fit
    chips, _T, _Y, types, tau, _ = simulate_chips(300, seed=11)
    proba = model.predict_proba(chips)
    assert proba.shape == (300, 2)
    assert (proba.argmax(axis=1) == types).mean() > 0.85
    effect = model.effect(chips)
    np.testing.assert_allclose(effect, proba @ model.type_effects_["mean"].to_numpy())
    assert np.sqrt(np.mean((effect - tau) ** 2)) < 0.6


def test_salience_highlights_the_deciding_band(chip_fit):
    model, (chips, *_rest) = chip_fit
    sal = model.salience(chips[:100], 1)
    assert sal.shape == (100, 3, 8, 8) and sal.dtype == np.float32
    per_band = np.abs(sal).mean(axis=(0, 2, 3))
    assert per_band[0] > 3 * per_band[1]
    assert per_band[0] > 3 * per_band[2]
    # brighter band 0 -> more likely the high-effect type: the gradient is positive on average
    assert sal[:, 0].mean() > 0
    # type 0's salience points the other way (K = 2: log p0 and log p1 move oppositely)
    assert model.salience(chips[:100], 0)[:, 0].mean() < 0
    # deterministic for a fitted model
    np.testing.assert_array_equal(sal, model.salience(chips[:100], 1))


def test_types_agree_with_kmeans_on_tlearner_effects(chip_fit):
    """The paper's validation: post-hoc k-means (K=2) on T-learner per-unit effects."""
    from eocausal.estimate import TLearner

    model, (chips, T, Y, types, _, _) = chip_fit
    # the T-learner sees simple image features: per-band chip means
    X = chips.mean(axis=(2, 3))
    tl = TLearner(n_estimators=40, n_jobs=1, propensity=0.5, random_state=0).fit(X, T, Y)
    km = KMeans(n_clusters=2, n_init=10, random_state=0).fit(tl.effect_oof_.reshape(-1, 1))
    ari_model_kmeans = adjusted_rand_score(model.type_probabilities_.argmax(axis=1), km.labels_)
    assert ari_model_kmeans > 0.7
    assert adjusted_rand_score(types, model.type_probabilities_.argmax(axis=1)) > 0.8


def test_embeddings_input_and_covariates():
    emb, cov, T, Y, types = simulate_embeddings()
    model = ImageTypeModel(random_state=1, **FAST).fit(emb, T, Y, covariates=cov)
    assert model.input_kind_ == "embeddings" and model.input_shape_ == (6,)
    np.testing.assert_allclose(model.type_effects_["mean"], [0.0, 2.0], atol=0.35)
    assert (model.type_probabilities_.argmax(axis=1) == types).mean() > 0.85
    assert model.effect(emb[:10], cov[:10]).shape == (10,)
    with pytest.raises(InputDataError, match="fitted with 2 covariates"):
        model.effect(emb[:10])
    with pytest.raises(InputDataError, match="has 3 columns"):
        model.effect(emb[:10], np.zeros((10, 3)))
    with pytest.raises(InputDataError, match="salience needs chip inputs"):
        model.salience(emb[:10], 1)


def test_same_seed_same_numbers_and_global_rng_untouched():
    chips, T, Y, *_ = simulate_chips(200, seed=3)
    params = {"hidden": 8, "batch_size": 64, "epochs": 3}
    state = torch.get_rng_state()
    a = ImageTypeModel(random_state=7, **params).fit(chips, T, Y)
    assert torch.equal(state, torch.get_rng_state())
    b = clone(a).fit(chips, T, Y)
    np.testing.assert_array_equal(a.type_probabilities_, b.type_probabilities_)
    np.testing.assert_array_equal(a.history_, b.history_)
    np.testing.assert_array_equal(a.type_effects_.to_numpy(), b.type_effects_.to_numpy())
    np.testing.assert_array_equal(a.salience(chips[:5], 0), b.salience(chips[:5], 0))
    c = ImageTypeModel(random_state=8, **params).fit(chips, T, Y)
    assert not np.array_equal(a.history_, c.history_)


def test_weight_scale_invariance():
    chips, T, Y, *_ = simulate_chips(200, seed=4)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=200)
    params = {"hidden": 8, "batch_size": 64, "epochs": 3, "random_state": 0}
    a = ImageTypeModel(**params).fit(chips, T, Y, sample_weight=w)
    b = ImageTypeModel(**params).fit(chips, T, Y, sample_weight=5 * w)
    np.testing.assert_allclose(a.type_probabilities_, b.type_probabilities_, rtol=1e-5, atol=1e-6)
    assert a.ate_ == pytest.approx(b.ate_, rel=1e-5)
    assert a.ate_ == pytest.approx(np.average(a.effect_, weights=w))


def test_result_is_json_serialisable(chip_fit):
    model, _ = chip_fit
    d = model.result().to_dict()
    back = json.loads(json.dumps(d))
    assert back["n_types"] == 2 and back["input_kind"] == "chips"
    assert [row["type"] for row in back["type_effects"]] == [0, 1]
    assert back["ate"] == pytest.approx(model.ate_)
    assert back["params"]["random_state"] == 0


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_types": 1}, "'n_types' parameter .* int >= 2"),
        ({"temperature": 0.0}, "'temperature' parameter .* positive"),
        ({"epochs": 0}, "'epochs' parameter"),
        ({"lr": -1.0}, "'lr' parameter"),
        ({"prior_sd": 0.0}, "'prior_sd' parameter"),
        ({"random_state": 1.5}, "'random_state' parameter"),
        ({"device": "not-a-device"}, "'device' parameter"),
    ],
)
def test_bad_parameters(params, match):
    chips, T, Y, *_ = simulate_chips(40, seed=0)
    with pytest.raises(InputDataError, match=match):
        ImageTypeModel(**params).fit(chips, T, Y)


def test_bad_inputs_name_rows():
    chips, T, Y, *_ = simulate_chips(40, seed=0)
    model = ImageTypeModel(epochs=1, hidden=4, random_state=0)
    with pytest.raises(InputDataError, match=r"shape \(40, 8, 8\)"):
        model.fit(chips[:, 0], T, Y)
    bad = chips.copy()
    bad[[3, 17], 1, 2, 2] = np.nan
    ids = np.array([f"u{i}" for i in range(40)])
    with pytest.raises(InputDataError, match="units 'u3', 'u17'"):
        model.fit(bad, T, Y, unit_ids=ids)
    with pytest.raises(InputDataError, match="rows 3, 17"):
        model.fit(bad, T, Y)
    with pytest.raises(InputDataError, match="`T` has 39 values but `images` has 40"):
        model.fit(chips, T[:-1], Y)
    with pytest.raises(InputDataError, match="`Y` has 39 values"):
        model.fit(chips, T, Y[:-1])
    T2 = T.copy()
    T2[5] = 2
    with pytest.raises(InputDataError, match="must be binary"):
        model.fit(chips, T2, Y)
    with pytest.raises(InputDataError, match="`Y` is constant"):
        model.fit(chips, T, np.ones(40))


def test_not_fitted_and_predict_shape_errors(chip_fit):
    chips, *_ = simulate_chips(20, seed=0)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ImageTypeModel().predict_proba(chips)
    with pytest.raises(NotFittedError):
        ImageTypeModel().salience(chips, 0)
    model, _ = chip_fit
    with pytest.raises(InputDataError, match=r"per-unit shape \(3, 16, 16\)"):
        model.predict_proba(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(InputDataError, match="`type_index` must be an int in 0..1"):
        model.salience(chips, 2)
