"""Random convolutional features (MOSAIKS), a weight-free baseline encoder.

MOSAIKS (Rolf et al. 2021) embeds an image by convolving it with K random
filters, passing the responses through a rectifier with a fixed bias in both
signs and averaging over space. No training and no downloaded weights are
involved, so it is the encoder for offline runs, quick checks and a baseline
that pretrained ViTs should beat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

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
    patch_mean_ : Tensor of shape (C k^2,), float64
        Patch mean :math:`\\mu` estimated by :meth:`fit_whitening` (set by it).
    whitening_ : Tensor of shape (C k^2, C k^2), float64
        ZCA matrix :math:`W` estimated by :meth:`fit_whitening` (set by it).

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
        self,
        chips: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
        *,
        n_chips: int | None = None,
        n_patches: int = 20000,
        eps: float = 1e-2,
        relative_eps: bool = False,
    ) -> MosaiksEncoder:
        """Replace the Gaussian filters by ZCA-whitened random patches of ``chips``.

        The chips may come as one tensor or as an iterable of batches that is
        read once, one batch at a time: memory is bounded by one batch plus the
        sampled patches, never by the whole sample. The result does not depend
        on how the chips are split into batches.

        Parameters
        ----------
        chips : Tensor or ndarray of shape (N, C, H, W), or iterable of them
            Sample of chips (training units), H, W >= kernel_size; batches of
            shape (B, C, H, W) must all have the same C, H, W, on any device and
            in any float dtype (patches are converted to float64).
        n_chips : int, optional
            Total number of chips N in ``chips``. Required when ``chips`` is an
            iterator or generator of batches: the patch positions are drawn
            before the first batch is read, exactly as for one tensor. Counted
            from the batches of a list or tuple, and from the tensor itself.
        n_patches : int, default=20000
            Patches drawn (seeded, uniformly over chips and positions, with
            replacement) to estimate the patch mean and covariance.
        eps : float, default=1e-2
            Ridge added to the covariance eigenvalues before inversion.
        relative_eps : bool, default=False
            If True the ridge is ``eps`` times the variance of all pixel values
            of the chips (bands pooled, denominator N - 1), accumulated over the
            batches, so that it is on the scale of the chips whatever their units.

        Returns
        -------
        self

        Notes
        -----
        With :math:`y_s = x_s - c` for the sampled patch vectors :math:`x_s`
        (:math:`s = 1..S`, ``S = n_patches``) and a fixed shift :math:`c` (the
        mean of the first batch's sample, for numerical accuracy), only the sums
        :math:`\\sum_s y_s` and :math:`\\sum_s y_s y_s^\\top` are accumulated, in
        float64:

        .. math::

            \\mu = c + \\frac{1}{S}\\sum_s y_s, \\qquad
            \\Sigma = \\frac{1}{S - 1}\\Big(\\sum_s y_s y_s^\\top
            - \\frac{1}{S}\\sum_s y_s \\sum_s y_s^\\top\\Big), \\qquad
            W = V (\\Lambda + \\epsilon I)^{-1/2} V^\\top

        with :math:`\\Sigma = V \\Lambda V^\\top`. The filters are ``n_features / 2``
        further patches drawn the same way.
        """
        batches, total_chips = _chip_batches(chips, n_chips, self.in_chans)
        if (
            isinstance(n_patches, bool)
            or not isinstance(n_patches, (int, np.integer))
            or n_patches < 2
        ):
            raise InputDataError(
                f"`n_patches` must be an integer >= 2 (patches that estimate the covariance); "
                f"got {n_patches!r}."
            )
        if not np.isfinite(eps) or eps <= 0:
            raise InputDataError(
                f"`eps` must be a finite number > 0 (the ridge on the covariance eigenvalues); "
                f"got {eps!r}."
            )
        k, c = self.kernel_size, self.in_chans
        n_patches = int(n_patches)
        n_filters = self.embed_dim // 2
        dim = c * k * k
        filt = torch.empty(n_filters, dim, dtype=torch.float64)
        sum_y = torch.zeros(dim, dtype=torch.float64)
        sum_yy = torch.zeros(dim, dim, dtype=torch.float64)
        shift = None
        pixels = _PixelMoments() if relative_eps else None
        draws = first_shape = None
        seen = 0
        for i, batch in enumerate(batches):
            x = torch.as_tensor(batch)
            if x.ndim != 4 or x.shape[1] != c:
                raise InputDataError(
                    f"`chips` must have shape (N, {c}, H, W) (or be batches of shape "
                    f"(B, {c}, H, W)); got {tuple(x.shape)}."
                )
            if first_shape is None:
                first_shape = tuple(x.shape[1:])
                h, w = first_shape[1:]
                if h < k or w < k:
                    raise InputDataError(
                        f"Chips of {h}x{w} px are smaller than the {k}x{k} filters."
                    )
                draws = _PatchDraws(self.seed + 1, total_chips, h, w, k, n_patches + n_filters)
            elif tuple(x.shape[1:]) != first_shape:
                raise InputDataError(
                    f"All chip batches must have the same shape (C, H, W): batch {i} has "
                    f"{tuple(x.shape[1:])}, the first had {first_shape}; resize or crop the "
                    "chips to one size (e.g. whiten on the scales of one output size)."
                )
            if seen + x.shape[0] > total_chips:
                raise InputDataError(
                    f"The batches hold more than n_chips={total_chips} chips; pass the number "
                    "of chips they hold as `n_chips`."
                )
            which, patches = draws.patches(x, seen)
            stat = which < n_patches
            ys = patches[stat]
            if ys.shape[0]:
                if shift is None:
                    shift = ys.mean(0)
                ys = ys - shift
                sum_y += ys.sum(0)
                sum_yy += ys.T @ ys
            filt[which[~stat] - n_patches] = patches[~stat]
            if pixels is not None:
                pixels.update(x)
            seen += x.shape[0]
        if seen != total_chips:
            raise InputDataError(
                f"n_chips={total_chips} but the batches held {seen} chips; pass the number "
                "of chips they hold as `n_chips`."
            )
        if pixels is not None:
            eps = eps * pixels.variance()
        mu = shift + sum_y / n_patches
        cov = (sum_yy - torch.outer(sum_y, sum_y) / n_patches) / (n_patches - 1)
        evals, evecs = torch.linalg.eigh(cov)
        zca = evecs @ torch.diag(1.0 / torch.sqrt(evals.clamp_min(0) + eps)) @ evecs.T
        g = (filt - mu) @ zca.T  # whitened filter patches, (n_filters, C k k)
        f = g @ zca  # response on raw x_p: g^T W (x_p - mu) = (W^T g)^T x_p - (W^T g)^T mu
        self.weight.copy_(f.reshape(n_filters, c, k, k).to(self.weight.dtype))
        self.offset.copy_((-(f @ mu)).to(self.offset.dtype))
        self.patch_mean_ = mu
        self.whitening_ = zca
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


def _chip_batches(chips, n_chips: int | None, in_chans: int) -> tuple[Iterator, int]:
    """``chips`` as an iterator of batches and the total number of chips it holds."""
    if n_chips is not None and (
        isinstance(n_chips, bool) or not isinstance(n_chips, (int, np.integer)) or n_chips < 1
    ):
        raise InputDataError(f"`n_chips` must be an integer >= 1; got {n_chips!r}.")
    if isinstance(chips, (torch.Tensor, np.ndarray)):
        if chips.ndim != 4 or chips.shape[1] != in_chans:
            raise InputDataError(
                f"`chips` must have shape (N, {in_chans}, H, W); got {tuple(chips.shape)}."
            )
        if n_chips is not None and n_chips != chips.shape[0]:
            raise InputDataError(
                f"n_chips={n_chips} but `chips` holds {chips.shape[0]}; drop `n_chips` "
                "(it is only needed for an iterator of batches)."
            )
        chips = [chips]
    if isinstance(chips, (list, tuple)):
        counted = 0
        for batch in chips:
            shape = tuple(getattr(batch, "shape", np.shape(batch)))
            if len(shape) != 4:
                raise InputDataError(
                    f"`chips` must have shape (N, {in_chans}, H, W) (or be batches of shape "
                    f"(B, {in_chans}, H, W)); got {shape}."
                )
            counted += shape[0]
        if counted < 1:
            raise InputDataError("`chips` holds no chips; give at least one chip to whiten on.")
        n_chips = counted if n_chips is None else n_chips
    elif n_chips is None:
        raise InputDataError(
            "`n_chips` is required when `chips` is an iterator of batches: the patch positions "
            "are drawn before the first batch is read, so that the whitening does not depend on "
            "the batch sizes; pass the total number of chips the batches hold."
        )
    return iter(chips), int(n_chips)


class _PatchDraws:
    """Seeded patch positions over N chips, drawn up front as one tensor's would be.

    Draw ``s`` takes the k x k patch of chip ``img[s]`` at row ``top[s]`` and column
    ``left[s]``; a batch holding chips ``start .. start + B - 1`` serves the draws that
    fall in it, so any split of the chips into batches yields the same patches.
    """

    def __init__(self, seed: int, n: int, h: int, w: int, k: int, total: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        img = torch.randint(0, n, (total,), generator=gen)
        self.top = torch.randint(0, h - k + 1, (total,), generator=gen)
        self.left = torch.randint(0, w - k + 1, (total,), generator=gen)
        self.order = torch.argsort(img, stable=True)
        self.img_sorted = img[self.order]
        self.k = k

    def patches(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices of the draws inside ``x`` and their patch vectors (float64, on the CPU)."""
        bounds = torch.tensor([start, start + x.shape[0]])
        lo, hi = torch.searchsorted(self.img_sorted, bounds).tolist()
        which = self.order[lo:hi]
        k, dev = self.k, x.device
        rows = (self.top[which, None] + torch.arange(k)[None, :]).to(dev)  # (m, k)
        cols = (self.left[which, None] + torch.arange(k)[None, :]).to(dev)
        local = (self.img_sorted[lo:hi] - start).to(dev)
        patches = x[
            local[:, None, None, None],
            torch.arange(x.shape[1], device=dev)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]  # (m, C, k, k): a copy of the drawn pixels only
        return which, patches.to("cpu", torch.float64).flatten(1)


class _PixelMoments:
    """Count, mean and sum of squared deviations of all pixel values, merged chip by chip.

    Each chip's moments are computed in float64 and merged with Chan et al.'s
    pairwise update, which stays accurate when the mean is large against the spread.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, x: torch.Tensor) -> None:
        for chip in x:
            var, mean = torch.var_mean(chip.to(torch.float64), correction=0)
            n, mean, m2 = chip.numel(), float(mean), float(var) * chip.numel()
            total = self.count + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta**2 * self.count * n / total
            self.count = total

    def variance(self) -> float:
        if self.count < 2:
            raise InputDataError(
                "`relative_eps=True` needs at least 2 pixel values to estimate their variance."
            )
        return self.m2 / (self.count - 1)
