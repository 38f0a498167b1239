"""Random convolutional features (MOSAIKS), a weight-free baseline encoder.

MOSAIKS (Rolf et al. 2021) embeds an image by convolving it with K random
filters, passing the responses through a rectifier with a fixed bias in both
signs and averaging over space. No training and no downloaded weights are
involved, so it is the encoder for offline runs, quick checks and a baseline
that pretrained ViTs should beat.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eocausal.errors import InputDataError

__all__ = ["MosaiksEncoder"]


class MosaiksEncoder(nn.Module):
    """Random convolutional features (MOSAIKS) as an image encoder.

    Parameters
    ----------
    in_chans : int
        Number of input bands C.
    n_features : int, default=1024
        Output dimension D; must be even (``D / 2`` filters, two signs each).
    kernel_size : int, default=3
        Side k of the square filters.
    bias : float, default=1.0
        Rectifier threshold b (Rolf et al. use 1 on whitened patches).
    seed : int, default=0
        Seed of the filters (and of the patches drawn by :meth:`fit_whitening`).
    name : str, default="mosaiks"
        Name recorded in the embeddings' metadata.

    Attributes
    ----------
    weight : Tensor of shape (D / 2, C, k, k)
        Effective filters applied to the raw chips.
    offset : Tensor of shape (D / 2,)
        Effective additive term of each filter (non-zero after whitening).
    whitened : bool
        Whether :meth:`fit_whitening` replaced the Gaussian filters.

    Notes
    -----
    For filter :math:`f_j` and a k x k patch :math:`x_p` of the chip,

    .. math::

        \\phi_j(x) = \\frac{1}{P}\\sum_p \\max(0, f_j^\\top x_p + o_j - b), \\qquad
        \\phi_{j + D/2}(x) = \\frac{1}{P}\\sum_p \\max(0, -f_j^\\top x_p - o_j - b)

    over the P valid patch positions ("valid" convolution, so any H, W >= k works).
    By default :math:`f_j \\sim N(0, I / (C k^2))` and :math:`o_j = 0`. After
    :meth:`fit_whitening` the filters are random patches of the chips,
    ZCA-whitened as in Rolf et al.: with patch mean :math:`\\mu` and ZCA matrix
    :math:`W`, the response :math:`(W g_j)^\\top W (x_p - \\mu)` is computed as one
    convolution with :math:`f_j = W^\\top W g_j` and :math:`o_j = -f_j^\\top \\mu`.

    This is a baseline: it captures local colour and texture statistics, not
    objects or layout.

    References
    ----------
    Rolf, E. et al. (2021). A generalizable and accessible approach to machine
    learning with global satellite imagery. Nature Communications 12, 4392.
    """

    def __init__(
        self,
        in_chans: int,
        *,
        n_features: int = 1024,
        kernel_size: int = 3,
        bias: float = 1.0,
        seed: int = 0,
        name: str = "mosaiks",
    ) -> None:
        super().__init__()
        if int(in_chans) < 1:
            raise InputDataError(f"`in_chans` must be >= 1; got {in_chans}.")
        if int(n_features) < 2 or int(n_features) % 2:
            raise InputDataError(f"`n_features` must be an even number >= 2; got {n_features}.")
        if int(kernel_size) < 1:
            raise InputDataError(f"`kernel_size` must be >= 1; got {kernel_size}.")
        self.name = name
        self.in_chans = int(in_chans)
        self.embed_dim = int(n_features)
        self.kernel_size = int(kernel_size)
        self.bias = float(bias)
        self.seed = int(seed)
        self.input_size = None
        self.whitened = False
        gen = torch.Generator().manual_seed(self.seed)
        k = self.kernel_size
        fan_in = self.in_chans * k * k
        weight = torch.randn(self.embed_dim // 2, self.in_chans, k, k, generator=gen)
        self.register_buffer("weight", weight / np.sqrt(fan_in))
        self.register_buffer("offset", torch.zeros(self.embed_dim // 2))

    @property
    def weights_sha256(self) -> str:
        """sha256 of the filters and offsets: identifies the exact features computed."""
        h = hashlib.sha256()
        h.update(self.weight.detach().cpu().numpy().astype("<f4").tobytes())
        h.update(self.offset.detach().cpu().numpy().astype("<f4").tobytes())
        h.update(np.float32(self.bias).tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def fit_whitening(
        self, chips: torch.Tensor | np.ndarray, *, n_patches: int = 20000, eps: float = 1e-2
    ) -> MosaiksEncoder:
        """Replace the Gaussian filters by ZCA-whitened random patches of ``chips``.

        Parameters
        ----------
        chips : Tensor or ndarray of shape (N, C, H, W)
            Sample of chips (training units), H, W >= kernel_size.
        n_patches : int, default=20000
            Patches drawn (seeded) to estimate the patch mean and covariance.
        eps : float, default=1e-2
            Ridge added to the covariance eigenvalues before inversion.

        Returns
        -------
        self
        """
        x = torch.as_tensor(np.asarray(chips), dtype=torch.float64)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputDataError(
                f"`chips` must have shape (N, {self.in_chans}, H, W); got {tuple(x.shape)}."
            )
        n, _, h, w = x.shape
        k = self.kernel_size
        if h < k or w < k:
            raise InputDataError(f"Chips of {h}x{w} px are smaller than the {k}x{k} filters.")
        n_filters = self.embed_dim // 2
        gen = torch.Generator().manual_seed(self.seed + 1)
        total = n_patches + n_filters
        img = torch.randint(0, n, (total,), generator=gen)
        top = torch.randint(0, h - k + 1, (total,), generator=gen)
        left = torch.randint(0, w - k + 1, (total,), generator=gen)
        rows = top[:, None] + torch.arange(k)[None, :]  # (total, k)
        cols = left[:, None] + torch.arange(k)[None, :]
        patches = x[
            img[:, None, None, None],
            torch.arange(self.in_chans)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]  # (total, C, k, k)
        patches = patches.reshape(total, -1)
        stats, filt = patches[:n_patches], patches[n_patches:]
        mu = stats.mean(0)
        cov = torch.cov((stats - mu).T)
        evals, evecs = torch.linalg.eigh(cov)
        zca = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp_min(0) + eps)) @ evecs.T
        g = (filt - mu) @ zca.T  # whitened filter patches, (n_filters, C k k)
        f = g @ zca  # response on raw x_p: g^T W (x_p - mu) = (W^T g)^T x_p - (W^T g)^T mu
        self.weight.copy_(f.reshape(n_filters, self.in_chans, k, k).to(self.weight.dtype))
        self.offset.copy_((-(f @ mu)).to(self.offset.dtype))
        self.whitened = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of shape (B, n_features) for chips of shape (B, C, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise InputDataError(
                f"MosaiksEncoder expects (B, {self.in_chans}, H, W); got {tuple(x.shape)}."
            )
        if x.shape[-1] < self.kernel_size or x.shape[-2] < self.kernel_size:
            raise InputDataError(
                f"Chips of {x.shape[-2]}x{x.shape[-1]} px are smaller than the "
                f"{self.kernel_size}x{self.kernel_size} filters."
            )
        # one convolution with filters (f, -f) and offsets (o - b, -o - b) gives both signs;
        # the rectifier then runs in place: a third of the memory traffic of z, z - b, -z - b
        weight = self.weight.to(x.dtype)
        offset = self.offset.to(x.dtype)
        weight = torch.cat([weight, -weight])
        offset = torch.cat([offset - self.bias, -offset - self.bias])
        return F.conv2d(x, weight, bias=offset).relu_().mean(dim=(2, 3))
