"""Out-of-support cells: map cells whose features lie outside the training locations' cloud.

A model predicts reliably only near the locations it was trained on. The rule
(METHODS.md section 8): a cell is out of support when the Euclidean distance
from its feature vector to its k-th nearest training location exceeds the
``quantile`` of the same distance among the training locations themselves,
each measured without itself (leave-one-out).
"""

from __future__ import annotations

import numpy as np

from eocausal.errors import InputDataError
from eocausal.validation import check_features

__all__ = ["FeatureSupport", "support_flags"]

#: Bytes of one block of squared distances (cells x training locations).
_BLOCK_BYTES = 32 * 2**20
#: Candidates beyond the k-th kept from the fast distances before the exact recomputation.
_MARGIN = 8


def _kth_distance(queries: np.ndarray, train: np.ndarray, k: int, *, offset: int | None = None) -> np.ndarray:
    """Euclidean distance from each query to its k-th nearest training row (k is 1-based).

    Blocks of squared distances by matrix products (BLAS), the ``k + _MARGIN``
    smallest kept, then those recomputed exactly as norms of differences, so the
    result is exact up to ties within rounding. With ``offset``, query ``i`` is
    training row ``offset + i`` and is left out of its own neighbours (by index:
    a duplicate location stays a neighbour).
    """
    n = train.shape[0]
    out = np.empty(queries.shape[0])
    train_sq = np.einsum("ij,ij->i", train, train)
    keep = min(k + _MARGIN, n)
    step = max(1, _BLOCK_BYTES // (8 * max(n, keep * train.shape[1])))
    for start in range(0, queries.shape[0], step):
        q = queries[start : start + step]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + train_sq[None, :] - 2.0 * (q @ train.T)
        if offset is not None:
            d2[np.arange(len(q)), offset + start + np.arange(len(q))] = np.inf
        cand = np.argpartition(d2, keep - 1, axis=1)[:, :keep]
        exact = np.linalg.norm(q[:, None, :] - train[cand], axis=2)
        if offset is not None:
            exact[cand == (offset + start + np.arange(len(q)))[:, None]] = np.inf
        out[start : start + step] = np.partition(exact, k - 1, axis=1)[:, k - 1]
    return out


class FeatureSupport:
    """Out-of-support check fitted once on the training features, applied tile by tile.

    Parameters
    ----------
    k : int, default=10
        Neighbour rank; ``1 <= k < n``.
    quantile : float, default=0.99
        Quantile of the training locations' own distances used as threshold, in (0, 1].

    Attributes
    ----------
    threshold_ : float
        :math:`t`, the ``quantile`` of the training locations' leave-one-out
        distances to their k-th nearest other location.
    n_features_in_ : int

    Notes
    -----
    With :math:`d_k(x, S)` the distance from :math:`x` to its k-th nearest
    point of :math:`S` and :math:`T` the training features,

    .. math::

        t = Q_{q}\\bigl(\\{d_k(x_i, T \\setminus \\{x_i\\})\\}_{i=1}^n\\bigr), \\qquad
        \\text{flag}(c) = d_k(c, T) > t

    (:math:`Q_q` is numpy's linear-interpolation quantile). By construction
    about a share :math:`1 - q` of the training locations themselves would be
    flagged. Distances are brute force by blocks of matrix products (exact
    nearest neighbours; tree searches do not help in hundreds of dimensions),
    so a map's tiles cost :math:`O(m n p)` each and the threshold is computed
    once, not per tile.
    """

    def __init__(self, k: int = 10, quantile: float = 0.99) -> None:
        self.k = k
        self.quantile = quantile

    def fit(self, train_features: np.ndarray) -> FeatureSupport:
        """Store the training features and compute :attr:`threshold_`."""
        train = check_features(train_features, name="train_features")
        n, k = train.shape[0], self.k
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k < n:
            raise InputDataError(
                f"`k` must be an integer in [1, {n - 1}] (fewer than the {n} training locations); got {k!r}."
            )
        if not 0 < float(self.quantile) <= 1:
            raise InputDataError(f"`quantile` must lie in (0, 1]; got {self.quantile!r}. Use e.g. 0.99.")
        self.train_ = np.ascontiguousarray(train, dtype=np.float64)
        self.n_features_in_ = train.shape[1]
        own = _kth_distance(self.train_, self.train_, int(k), offset=0)
        self.threshold_ = float(np.quantile(own, float(self.quantile)))
        return self

    def distance(self, cell_features: np.ndarray) -> np.ndarray:
        """Distance from each cell to its k-th nearest training location."""
        if not hasattr(self, "threshold_"):
            raise InputDataError("FeatureSupport is not fitted: call `fit(train_features)` first.")
        cells = check_features(cell_features, name="cell_features")
        if cells.shape[1] != self.n_features_in_:
            raise InputDataError(
                f"`cell_features` has {cells.shape[1]} columns but `train_features` has "
                f"{self.n_features_in_}; compute both in the same feature space."
            )
        if cells.shape[0] == 0:
            return np.zeros(0)
        return _kth_distance(np.asarray(cells, dtype=np.float64), self.train_, int(self.k))

    def predict(self, cell_features: np.ndarray) -> np.ndarray:
        """True where the cell is out of support (:math:`d_k(c, T) > t`)."""
        return self.distance(cell_features) > self.threshold_




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
    The rule of :class:`FeatureSupport`, fitted on ``train_features`` and applied to
    ``cell_features`` in one call; fit it once to check many tiles.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(500, 2))
    >>> flag, dist = support_flags(train, np.array([[0.0, 0.0], [8.0, 8.0]]))
    >>> flag.tolist()
    [False, True]
    """
    support = FeatureSupport(k=k, quantile=quantile).fit(train_features)
    distance = support.distance(cell_features)
    return distance > support.threshold_, distance
