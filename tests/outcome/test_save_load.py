"""save / load: identical predictions and attributes; pickled files refused."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from eocausal.errors import InputDataError, NotFittedError
from eocausal.outcome import OutcomeModel


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(200, 4))
    y = np.abs(X[:, 0]) + X[:, 1] + 0.5 * rng.normal(size=200)
    return X, y, (np.arange(200) // 5).astype(str), rng.normal(size=(500, 4))


@pytest.mark.parametrize("name", ["ridge", "hist_gradient_boosting", "mlp"])
def test_round_trip_gives_identical_predictions_and_attributes(tmp_path, data, name):
    X, y, groups, X_new = data
    model = OutcomeModel(model=name, n_folds=3, random_state=2).fit(X, y, groups=groups)
    path = model.save(tmp_path / "outcome_model.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["outcome_model.npz"]  # no temporaries left
    loaded = OutcomeModel.load(path)
    assert loaded.get_params() == model.get_params()
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))
    assert np.array_equal(loaded.oof_prediction_, model.oof_prediction_)
    assert np.array_equal(loaded.fold_, model.fold_)
    assert np.array_equal(loaded.is_calibration_, model.is_calibration_)
    assert loaded.n_features_in_ == 4
    pd.testing.assert_frame_equal(loaded.metrics_, model.metrics_)
    pd.testing.assert_frame_equal(loaded.calibration_table_, model.calibration_table_)
    if name == "ridge":
        assert loaded.alpha_ == model.alpha_


def test_save_without_npz_suffix_and_ridge_grid_kept(tmp_path, data):
    X, y, groups, X_new = data
    model = OutcomeModel(alphas=[0.5, 5.0, 50.0], random_state=0).fit(X, y, groups=groups)
    loaded = OutcomeModel.load(model.save(tmp_path / "model"))
    assert loaded.alphas == [0.5, 5.0, 50.0]
    assert np.array_equal(loaded.predict(X_new), model.predict(X_new))


def test_pickled_files_are_refused(tmp_path, data):
    X, y, groups, _ = data
    model = OutcomeModel(random_state=0).fit(X, y, groups=groups)
    pickled = tmp_path / "model.npz"
    pickled.write_bytes(pickle.dumps(model))
    with pytest.raises(InputDataError, match="never loads pickled objects"):
        OutcomeModel.load(pickled)
    # an archive with an object array inside is refused too
    sneaky = tmp_path / "sneaky.npz"
    with open(sneaky, "wb") as f:
        np.savez(f, **{"meta.json": np.array([{"format": "x"}], dtype=object)})
    with pytest.raises(InputDataError, match="never loads pickled objects"):
        OutcomeModel.load(sneaky)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(InputDataError, match="not an eocausal OutcomeModel file"):
        OutcomeModel.load(other)


def test_unfitted_model_cannot_save_or_predict(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        OutcomeModel().save(tmp_path / "m.npz")
    with pytest.raises(NotFittedError):
        OutcomeModel().predict(np.zeros((2, 3)))
