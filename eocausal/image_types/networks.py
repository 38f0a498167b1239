"""The torch modules of the image-type model: trunks, type logits f(M), baseline μ0(M, X), q(τ)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Trunk", "TypeNet"]


class Trunk(nn.Module):
    """Image (B, C, H, W) or embedding (B, D) -> features (B, hidden).

    Chips go through two 3x3 convolutions with ReLU and a global average pool;
    embeddings through a two-layer MLP with ReLU.
    """

    def __init__(self, kind: str, n_in: int, hidden: int) -> None:
        super().__init__()
        if kind == "chips":
            self.layers = nn.Sequential(
                nn.Conv2d(n_in, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        else:
            self.layers = nn.Sequential(
                nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            )

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.layers(m)


class TypeNet(nn.Module):
    """Type logits f(M), baseline μ0(M, X) and the variational posteriors of τ.

    Parameters
    ----------
    kind : {"chips", "embeddings"}
    n_in : int
        Input channels C (chips) or embedding width D.
    n_cov : int
        Number of tabular covariates the baseline head reads (0 for none).
    hidden : int
        Width of both trunks.
    n_types : int
        Number of image types K.
    tau_init : array-like of shape (n_types,)
        Initial posterior means m_k (standardised outcome units).
    tau_sd_init : float
        Initial posterior sd s_k of every type.

    Notes
    -----
    The type trunk and the baseline trunk do not share weights. The posterior
    sd is parameterised as s_k = softplus(ρ_k) + 1e-6 and the likelihood sd as
    σ = exp(log σ).
    """

    def __init__(
        self,
        kind: str,
        n_in: int,
        n_cov: int,
        hidden: int,
        n_types: int,
        tau_init: np.ndarray,
        tau_sd_init: float,
    ) -> None:
        super().__init__()
        self.type_trunk = Trunk(kind, n_in, hidden)
        self.type_head = nn.Linear(hidden, n_types)
        self.base_trunk = Trunk(kind, n_in, hidden)
        self.base_head = nn.Sequential(
            nn.Linear(hidden + n_cov, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.tau_mean = nn.Parameter(torch.as_tensor(tau_init, dtype=torch.float32))
        rho = float(np.log(np.expm1(tau_sd_init)))
        self.tau_rho = nn.Parameter(torch.full((n_types,), rho, dtype=torch.float32))
        self.log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def tau_sd(self) -> torch.Tensor:
        """Posterior sds s_k, shape (n_types,)."""
        return nn.functional.softplus(self.tau_rho) + 1e-6

    def logits(self, m: torch.Tensor) -> torch.Tensor:
        """Type logits f(M), shape (B, n_types)."""
        return self.type_head(self.type_trunk(m))

    def baseline(self, m: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Baseline μ0(M, X), shape (B,)."""
        h = self.base_trunk(m)
        if x is not None:
            h = torch.cat([h, x], dim=1)
        return self.base_head(h).squeeze(1)

    def variational_parameters(self) -> list[nn.Parameter]:
        """The posterior means and sd parameters of τ and log σ (not penalised by weight decay)."""
        return [self.tau_mean, self.tau_rho, self.log_sigma]

    @torch.no_grad()
    def sort_types_by_effect(self) -> None:
        """Relabel the types in place so that m_0 < m_1 < ... (type 0 has the lowest effect).

        Permutes the rows of the type head together with m and ρ, so that
        every prediction is unchanged up to the order of the types.
        """
        order = torch.argsort(self.tau_mean.detach())
        self.type_head.weight.copy_(self.type_head.weight[order])
        self.type_head.bias.copy_(self.type_head.bias[order])
        self.tau_mean.copy_(self.tau_mean[order])
        self.tau_rho.copy_(self.tau_rho[order])
