"""Simulated studies with known effects for the debiasing tests."""

from __future__ import annotations

import numpy as np

TAU = 1.0


def rct(rng, n, *, kind="gauss", tau=TAU):
    """Randomised trial: W ~ Bernoulli(0.5), Y = tau W + C with C Gaussian or bimodal."""
    w = (rng.random(n) < 0.5).astype(np.int64)
    if kind == "gauss":
        c = rng.standard_normal(n)
    else:
        c = np.where(rng.random(n) < 0.5, -2.0, 2.0) + 0.5 * rng.standard_normal(n)
    return w, tau * w + c


def posterior_mean(z, prior_sample, noise_sd):
    """E[Y | Z = z] for Z = Y + N(0, noise_sd^2), Y distributed as `prior_sample` (brute force)."""
    u = -0.5 * ((z[:, None] - prior_sample[None, :]) / noise_sd) ** 2
    u -= u.max(axis=1, keepdims=True)
    k = np.exp(u)
    return (k * prior_sample).sum(axis=1) / k.sum(axis=1)


def shrink(rng, y, k, noise_sd, m=0.3):
    """Linear shrinkage of a truth into a prediction: m + k y + N(0, noise_sd^2)."""
    return m + k * y + rng.normal(0, noise_sd, np.shape(y))
