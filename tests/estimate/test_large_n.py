"""Large-n settings of the CATE learners: the auto rules, the gradient-boosting DR final
stage (accuracy on a known truth, honest out-of-fold effects, NaN intervals) and how the
pipeline passes and records them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.dummy import DummyRegressor

from eocausal.config.loading import validate
from eocausal.config.run import EstimateConfig
from eocausal.errors import ConfigError, InputDataError
from eocausal.estimate import CausalForest, DRLearner, TLearner, forest_settings
from eocausal.estimate.forest_settings import auto_final_model, auto_max_samples, resolved_settings
from eocausal.estimate.nuisance import default_outcome_model
from eocausal.pipeline.estimate import make_learner

FAST = {"n_estimators": 40, "n_folds": 3, "n_jobs": 1, "random_state": 0}


def _rct(n, seed, p=4):
    """Randomized trial, e = 0.5, tau(x) = 1 + x0 + 0.5 tanh(2 x1); Var(tau) is about 1.2."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    T = rng.binomial(1, 0.5, size=n)
    tau = 1.0 + X[:, 0] + 0.5 * np.tanh(2.0 * X[:, 1])
    Y = X[:, 2] + T * tau + rng.normal(size=n)
    return X, T, Y, tau


@pytest.mark.parametrize(
    ("n", "share"),
    [
        (1_000, 0.45),
        (44_444, 0.45),
        (50_000, 0.4),
        (100_000, 0.2),
        (500_000, 0.04),
        (1_000_000, 0.02),
    ],
)
def test_auto_max_samples_rule(n, share):
    assert auto_max_samples(n) == pytest.approx(share, rel=1e-12)
    # beyond n = 20,000 / 0.45 every tree draws 20,000 units; below, 0.45 n
    assert round(auto_max_samples(n) * n) == min(round(0.45 * n), 20_000)


def test_auto_max_samples_is_exactly_the_small_n_share_below_the_cut():
    """Bit-identical small-n behaviour needs the literal 0.45, not 20,000 / n."""
    assert all(auto_max_samples(n) == 0.45 for n in (2, 1_938, 30_000, 44_444))
    assert auto_max_samples(44_445) < 0.45


@pytest.mark.parametrize(
    ("n", "final"), [(2_000, "forest"), (19_999, "forest"), (20_000, "hgb"), (1_000_000, "hgb")]
)
def test_auto_final_model_rule(n, final):
    assert auto_final_model(n) == final


@pytest.mark.parametrize("learner", [CausalForest, DRLearner, TLearner])
def test_auto_is_bit_identical_to_small_n_settings(learner):
    X, T, Y, _ = _rct(600, 0)
    kw = {**FAST, "propensity": 0.5}
    old = {"max_samples": 0.45} | ({"final_model": "forest"} if learner is DRLearner else {})
    a = learner(**kw).fit(X, T, Y)
    b = learner(**kw, **old).fit(X, T, Y)
    assert a.max_samples_ == 0.45
    np.testing.assert_array_equal(a.effect_oof_, b.effect_oof_)
    np.testing.assert_array_equal(a.effect(X[:50]), b.effect(X[:50]))
    np.testing.assert_array_equal(a.effect_interval(X[:50])[0], b.effect_interval(X[:50])[0])


def test_causal_forest_trees_draw_the_capped_subsample(monkeypatch):
    """With the cap lowered to 150 units, n = 1,000 is 'large': every tree draws 150 units."""
    monkeypatch.setattr(forest_settings, "AUTO_TREE_SAMPLES", 150)
    X, T, Y, _ = _rct(1_000, 1)
    model = CausalForest(**FAST, propensity=0.5).fit(X, T, Y)
    assert model.max_samples_ == pytest.approx(0.15)
    assert model.forest_.max_samples == model.max_samples_
    sizes = {len(s) for s in model.forest_.get_subsample_inds()}
    assert sizes == {150}
    settings = resolved_settings(model)
    assert settings["units_per_tree"] == 150 and settings["intervals"] is True
    assert settings["max_samples_reason"] == (
        "max_samples='auto': n = 1,000 > 333, so 150 / n (at most 150 units per tree)"
    )
    assert "final_model" not in settings


@pytest.mark.parametrize("bad", [0.6, 0.0, -0.1, "half", True, None])
def test_max_samples_is_checked(bad):
    X, T, Y, _ = _rct(200, 2)
    with pytest.raises(
        InputDataError, match="'max_samples' parameter of CausalForest must be 'auto'"
    ):
        CausalForest(max_samples=bad, **FAST, propensity=0.5).fit(X, T, Y)


def test_final_model_is_checked():
    X, T, Y, _ = _rct(200, 2)
    with pytest.raises(InputDataError, match="'final_model' parameter of DRLearner must be one of"):
        DRLearner(final_model="gbm", **FAST, propensity=0.5).fit(X, T, Y)


@pytest.fixture(scope="module")
def hgb_fit():
    X, T, Y, tau = _rct(4_000, 3)
    Xt, _, _, tau_t = _rct(2_000, 4)
    model = DRLearner(final_model="hgb", **FAST, propensity=0.5).fit(X, T, Y)
    return model, X, T, Y, tau, Xt, tau_t


def test_hgb_final_stage_recovers_known_effects(hgb_fit):
    model, _X, _T, _Y, tau, Xt, tau_t = hgb_fit
    assert model.final_model_ == "hgb" and not hasattr(model, "forest_")
    constant = np.mean((tau_t - tau_t.mean()) ** 2)  # predicting the true ATE everywhere: 1.07
    mse = np.mean((model.effect(Xt) - tau_t) ** 2)  # 0.056 when written
    oof = np.mean((model.effect_oof_ - tau) ** 2)  # 0.101 (of Var(tau) = 1.18)
    assert mse < 0.1 * constant, (mse, constant)
    assert oof < 0.15 * np.var(tau), oof
    ate = model.ate()
    assert ate.ci_lower < tau.mean() < ate.ci_upper


def test_hgb_effect_oof_is_the_other_folds_model(hgb_fit):
    """Brute force: unit i's out-of-fold effect is the prediction of gradient boosting
    fitted on the pseudo-outcomes of the other folds."""
    model, X, *_ = hgb_fit
    folds = model.folds_
    for k in (0, 2):
        out = folds == k
        g = default_outcome_model(0).fit(X[~out], model.pseudo_outcomes_[~out])
        np.testing.assert_allclose(model.effect_oof_[out], g.predict(X[out]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        model.effect(X[:20]),
        default_outcome_model(0).fit(X, model.pseudo_outcomes_).predict(X[:20]),
        rtol=0,
        atol=1e-12,
    )
    assert not np.allclose(model.effect_oof_, model.effect(X))


def test_hgb_effect_oof_ignores_the_units_own_outcome():
    """With μ̂ = 0 and the known e = 0.5, a unit's pseudo-outcome is 4 (W - 1/2) Y: moving
    the outcomes of fold 0 must leave fold 0's out-of-fold effects unchanged, and move
    the others'."""
    X, T, Y, _ = _rct(1_500, 5)
    kw = {
        **FAST,
        "propensity": 0.5,
        "final_model": "hgb",
        "outcome_model": DummyRegressor(strategy="constant", constant=0.0),
    }
    a = DRLearner(**kw).fit(X, T, Y)
    fold0 = a.folds_ == 0
    Y2 = Y + np.where(fold0, 5.0 * np.random.default_rng(6).normal(size=len(Y)), 0.0)
    b = DRLearner(**kw).fit(X, T, Y2)
    np.testing.assert_array_equal(a.folds_, b.folds_)
    np.testing.assert_array_equal(a.effect_oof_[fold0], b.effect_oof_[fold0])
    assert np.max(np.abs(a.effect_oof_[~fold0] - b.effect_oof_[~fold0])) > 0.05


def test_hgb_intervals_are_nan_and_recorded(hgb_fit):
    model, _X, *_rest, Xt, _tau_t = hgb_fit
    lower, upper = model.effect_interval(Xt[:30])
    assert lower.shape == upper.shape == (30,)
    assert np.isnan(lower).all() and np.isnan(upper).all()
    settings = resolved_settings(model)
    assert settings["final_model"] == "hgb" and settings["intervals"] is False
    assert settings["final_model_reason"] == "final_model='hgb' (given)"
    json.dumps(settings)


def test_auto_final_model_switches_at_the_threshold(monkeypatch):
    monkeypatch.setattr(forest_settings, "AUTO_HGB_MIN_UNITS", 1_000)
    X, T, Y, _ = _rct(1_200, 7)
    big = DRLearner(**FAST, propensity=0.5).fit(X, T, Y)
    small = DRLearner(**FAST, propensity=0.5).fit(X[:900], T[:900], Y[:900])
    assert big.final_model_ == "hgb" and small.final_model_ == "forest"
    assert resolved_settings(big)["final_model_reason"] == "final_model='auto': n = 1,200 >= 1,000"
    assert resolved_settings(small)["final_model_reason"] == "final_model='auto': n = 900 < 1,000"
    # refitting with the forest after gradient boosting leaves no stale model behind
    big.set_params(final_model="forest").fit(X, T, Y)
    assert big.final_estimator_ is big.forest_
    big.set_params(final_model="hgb").fit(X, T, Y)
    assert not hasattr(big, "forest_")


def test_config_fields_and_make_learner():
    assert EstimateConfig().max_samples == "auto" and EstimateConfig().final_model == "auto"
    with pytest.raises(
        ConfigError, match=r"`max_samples`: must be 'auto' or a number in \(0, 0.5\]"
    ):
        validate(EstimateConfig, {"max_samples": 0.7})
    with pytest.raises(ConfigError, match="used only with `learner: dr_learner`"):
        validate(EstimateConfig, {"final_model": "hgb"})
    cfg = SimpleNamespace(
        seed=3, estimate=EstimateConfig(learner="dr_learner", final_model="hgb", max_samples=0.3)
    )
    model = make_learner(cfg, 0.5)
    assert (model.final_model, model.max_samples, model.random_state) == ("hgb", 0.3, 3)
    cfg = SimpleNamespace(seed=0, estimate=EstimateConfig())
    assert make_learner(cfg, None).max_samples == "auto"


DEMO = Path(__file__).resolve().parents[2] / "eocausal" / "configs" / "demo.yaml"


def test_pipeline_records_the_resolved_learner_and_empty_intervals(tmp_path):
    """A small run with the DR learner's gradient-boosting final stage: results.json says
    what was chosen and why, and cate.csv leaves the interval columns empty."""
    from eocausal.config import parse_config
    from eocausal.pipeline import run_pipeline

    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(tmp_path / "run")
    data["study"]["simulate"] = {"n_units": 400, "scene_size": 512}
    data["imagery"]["scales"] = [{"name": "1km", "size_km": 1.0, "out_px": 16}]
    data["encoder"]["n_features"] = 32
    data["estimate"] = {"learner": "dr_learner", "final_model": "hgb", "n_estimators": 40}
    data["evaluate"].update(n_bootstrap=20, compare_scales=False)
    data["map"]["enabled"] = False
    res = run_pipeline(parse_config(data), progress=False).results
    settings = res["cate"]["learner_settings"]
    assert settings["name"] == "dr_learner"
    for part in ("cate_model", "ate_model"):
        assert settings[part]["final_model"] == "hgb" and settings[part]["intervals"] is False
    assert settings["cate_model"]["n_fit"] == res["cate"]["n_train"]
    assert settings["ate_model"]["n_fit"] == res["study"]["n_analysed"]
    assert "are empty" in res["cate"]["interval_note"]
    frame = pd.read_csv(tmp_path / "run" / "cate.csv")
    assert frame["expected_tau_hat_lower"].isna().all()
    assert frame["tau_hat"].notna().all()
