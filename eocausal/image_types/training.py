"""Variational SGD for the image-type model: the minibatch ELBO and the training loop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Normal, RelaxedOneHotCategorical, kl_divergence

from eocausal.errors import EstimationError
from eocausal.image_types.networks import TypeNet
from eocausal.image_types.tensors import ImageScaling, seeded_torch

__all__ = ["TrainedTypeNet", "TrainingSettings", "negative_elbo", "train_type_net"]

_RESIDENT_BYTES = 2**30
"""Inputs up to this size are standardised once and kept on the device; larger ones per batch."""


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser and Monte Carlo settings of :func:`train_type_net`.

    Attributes
    ----------
    epochs : int
        Passes over the training units.
    batch_size : int
        Units per Adam step.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty on the network weights (not on q(τ) or σ).
    n_mc : int
        Reparameterised draws of (z, τ) per step.
    temperature : float
        Temperature t of the relaxed one-hot assignment.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    n_mc: int
    temperature: float


@dataclass
class TrainedTypeNet:
    """Output of :func:`train_type_net`.

    Attributes
    ----------
    net : TypeNet
        In eval mode, types relabelled so that m_0 < m_1 < ...
    history : ndarray of shape (epochs,)
        Negative ELBO per unit and epoch (standardised outcome).
    seed : int
        The torch seed drawn from ``random_state`` (initialisation and draws).
    """

    net: TypeNet
    history: np.ndarray
    seed: int


def negative_elbo(
    net: TypeNet,
    m: torch.Tensor,
    x: torch.Tensor | None,
    t: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    *,
    prior: Normal,
    temperature: torch.Tensor,
    n_mc: int,
    n_units: int,
) -> torch.Tensor:
    """Monte Carlo estimate of the negative ELBO per unit on one minibatch B.

    .. math::

        L_B = \\frac{1}{|B|}\\sum_{i\\in B} w_i\\,\\frac{1}{R}\\sum_{r=1}^R
        -\\log \\mathcal N\\big(y_i \\mid \\mu_0(M_i, X_i) + t_i \\textstyle\\sum_k z^{(r)}_{ik}
        \\tau^{(r)}_k,\\ \\sigma^2\\big)
        + \\frac{1}{n}\\sum_k \\mathrm{KL}\\big(q(\\tau_k)\\,\\|\\,p(\\tau_k)\\big),

    with R = ``n_mc`` reparameterised draws z^(r)_i ~ RelaxedOneHotCategorical(f(M_i), t)
    and τ^(r) ~ q(τ) = N(m, s²), and n = ``n_units`` the size of the training set.
    """
    z = RelaxedOneHotCategorical(temperature, logits=net.logits(m)).rsample((n_mc,))
    tau = Normal(net.tau_mean, net.tau_sd()).rsample((n_mc,))
    pred = net.baseline(m, x) + t * (z * tau[:, None, :]).sum(-1)
    nll = -Normal(pred, net.log_sigma.exp()).log_prob(y).mean(0)
    kl = kl_divergence(Normal(net.tau_mean, net.tau_sd()), prior).sum()
    return (w * nll).mean() + kl / n_units


def train_type_net(
    images: np.ndarray,
    treatment: np.ndarray,
    outcome: np.ndarray,
    weights: np.ndarray,
    *,
    covariates: np.ndarray | None,
    scaling: ImageScaling,
    n_types: int,
    hidden: int,
    prior_mean: float,
    prior_sd: float,
    settings: TrainingSettings,
    random_state: int | None,
    device: torch.device,
) -> TrainedTypeNet:
    """Build a :class:`TypeNet` and fit it by minibatch Adam on the negative ELBO.

    Parameters
    ----------
    images : ndarray of shape (n, C, H, W) or (n, D), float32
        Raw inputs; ``scaling`` standardises them.
    treatment : ndarray of shape (n,)
        Binary treatment (0/1).
    outcome : ndarray of shape (n,)
        Standardised outcome.
    weights : ndarray of shape (n,)
        Likelihood weights (mean 1).
    covariates : ndarray of shape (n, p) or None
        Standardised covariates for the baseline.
    scaling : ImageScaling
    n_types, hidden : int
        Network size (see :class:`TypeNet`).
    prior_mean, prior_sd : float
        Prior N(prior_mean, prior_sd²) of every τ_k (standardised outcome units).
        The posterior means start spread evenly over
        prior_mean ± 0.5 min(1, prior_sd), the posterior sds at 0.1 prior_sd.
    settings : TrainingSettings
    random_state : int or None
        Seeds a numpy generator that draws the torch seed (initialisation and
        Monte Carlo draws) and then the minibatch order of every epoch.
    device : torch.device

    Returns
    -------
    TrainedTypeNet

    Raises
    ------
    EstimationError
        The loss became non-finite.

    Notes
    -----
    The same ``random_state`` gives the same network on CPU. Torch's global
    random state is forked (:func:`seeded_torch`), so callers' streams are
    untouched.
    """
    n = images.shape[0]
    rng = np.random.default_rng(random_state)
    seed = int(rng.integers(2**31 - 1))
    y_ten = torch.as_tensor(outcome, dtype=torch.float32, device=device)
    t_ten = torch.as_tensor(treatment, dtype=torch.float32, device=device)
    w_ten = torch.as_tensor(weights, dtype=torch.float32, device=device)
    x_all = (
        None
        if covariates is None
        else torch.as_tensor(covariates, dtype=torch.float32, device=device)
    )
    m_all = scaling.transform(images, device) if images.nbytes <= _RESIDENT_BYTES else None
    temp = torch.tensor(float(settings.temperature), device=device)
    prior = Normal(
        torch.full((n_types,), prior_mean, device=device),
        torch.full((n_types,), prior_sd, device=device),
    )

    history = np.empty(settings.epochs)
    with seeded_torch(seed, device):
        spread = 0.5 * min(1.0, prior_sd) * np.linspace(-1.0, 1.0, n_types)
        net = TypeNet(
            "chips" if images.ndim == 4 else "embeddings",
            images.shape[1],
            0 if covariates is None else covariates.shape[1],
            hidden,
            n_types,
            tau_init=prior_mean + spread,
            tau_sd_init=0.1 * prior_sd,
        ).to(device)
        variational = net.variational_parameters()
        ids = {id(p) for p in variational}
        network_weights = [p for p in net.parameters() if id(p) not in ids]
        opt = torch.optim.Adam(
            [
                {"params": network_weights, "weight_decay": float(settings.weight_decay)},
                {"params": variational, "weight_decay": 0.0},
            ],
            lr=float(settings.lr),
        )
        net.train()
        for epoch in range(settings.epochs):
            order = torch.as_tensor(rng.permutation(n), device=device)
            total = 0.0
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                m = (
                    m_all[idx]
                    if m_all is not None
                    else scaling.transform(images[idx.cpu().numpy()], device)
                )
                loss = negative_elbo(
                    net,
                    m,
                    None if x_all is None else x_all[idx],
                    t_ten[idx],
                    y_ten[idx],
                    w_ten[idx],
                    prior=prior,
                    temperature=temp,
                    n_mc=settings.n_mc,
                    n_units=n,
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            history[epoch] = total / n
            if not np.isfinite(history[epoch]):
                raise EstimationError(
                    f"The ELBO diverged (loss {history[epoch]!r}) in epoch {epoch}; lower `lr` "
                    "or check the outcome for extreme values."
                )
        net.eval()
        net.sort_types_by_effect()
    return TrainedTypeNet(net=net, history=history, seed=seed)
