"""Training loop, networks and scaling: pinned numbers, equivalent code paths, relabelling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.image_types import ImageTypeModel
from eocausal.image_types import training as training_module
from eocausal.image_types.networks import TypeNet
from eocausal.image_types.tensors import ImageScaling
from eocausal.image_types.training import TrainingSettings, train_type_net

from .dgp import simulate_chips


def _pinned_fits():
    """The two small fits whose numbers were recorded before image_types became a package."""
    chips, T, Y, *_ = simulate_chips(120, seed=1)
    new = simulate_chips(10, seed=2)[0]
    chip_model = ImageTypeModel(hidden=8, batch_size=32, epochs=4, lr=1e-2, random_state=3)
    chip_model.fit(chips, T, Y)
    rng = np.random.default_rng(9)
    emb = rng.normal(size=(150, 5)).astype(np.float32)
    cov = rng.normal(size=(150, 2))
    T2 = rng.integers(0, 2, 150)
    Y2 = cov[:, 0] + T2 * (emb[:, 0] > 0) * 2 + rng.normal(size=150)
    w = rng.uniform(0.5, 2, 150)
    emb_model = ImageTypeModel(
        n_types=3, hidden=8, batch_size=50, epochs=4, random_state=11, prior_sd=1.5
    ).fit(emb, T2, Y2, covariates=cov, sample_weight=w)
    return chip_model, new, emb_model, emb[:10], cov[:10]


def test_numbers_have_not_changed():
    """Same seed, same numbers as the single-module implementation (recorded with 1 thread)."""
    chip_model, new, emb_model, emb_new, cov_new = _pinned_fits()
    close = {"rtol": 0, "atol": 1e-6}
    assert chip_model.seed_ == 1742692731 and emb_model.seed_ == 287335974

    np.testing.assert_allclose(
        chip_model.type_effects_["mean"], [0.743810888, 1.587005647], **close
    )
    np.testing.assert_allclose(chip_model.type_effects_["sd"], [0.104074342, 0.107529122], **close)
    np.testing.assert_allclose(
        chip_model.type_probabilities_[:3],
        [[0.863585591, 0.136414364], [0.569754720, 0.430245221], [0.548025787, 0.451974213]],
        **close,
    )
    np.testing.assert_allclose(
        chip_model.history_, [1.316712173, 1.280238048, 1.221580919, 1.185811679], **close
    )
    assert chip_model.ate_ == pytest.approx(0.995608261, abs=1e-6)
    assert chip_model.noise_sd_ == pytest.approx(0.851903130, abs=1e-6)
    np.testing.assert_allclose(
        chip_model.effect(new)[:3], [1.124773768, 0.861891263, 0.839771977], **close
    )
    salience = chip_model.salience(new, 1).astype(np.float64).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(salience[:3], [0.277894316, 2.568890514, 3.641274276], atol=1e-5)

    np.testing.assert_allclose(
        emb_model.type_effects_["mean"], [0.307844422, 1.056953760, 1.798453923], **close
    )
    np.testing.assert_allclose(
        emb_model.type_effects_["share"], [0.310540528, 0.284970908, 0.404488565], **close
    )
    np.testing.assert_allclose(
        emb_model.type_probabilities_[0], [0.283987522, 0.295388371, 0.420624137], **close
    )
    np.testing.assert_allclose(
        emb_model.history_, [1.503911575, 1.490327636, 1.457559745, 1.445470850], **close
    )
    assert emb_model.ate_ == pytest.approx(1.124253289, abs=1e-6)
    assert emb_model.noise_sd_ == pytest.approx(1.719928318, abs=1e-6)
    np.testing.assert_allclose(
        emb_model.effect(emb_new, cov_new)[:3], [1.156108953, 1.134639050, 1.143355664], **close
    )


def _train(chips, T, Y, *, random_state):
    scaling = ImageScaling.fit(chips)
    y_std = (Y - Y.mean()) / Y.std()
    settings = TrainingSettings(
        epochs=2, batch_size=32, lr=1e-2, weight_decay=1e-4, n_mc=2, temperature=1.0
    )
    return train_type_net(
        chips,
        T,
        y_std,
        np.ones(len(Y)),
        covariates=None,
        scaling=scaling,
        n_types=2,
        hidden=4,
        prior_mean=0.5,
        prior_sd=1.0,
        settings=settings,
        random_state=random_state,
        device=torch.device("cpu"),
    )


def test_per_batch_scaling_gives_the_same_network(monkeypatch):
    """Inputs too large to keep on the device are standardised per batch: same numbers."""
    chips, T, Y, *_ = simulate_chips(96, seed=6)
    resident = _train(chips, T, Y, random_state=2)
    monkeypatch.setattr(training_module, "_RESIDENT_BYTES", 0)
    per_batch = _train(chips, T, Y, random_state=2)
    assert resident.seed == per_batch.seed
    np.testing.assert_array_equal(resident.history, per_batch.history)
    for (name, a), (_, b) in zip(
        resident.net.state_dict().items(), per_batch.net.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not resident.net.training  # returned in eval mode
    assert np.all(np.diff(resident.net.tau_mean.detach().numpy()) >= 0)


def test_sorting_types_permutes_assignments_and_keeps_effects():
    torch.manual_seed(0)
    net = TypeNet("embeddings", 4, 0, 6, 3, tau_init=np.array([2.0, -1.0, 0.5]), tau_sd_init=0.3)
    with torch.no_grad():
        net.tau_rho.copy_(torch.tensor([0.1, 0.2, 0.3]))
    m = torch.randn(20, 4)
    with torch.no_grad():
        p_before = torch.softmax(net.logits(m), dim=1).numpy()
        sd_before = net.tau_sd().numpy()
        effect_before = p_before @ net.tau_mean.numpy()
        net.sort_types_by_effect()
        p_after = torch.softmax(net.logits(m), dim=1).numpy()
    order = [1, 2, 0]
    np.testing.assert_array_equal(net.tau_mean.detach().numpy(), [-1.0, 0.5, 2.0])
    np.testing.assert_allclose(net.tau_sd().detach().numpy(), sd_before[order], rtol=1e-7)
    np.testing.assert_allclose(p_after, p_before[:, order], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(p_after @ net.tau_mean.detach().numpy(), effect_before, atol=1e-6)


def test_image_scaling_standardises_each_channel():
    rng = np.random.default_rng(0)
    chips = (3.0 + 2.0 * rng.normal(size=(50, 3, 4, 4))).astype(np.float32)
    chips[:, 1] = 7.0  # constant channel: scale 1, centred only
    scaling = ImageScaling.fit(chips)
    assert scaling.center.shape == (3, 1, 1) and scaling.center.dtype == np.float32
    z = scaling.transform(chips, torch.device("cpu")).numpy()
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), [1.0, 0.0, 1.0], atol=1e-5)
    assert scaling.scale[1, 0, 0] == 1.0
    emb = rng.normal(size=(30, 5)).astype(np.float32)
    assert ImageScaling.fit(emb).scale.shape == (5,)
    # gradients per standardised unit become gradients per raw unit: divide by the scale
    grad = torch.ones(2, 3, 4, 4)
    np.testing.assert_allclose(
        scaling.to_input_units(grad)[0, :, 0, 0], 1.0 / scaling.scale[:, 0, 0]
    )
