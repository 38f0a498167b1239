"""MOSAIKS random convolutional features: brute force, seeds, whitening invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eocausal.encode import MosaiksEncoder, build_encoder
from eocausal.errors import InputDataError, WeightsError


def _brute_force(enc: MosaiksEncoder, x: np.ndarray) -> np.ndarray:
    """Loop over patches: mean_p relu(+-(f.x_p + o) - b)."""
    w = enc.weight.double().numpy()
    o = enc.offset.double().numpy()
    k = enc.kernel_size
    _, h, wd = x.shape
    resp = []
    for r in range(h - k + 1):
        for c in range(wd - k + 1):
            patch = x[:, r : r + k, c : c + k]
            resp.append(np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2])) + o)
    resp = np.array(resp)
    pos = np.maximum(resp - enc.bias, 0).mean(0)
    neg = np.maximum(-resp - enc.bias, 0).mean(0)
    return np.concatenate([pos, neg])


def test_matches_brute_force_any_size():
    enc = MosaiksEncoder(3, n_features=16, kernel_size=3, bias=0.2, seed=4)
    rng = np.random.default_rng(0)
    for h, w in [(7, 7), (9, 12)]:
        x = rng.random((2, 3, h, w))
        got = enc(torch.tensor(x, dtype=torch.float64)).numpy()
        assert got.shape == (2, 16)
        for i in range(2):
            np.testing.assert_allclose(got[i], _brute_force(enc, x[i]), rtol=1e-10, atol=1e-12)
    assert (got > 0).any()


def test_deterministic_for_a_seed():
    x = torch.rand(4, 2, 10, 10, generator=torch.Generator().manual_seed(1))
    a = MosaiksEncoder(2, n_features=32, seed=7)
    b = build_encoder("mosaiks", in_chans=2, n_features=32, seed=7)
    c = MosaiksEncoder(2, n_features=32, seed=8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    assert not torch.allclose(a(x), c(x))
    assert (a.name, a.in_chans, a.embed_dim, a.input_size) == ("mosaiks", 2, 32, None)


def test_whitening_gives_zca_and_affine_invariant_features():
    g = torch.Generator().manual_seed(0)
    chips = torch.rand(20, 3, 12, 12, generator=g, dtype=torch.float64)
    chips[:, 1] = 0.5 * chips[:, 0] + 0.1 * chips[:, 1]  # correlated bands
    enc = MosaiksEncoder(3, n_features=24, kernel_size=3, seed=3).double()
    enc.fit_whitening(chips, n_patches=5000, eps=1e-13)
    assert enc.whitened
    # Mahalanobis inner products are invariant to invertible affine maps of the
    # patches, so per-band affine rescaling of the chips leaves features unchanged.
    scale = torch.tensor([3.0, 0.2, 10.0], dtype=torch.float64).view(1, 3, 1, 1)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).view(1, 3, 1, 1)
    enc2 = MosaiksEncoder(3, n_features=24, kernel_size=3, seed=3).double()
    enc2.fit_whitening(chips * scale + shift, n_patches=5000, eps=1e-13)
    x = chips[:4]
    torch.testing.assert_close(enc(x), enc2(x * scale + shift), rtol=1e-6, atol=1e-8)


def test_bad_arguments():
    with pytest.raises(InputDataError, match="even"):
        MosaiksEncoder(3, n_features=5)
    enc = MosaiksEncoder(3, n_features=4, kernel_size=5)
    with pytest.raises(InputDataError, match=r"expects \(B, 3, H, W\)"):
        enc(torch.rand(1, 2, 8, 8))
    with pytest.raises(InputDataError, match="smaller than the 5x5"):
        enc(torch.rand(1, 3, 4, 8))
    with pytest.raises(WeightsError, match="in_chans"):
        build_encoder("mosaiks")
