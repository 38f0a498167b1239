"""Out-of-support cells: map cells whose features lie outside the training locations' cloud.

A model predicts reliably only near the locations it was trained on. The rule
(METHODS.md section 8): a cell is out of support when the Euclidean distance
from its feature vector to its k-th nearest training location exceeds the
``quantile`` of the same distance among the training locations themselves,
each measured without itself (leave-one-out).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from eocausal.errors import InputDataError
from eocausal.validation import check_features

__all__ = ["support_flags"]


def support_flags(
    train_features: np.ndarray,
    cell_features: np.ndarray,
    *,
    k: int = 10,
    quantile: float = 0.99,
) -> tuple[np.ndarray, np.ndarray]:
    """Flag cells whose features lie outside the training locations' distribution.

    Parameters
    ----------
    train_features : ndarray of shape (n, p)
        Features of the training (labelled) locations, in the space the model
        uses (e.g. the PCA scores of the embeddings); distances are Euclidean,
        so scale the features first if their units differ.
    cell_features : ndarray of shape (m, p)
        Features of the map cells, in the same space.
    k : int, default=10
        Neighbour rank; ``1 <= k < n``.
    quantile : float, default=0.99
        Quantile of the training locations' own distances used as threshold, in (0, 1].

    Returns
    -------
    flag : ndarray of bool, shape (m,)
        True where the cell is out of support.
    distance : ndarray of shape (m,)
        Distance from each cell to its k-th nearest training location.

    Notes
    -----
    With :math:`d_k(x, S)` the distance from :math:`x` to its k-th nearest
    point of :math:`S` and :math:`T` the training features,

    .. math::

        t = Q_{q}\\bigl(\\{d_k(x_i, T \\setminus \\{x_i\\})\\}_{i=1}^n\\bigr), \\qquad
        \\text{flag}(c) = d_k(c, T) > t

    (:math:`Q_q` is numpy's linear-interpolation quantile). By construction
    about a share :math:`1 - q` of the training locations themselves would be
    flagged.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(500, 2))
    >>> flag, dist = support_flags(train, np.array([[0.0, 0.0], [8.0, 8.0]]))
    >>> flag.tolist()
    [False, True]
    """
    train = check_features(train_features, name="train_features")
    cells = check_features(cell_features, name="cell_features")
    if cells.shape[1] != train.shape[1]:
        raise InputDataError(
            f"`cell_features` has {cells.shape[1]} columns but `train_features` has {train.shape[1]}; "
            "compute both in the same feature space."
        )
    n = train.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
        raise InputDataError(
            f"`k` must be an integer in [1, {n - 1}] (fewer than the {n} training locations); got {k!r}."
        )
    if not 0 < float(quantile) <= 1:
        raise InputDataError(f"`quantile` must lie in (0, 1]; got {quantile!r}. Use e.g. 0.99.")
    tree = cKDTree(train)
    # the k+1 nearest of a training point include itself at distance 0: the last is its k-th other
    own, _ = tree.query(train, k=[int(k) + 1])
    threshold = np.quantile(own[:, 0], float(quantile))
    if cells.shape[0] == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    dist, _ = tree.query(cells, k=[int(k)])
    distance = dist[:, 0]
    return distance > threshold, distance
