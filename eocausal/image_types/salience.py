"""Salience maps: the gradient of a type's log-assignment with respect to the pixels."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from eocausal.image_types.networks import TypeNet
from eocausal.image_types.tensors import PREDICT_BATCH, ImageScaling, seeded_torch

__all__ = ["type_salience"]


def type_salience(
    net: TypeNet,
    images: np.ndarray,
    type_index: int,
    *,
    scaling: ImageScaling,
    temperature: float,
    n_draws: int,
    seed: int,
    device: torch.device,
) -> np.ndarray:
    """Monte Carlo average of ∂ log z_ik / ∂ M_i for every unit, in raw input units.

    .. math::

        S_k(M_i) = \\frac{1}{R}\\sum_{r=1}^R \\nabla_{M_i} \\log z^{(r)}_{ik},\\quad
        z^{(r)}_i \\sim \\mathrm{RelaxedOneHotCategorical}(f(M_i), t),

    with R = ``n_draws``, drawn in log space (ExpRelaxedCategorical) and
    reparameterised, so the gradient flows through the draws.

    Parameters
    ----------
    net : TypeNet
    images : ndarray of shape (n, C, H, W), float32
        Raw (unstandardised) chips.
    type_index : int
        Type k, already checked to lie in ``0 .. n_types - 1``.
    scaling : ImageScaling
        The standardisation the network was trained with; the gradient is
        divided by its scale to be per raw input unit.
    temperature : float
    n_draws : int
    seed : int
        Seeds the draws (torch's global state is forked and restored).
    device : torch.device

    Returns
    -------
    ndarray of shape (n, C, H, W), float32
    """
    temp = torch.tensor(float(temperature), device=device)
    out = []
    with seeded_torch(seed, device):
        for start in range(0, images.shape[0], PREDICT_BATCH):
            m = scaling.transform(images[start : start + PREDICT_BATCH], device)
            m.requires_grad_(True)
            log_z = ExpRelaxedCategorical(temp, logits=net.logits(m)).rsample((n_draws,))
            (grad,) = torch.autograd.grad(log_z[..., type_index].mean(0).sum(), m)
            out.append(scaling.to_input_units(grad))
    return np.concatenate(out, axis=0).astype(np.float32)
