"""Simulated chips and embeddings with two known image types, and fast model settings."""

from __future__ import annotations

import numpy as np

FAST = {"hidden": 16, "batch_size": 64, "epochs": 50, "lr": 1e-2}
"""Small, quick ImageTypeModel settings that still recover the simulated types."""


def simulate_chips(n: int = 600, *, size: int = 8, shift: float = 0.3, seed: int = 0):
    """Chips (n, 3, size, size): band 0's brightness decides the type, band 2 the baseline.

    Type A (0): tau = 0, band 0 darker by ``shift``; type B (1): tau = 2, band 0
    brighter by ``shift``. Band 1 is pure noise. Y = 2 mean(band 2) + W tau + N(0, 0.5^2),
    W ~ Bernoulli(0.5) independent of everything.
    Returns chips, T, Y, types, tau, mu0.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 2, n)
    chips = rng.normal(size=(n, 3, size, size)).astype(np.float32)
    chips[:, 0] += np.where(types == 1, shift, -shift)[:, None, None]
    T = rng.integers(0, 2, n)
    tau = np.where(types == 1, 2.0, 0.0)
    mu0 = 2.0 * chips[:, 2].mean(axis=(1, 2))
    Y = mu0 + T * tau + rng.normal(scale=0.5, size=n)
    return chips, T, Y, types, tau, mu0


def simulate_embeddings(n: int = 600, *, seed: int = 5):
    """Embeddings (n, 6) whose column 0 decides the type, plus two covariates.

    Type A: tau = 0, column 0 shifted by -1; type B: tau = 2, shifted by +1.
    Y = 3 x_0 + emb_3 + W tau + N(0, 0.5^2). Returns emb, cov, T, Y, types.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 2, n)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    emb[:, 0] += np.where(types == 1, 1.0, -1.0)
    cov = rng.normal(size=(n, 2))
    T = rng.integers(0, 2, n)
    tau = np.where(types == 1, 2.0, 0.0)
    Y = 3.0 * cov[:, 0] + emb[:, 3] + T * tau + rng.normal(scale=0.5, size=n)
    return emb, cov, T, Y, types


def oracle_type_effects(Y, T, types, mu0):
    """Per-type difference in means of Y - mu0 with the true types and baseline."""
    r = Y - mu0
    return np.array(
        [r[(types == k) & (T == 1)].mean() - r[(types == k) & (T == 0)].mean() for k in (0, 1)]
    )
