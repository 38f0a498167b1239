"""The numpy-to-torch boundary: input standardisation and seeded torch random streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["PREDICT_BATCH", "ImageScaling", "seeded_torch"]

PREDICT_BATCH = 512
"""Units per forward pass when scoring (probabilities, salience)."""


@dataclass(frozen=True)
class ImageScaling:
    """Per-channel (chips) or per-column (embeddings) standardisation of the inputs.

    .. math::

        \\tilde M = (M - c) / s

    with c the mean and s the sd (1 where the sd is 0) over the training
    units (and, for chips, over pixels).

    Attributes
    ----------
    center, scale : ndarray of shape (C, 1, 1) or (D,), float32
    """

    center: np.ndarray
    scale: np.ndarray
    _center_t: torch.Tensor = field(init=False, repr=False, compare=False)
    _scale_t: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        center = np.asarray(self.center, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "_center_t", torch.from_numpy(center))
        object.__setattr__(self, "_scale_t", torch.from_numpy(scale))

    @classmethod
    def fit(cls, images: np.ndarray) -> ImageScaling:
        """Fit on images of shape (n, C, H, W) or (n, D) (float64 accumulation)."""
        axes = (0, 2, 3) if images.ndim == 4 else (0,)
        center = images.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
        scale = images.std(axis=axes, keepdims=True, dtype=np.float64)[0]
        return cls(center, np.where(scale > 0, scale, 1.0))

    def transform(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """Standardised float32 tensor of ``images`` on ``device``."""
        t = torch.tensor(images, dtype=torch.float32)
        return ((t - self._center_t) / self._scale_t).to(device)

    def to_input_units(self, grad: torch.Tensor) -> np.ndarray:
        """Turn a gradient with respect to standardised inputs into one per raw input unit."""
        return (grad.cpu() / self._scale_t).numpy()


@contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block on torch's global random stream seeded with ``seed``, restored afterwards.

    The CPU stream (and ``device``'s stream on CUDA) is forked, so callers'
    torch random state is left untouched.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
