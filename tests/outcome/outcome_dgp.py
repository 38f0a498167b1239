"""Simulated labelled locations with a known linear signal and spatially correlated noise.

A DHS-like survey: clusters of 4 locations within ~500 m of a centre; each
location has 5 informative features ``z`` (iid) and 300 "fingerprint" features
that are smooth random fields of the location (length scale 3 km, as nearby
chips look alike). The outcome is

    y = z @ beta + u(s) + N(0, 0.3^2),   beta = 0.5 (5 times),

with ``u`` a smooth Gaussian field of sd 1 and length scale 3 km, independent
of ``z``: no model can predict ``u`` in a block it has not seen, so the best
achievable R² on fresh blocks is var(z beta) / var(y) = 1.25 / 2.34 = 0.53.
Fields are random Fourier features, so they are defined everywhere and fresh
locations can be drawn in blocks held out from training.
"""

from __future__ import annotations

import numpy as np

from eocausal.outcome import spatial_blocks

SIDE_M = 300e3
BLOCK_KM = 15.0
_ELL_M = 3e3
_N_FINGERPRINT = 300
_N_NOISE_FEATURES = 4000
_BETA = np.full(5, 0.5)


def _fourier_field(rng, m: int, ell: float):
    omega = rng.normal(size=(m, 2)) / ell
    phase = rng.uniform(0, 2 * np.pi, m)
    return lambda s: np.sqrt(2.0 / m) * np.cos(s @ omega.T + phase)


class SpatialWorld:
    """One draw of the fields; :meth:`sample` draws survey locations from it."""

    def __init__(self, seed: int, *, held_out_share: float = 0.3) -> None:
        rng = np.random.default_rng(seed)
        self._fingerprint = _fourier_field(rng, _N_FINGERPRINT, _ELL_M)
        self._noise_basis = _fourier_field(rng, _N_NOISE_FEATURES, _ELL_M)
        self._noise_weights = rng.normal(size=_N_NOISE_FEATURES)
        n_side = int(SIDE_M / (BLOCK_KM * 1e3))
        blocks = np.array([f"x{i}_y{j}" for i in range(n_side) for j in range(n_side)])
        self.held_out_blocks = set(
            rng.choice(blocks, int(held_out_share * blocks.size), replace=False).tolist()
        )

    def sample(self, n: int, *, seed: int, held_out: bool):
        """``n`` locations (clusters of 4) in the training blocks or in the held-out blocks.

        Returns ``xy`` (n, 2) metres, ``X`` (n, 305), ``y`` (n,).
        """
        rng = np.random.default_rng(seed)
        centres = rng.uniform(0, SIDE_M, size=(20 * n, 2))
        in_held_out = np.isin(
            spatial_blocks(centres, block_km=BLOCK_KM), list(self.held_out_blocks)
        )
        centres = centres[in_held_out == held_out][: n // 4]
        xy = np.repeat(centres, 4, axis=0) + rng.normal(scale=500.0, size=(4 * len(centres), 2))
        z = rng.normal(size=(len(xy), _BETA.size))
        X = np.column_stack([z, self._fingerprint(xy) * np.sqrt(_N_FINGERPRINT)])
        u = self._noise_basis(xy) @ self._noise_weights
        y = z @ _BETA + u + 0.3 * rng.normal(size=len(xy))
        return xy, X, y


def linear_problem(seed: int, *, n: int = 400, p: int = 40, sigma: float = 2.0):
    """Independent N(0, 1) features, y = X beta + N(0, sigma²); returns X, y, beta, and a sampler."""
    rng = np.random.default_rng(seed)
    beta = 0.25 * rng.normal(size=p)

    def draw(m: int):
        X = rng.normal(size=(m, p))
        return X, X @ beta + sigma * rng.normal(size=m)

    X, y = draw(n)
    return X, y, beta, draw
