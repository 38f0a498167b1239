"""MOSAIKS random convolutional features: brute force, seeds, whitening invariance."""

from __future__ import annotations

import weakref

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
    with pytest.raises(WeightsError, match="'mosaiks' has no weights file.*drop `weights_path`"):
        build_encoder("mosaiks", in_chans=3, weights_path="filters.pth")
    with pytest.raises(WeightsError, match="'mosaiks' has no weights file.*drop `sha256`"):
        build_encoder("mosaiks", in_chans=3, sha256="ab" * 32)


# ------------------------------------------------------------- whitening in batches


def _correlated_chips(n=20, seed=0):
    """float64 chips whose values float32 holds exactly."""
    g = torch.Generator().manual_seed(seed)
    chips = torch.rand(n, 3, 12, 12, generator=g)
    chips[:, 1] = 0.5 * chips[:, 0] + 0.1 * chips[:, 1]
    return chips.double()


# fit_whitening of one (6, 2, 9, 11) tensor before it accepted batches (see the test)
FROZEN_WEIGHT = [
    -0.6581987315093948, 6.237802090799425, -0.6052504356673805, 4.343729324260722,
    -6.340333827373786, -9.342343399175087, -0.21266473415262543, 0.9298703983990961,
    2.1949172509048536, 6.2642911814653095, 6.764814567335618, -9.020421508883713,
    3.8272561429637455, -1.825531739822472, -3.9542173489364063, 12.53246777947218,
]  # fmt: skip
FROZEN_OFFSET = [2.769087581089485, -8.666507080578546]


def test_whitening_of_one_tensor_has_not_changed():
    g = torch.Generator().manual_seed(5)
    chips = torch.rand(6, 2, 9, 11, generator=g, dtype=torch.float64)
    chips[:, 1] = 0.7 * chips[:, 0] + 0.3 * chips[:, 1]
    enc = MosaiksEncoder(2, n_features=4, kernel_size=2, seed=11).double()
    enc.fit_whitening(chips, n_patches=300, eps=1e-3)
    np.testing.assert_allclose(enc.weight.flatten().numpy(), FROZEN_WEIGHT, rtol=1e-10)
    np.testing.assert_allclose(enc.offset.numpy(), FROZEN_OFFSET, rtol=1e-10)


@pytest.mark.parametrize("sizes", [(20,), (7, 13), (1,) * 20, (6, 0, 9, 5)])
def test_batches_give_the_whitening_of_one_tensor(sizes):
    chips = _correlated_chips()
    one = MosaiksEncoder(3, n_features=24, seed=3).double()
    one.fit_whitening(chips, n_patches=4000, eps=1e-4)
    # float32 batches from a generator: the same pixel values, read one batch at a time
    batched = MosaiksEncoder(3, n_features=24, seed=3).double()
    stream = (part for part in torch.split(chips.float(), sizes))
    batched.fit_whitening(stream, n_chips=20, n_patches=4000, eps=1e-4)
    assert batched.whitened and batched.whitening_.shape == (27, 27)
    torch.testing.assert_close(batched.whitening_, one.whitening_, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(batched.patch_mean_, one.patch_mean_, rtol=1e-12, atol=0)
    torch.testing.assert_close(batched.weight, one.weight, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(batched.offset, one.offset, rtol=1e-9, atol=1e-9)
    # a list of numpy batches needs no n_chips
    listed = MosaiksEncoder(3, n_features=24, seed=3).double()
    listed.fit_whitening([p.numpy() for p in torch.split(chips, sizes)], n_patches=4000, eps=1e-4)
    torch.testing.assert_close(listed.whitening_, one.whitening_, rtol=1e-10, atol=1e-10)
    # W = (Sigma + eps I)^(-1/2) for the covariance Sigma of the patches (4,000 drawn of
    # 2,000 distinct ones: a few percent of sampling error against all of them)
    patches = torch.nn.functional.unfold(chips, 3).transpose(1, 2).reshape(-1, 27)
    w_inv = torch.linalg.inv(one.whitening_)
    sigma = w_inv @ w_inv - 1e-4 * torch.eye(27, dtype=torch.float64)
    cov = torch.cov(patches.T)
    assert torch.dist(sigma, cov) / cov.norm() < 0.15
    mean = patches.mean(0)
    assert torch.dist(one.patch_mean_, mean) / mean.norm() < 0.03


def test_batches_are_read_one_at_a_time():
    alive = []

    def stream():
        g = torch.Generator().manual_seed(2)
        for i in range(6):
            if i >= 2:  # the consumer holds batch i - 1 while asking for batch i
                assert alive[i - 2]() is None, f"batch {i - 2} is still referenced"
            batch = torch.rand(4, 2, 10, 10, generator=g)
            alive.append(weakref.ref(batch))
            yield batch

    enc = MosaiksEncoder(2, n_features=16, seed=0)
    enc.fit_whitening(stream(), n_chips=24, n_patches=500)
    assert enc.whitened and len(alive) == 6


def test_relative_eps_is_a_fraction_of_the_pixel_variance():
    chips = 5000.0 + 300.0 * _correlated_chips(12, seed=4)  # raw digital numbers
    a = MosaiksEncoder(3, n_features=8, seed=1).double()
    a.fit_whitening(iter(torch.split(chips, 5)), n_chips=12, eps=0.01, relative_eps=True)
    b = MosaiksEncoder(3, n_features=8, seed=1).double()
    b.fit_whitening(chips, eps=0.01 * float(chips.var()))
    torch.testing.assert_close(a.whitening_, b.whitening_, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-9, atol=1e-12)


def test_batch_errors_name_the_fix_and_leave_the_filters():
    chips = torch.rand(10, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    enc = MosaiksEncoder(2, n_features=8)
    before = enc.weights_sha256
    with pytest.raises(InputDataError, match="`n_chips` is required"):
        enc.fit_whitening(iter([chips]))
    with pytest.raises(InputDataError, match="n_chips=12 but the batches held 10 chips"):
        enc.fit_whitening(iter(torch.split(chips, 5)), n_chips=12)
    with pytest.raises(InputDataError, match="more than n_chips=8"):
        enc.fit_whitening(iter(torch.split(chips, 5)), n_chips=8)
    with pytest.raises(InputDataError, match=r"batch 1 has \(2, 9, 9\).*first had \(2, 8, 8\)"):
        enc.fit_whitening([chips, torch.rand(3, 2, 9, 9)])
    with pytest.raises(InputDataError, match=r"shape \(N, 2, H, W\).*got \(3, 3, 8, 8\)"):
        enc.fit_whitening([torch.rand(3, 3, 8, 8)])
    with pytest.raises(InputDataError, match="n_chips=4 but `chips` holds 10"):
        enc.fit_whitening(chips, n_chips=4)
    with pytest.raises(InputDataError, match="`n_patches` must be an integer >= 2"):
        enc.fit_whitening(chips, n_patches=1)
    with pytest.raises(InputDataError, match="`eps` must be a finite number > 0"):
        enc.fit_whitening(chips, eps=0.0)
    assert not enc.whitened and enc.weights_sha256 == before
