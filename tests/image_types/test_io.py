"""Saving and loading: identical predictions after a round trip; pickled objects refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from eocausal.errors import EstimationError
from eocausal.image_types import ImageTypeModel
from eocausal.image_types.io import FORMAT

from .dgp import simulate_embeddings


def test_save_load_round_trip(chip_fit, tmp_path):
    model, (chips, *_rest) = chip_fit
    path = model.save(tmp_path / "types" / "model.pt")
    assert not list(path.parent.glob(".*"))  # no temporary left behind
    loaded = ImageTypeModel.load(path)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(chips[:50]), model.predict_proba(chips[:50]))
    np.testing.assert_array_equal(loaded.salience(chips[:5], 1), model.salience(chips[:5], 1))
    np.testing.assert_array_equal(loaded.effect_, model.effect_)
    np.testing.assert_array_equal(loaded.type_effects_.to_numpy(), model.type_effects_.to_numpy())
    np.testing.assert_array_equal(loaded.history_, model.history_)
    np.testing.assert_array_equal(loaded.image_scale_, model.image_scale_)
    assert loaded.ate_ == model.ate_
    assert loaded.result().to_dict() == model.result().to_dict()


def test_round_trip_with_covariates_weights_and_unit_ids(tmp_path):
    emb, cov, T, Y, _ = simulate_embeddings(200, seed=2)
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=200)
    ids = [f"u{i}" for i in range(200)]
    params = {"n_types": 3, "hidden": 8, "epochs": 3, "random_state": 4}
    model = ImageTypeModel(**params).fit(emb, T, Y, covariates=cov, sample_weight=w, unit_ids=ids)
    loaded = ImageTypeModel.load(model.save(tmp_path / "emb.pt"))
    np.testing.assert_array_equal(loaded.effect(emb, cov), model.effect(emb, cov))
    np.testing.assert_array_equal(loaded.cov_center_, model.cov_center_)
    np.testing.assert_array_equal(loaded.cov_scale_, model.cov_scale_)
    assert list(loaded.unit_ids_) == ids
    assert (loaded.n_covariates_, loaded.input_shape_) == (2, (6,))
    assert loaded.ate_ == model.ate_ == pytest.approx(np.average(model.effect_, weights=w))


def test_missing_foreign_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(EstimationError, match="No image-type model"):
        ImageTypeModel.load(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(EstimationError, match="not an eocausal image-type model"):
        ImageTypeModel.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EstimationError, match="could not be read"):
        ImageTypeModel.load(tmp_path / "junk.pt")


class _RunsCodeWhenUnpickled:
    """Unpickling this object creates a folder: the attack a pickle file can carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_objects_are_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "code-ran"
    state = {"format": FORMAT, "payload": _RunsCodeWhenUnpickled(str(marker))}
    path = tmp_path / "model.pt"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    with pytest.raises(EstimationError, match="could not be read.*refuses to load") as info:
        ImageTypeModel.load(path)
    assert "weights_only=False" not in str(info.value)  # never advise running the file's code
    assert not marker.exists()
    # control: the file is armed, an unrestricted unpickler runs its code
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.is_dir()
