"""The causal-forest benchmark problem of METHODS.md section 3, with known effects.

.. math::

    X \\sim N(0, I_p),\\quad e(x) = \\operatorname{logistic}(0.5\\, x_3),\\quad
    \\tau(x) = \\max(x_1, 0) + 0.5 \\tanh(x_2 x_4),

    \\mu(x) = \\sin(x_3) + 0.5\\, x_5^2,\\quad
    Y = \\mu(X) + (W - e(X))\\, \\tau(X) + \\varepsilon,\\quad \\varepsilon \\sim N(0, 1),

with :math:`x_1, \\ldots, x_5` the columns 0 to 4 of ``X``. Used by
``benchmarks/cate.py`` (against econml's defaults and grf's figures) and by
the estimation tests.
"""

from __future__ import annotations

import numpy as np

__all__ = ["simulate_cate_problem"]


def simulate_cate_problem(
    n: int, p: int, *, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(X, T, Y, tau, e)`` of the METHODS.md section 3 design.

    Parameters
    ----------
    n : int
        Number of units.
    p : int
        Number of features, at least 5.
    seed : int, default=None
        Seed of every draw.

    Returns
    -------
    X : ndarray of shape (n, p)
    T : ndarray of shape (n,), 0/1
    Y : ndarray of shape (n,)
    tau : ndarray of shape (n,)
        The true conditional effects.
    e : ndarray of shape (n,)
        The true propensities.
    """
    if p < 5:
        raise ValueError(f"the design uses 5 features; `p` must be >= 5, got {p}")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    e = 1.0 / (1.0 + np.exp(-0.5 * X[:, 2]))
    T = rng.binomial(1, e)
    tau = np.maximum(X[:, 0], 0.0) + 0.5 * np.tanh(X[:, 1] * X[:, 3])
    mu = np.sin(X[:, 2]) + 0.5 * X[:, 4] ** 2
    Y = mu + (T - e) * tau + rng.normal(size=n)
    return X, T, Y, tau, e
