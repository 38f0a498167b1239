"""Fold assignment and train/test splits: the one place eocausal makes them.

Every estimator that cross-fits (nuisance models, CATE learners, honest
evaluation) asks this module for its folds, so clusters (villages, spatial
blocks, image tiles) are kept together everywhere: all units of a cluster land
in the same fold, and on the same side of a train/test split. Where possible
the folds are also stratified by treatment, so each fold holds both arms.
Uses numpy and scikit-learn only (never econml or torch), so any stage, the
encoders' cross-fitting included, may import it.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from eocausal.errors import InputDataError

__all__ = ["fold_splits", "make_folds", "split_units"]


def _check_n_folds(n_folds: int, n_groups: int, what: str) -> None:
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InputDataError(f"`n_folds` must be an integer >= 2; got {n_folds!r}.")
    if n_groups < n_folds:
        raise InputDataError(
            f"Cannot make {n_folds} folds from {n_groups} {what}; "
            f"lower `n_folds` to at most {n_groups} or provide more {what}."
        )


def make_folds(
    n: int,
    n_folds: int = 5,
    *,
    clusters: np.ndarray | None = None,
    stratify: np.ndarray | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Assign each of ``n`` units to one of ``n_folds`` folds.

    Parameters
    ----------
    n : int
        Number of units.
    n_folds : int, default=5
        Number of folds (>= 2).
    clusters : array-like of shape (n,), default=None
        Cluster labels; every cluster is put in exactly one fold.
    stratify : array-like of shape (n,), default=None
        Labels to balance across folds (usually the binary treatment). Ignored
        when some label has fewer than ``n_folds`` units (or clusters).
    seed : int, default=None
        Seed of the shuffle; same seed, same folds.

    Returns
    -------
    folds : ndarray of shape (n,), dtype int64
        Fold id in ``0 .. n_folds - 1`` for each unit.

    Notes
    -----
    Uses scikit-learn's ``StratifiedGroupKFold`` (clusters and strata),
    ``GroupKFold`` (clusters), ``StratifiedKFold`` or ``KFold``, all shuffled
    with ``seed``.
    """
    n = int(n)
    index = np.zeros((n, 1))
    folds = np.full(n, -1, dtype=np.int64)
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != (n,):
            raise InputDataError(
                f"`clusters` must have one label per unit (got shape {clusters.shape}, expected ({n},))."
            )
        _, groups = np.unique(clusters, return_inverse=True)
        _check_n_folds(n_folds, int(groups.max()) + 1 if n else 0, "clusters")
    else:
        groups = None
        _check_n_folds(n_folds, n, "units")
    if stratify is not None:
        stratify = np.asarray(stratify)
        if stratify.shape != (n,):
            raise InputDataError(
                f"`stratify` must have one label per unit (got shape {stratify.shape}, expected ({n},))."
            )
        if groups is None:
            _, counts = np.unique(stratify, return_counts=True)
        else:
            counts = np.array([len(np.unique(groups[stratify == s])) for s in np.unique(stratify)])
        if counts.min() < n_folds:
            stratify = None
    rng_seed = None if seed is None else int(seed) % (2**32)
    if groups is not None and stratify is not None:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=rng_seed)
        splits = splitter.split(index, stratify, groups)
    elif groups is not None:
        # GroupKFold balances fold sizes; shuffling the label order randomises it.
        perm = np.random.default_rng(rng_seed).permutation(int(groups.max()) + 1)
        splits = GroupKFold(n_folds).split(index, groups=perm[groups])
    elif stratify is not None:
        splits = StratifiedKFold(n_folds, shuffle=True, random_state=rng_seed).split(
            index, stratify
        )
    else:
        splits = KFold(n_folds, shuffle=True, random_state=rng_seed).split(index)
    for k, (_, test) in enumerate(splits):
        folds[test] = k
    empty = [k for k in range(n_folds) if not (folds == k).any()]
    if empty:
        raise InputDataError(
            f"Folds {empty} came out empty (clusters too unequal in size); lower `n_folds`."
        )
    return folds


def fold_splits(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Turn fold ids into ``[(train_idx, test_idx), ...]``, one pair per fold."""
    folds = np.asarray(folds)
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]


def split_units(
    n: int,
    *,
    test_size: float = 0.5,
    clusters: np.ndarray | None = None,
    stratify: np.ndarray | None = None,
    seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` units into a training and a held-out set.

    Parameters
    ----------
    n : int
        Number of units.
    test_size : float, default=0.5
        Share of units (of clusters, when given) in the held-out set, in (0, 1).
    clusters : array-like of shape (n,), default=None
        Cluster labels; a cluster is never split between the two sets.
    stratify : array-like of shape (n,), default=None
        Labels to balance between the sets (used when no clusters are given).
    seed : int, default=None
        Seed of the shuffle.

    Returns
    -------
    train_idx, test_idx : ndarray of int64
        Sorted row indices of the two sets; together they cover ``0 .. n - 1``.
    """
    n = int(n)
    if not 0.0 < float(test_size) < 1.0:
        raise InputDataError(f"`test_size` must lie strictly between 0 and 1; got {test_size!r}.")
    rng_seed = None if seed is None else int(seed) % (2**32)
    index = np.arange(n)
    if clusters is not None:
        clusters = np.asarray(clusters)
        if clusters.shape != (n,):
            raise InputDataError(
                f"`clusters` must have one label per unit (got shape {clusters.shape}, expected ({n},))."
            )
        if len(np.unique(clusters)) < 2:
            raise InputDataError("Cannot split units that all belong to one cluster.")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=rng_seed)
        train, test = next(splitter.split(index, groups=clusters))
    else:
        if n < 2:
            raise InputDataError(f"Cannot split {n} unit(s) into a training and a test set.")
        if stratify is not None:
            stratify = np.asarray(stratify)
            _, counts = np.unique(stratify, return_counts=True)
            if counts.min() < 2:
                stratify = None
        train, test = train_test_split(
            index, test_size=test_size, random_state=rng_seed, stratify=stratify
        )
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
