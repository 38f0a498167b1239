"""Input checks shared by every stage: each returns the cleaned value or raises.

Messages say which argument is wrong, name the offending rows (by unit id when
the ids are given, else by row number), and suggest a fix, in the manner of
grf's ``validate_*`` helpers. :func:`check_is_fitted` gives every estimator the
same "not fitted" message. Uses numpy only (never econml or torch), so any
module may import it.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from eocausal.errors import InputDataError, NotFittedError, OverlapWarning

__all__ = [
    "CheckedData",
    "check_clusters",
    "check_features",
    "check_is_fitted",
    "check_outcome",
    "check_propensity",
    "check_sample_weight",
    "check_treatment",
    "check_treatment_outcome",
    "cluster_codes",
    "row_names",
]

_SHOW = 5


def row_names(rows: np.ndarray, unit_ids: np.ndarray | None) -> str:
    """Name offending rows for a message: ``"units 'a', 'b' and 3 more"`` or ``"rows 4, 7"``.

    Parameters
    ----------
    rows : array-like of int
        Row positions (or a boolean mask) of the offending units.
    unit_ids : ndarray of shape (n,), default=None
        Unit identifiers; without them the rows are named by position.
    """
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    shown = rows[:_SHOW]
    if unit_ids is not None:
        names = ", ".join(repr(str(unit_ids[r])) for r in shown)
        label = "units"
    else:
        names = ", ".join(str(int(r)) for r in shown)
        label = "rows"
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{label} {names}{more}"


def _as_1d(values, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputDataError(f"`{name}` must be one-dimensional; got shape {arr.shape}.")
    if n is not None and arr.shape[0] != n:
        raise InputDataError(
            f"`{name}` has {arr.shape[0]} values but there are {n} units; "
            "pass one value per unit, in the same order."
        )
    return arr


def _finite_float(values, name: str, n: int | None, unit_ids) -> np.ndarray:
    arr = _as_1d(values, name, n)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise InputDataError(f"`{name}` must be numeric; got dtype {arr.dtype}.") from None
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputDataError(
            f"`{name}` has {bad.size} NaN or infinite values at {row_names(bad, unit_ids)}; "
            "drop or impute these units before estimation."
        )
    return arr


def check_treatment(T, *, n: int | None = None, unit_ids=None, name: str = "T") -> np.ndarray:
    """Check a binary treatment and return it as an int64 array of 0/1.

    Accepts bools, 0/1 integers or floats equal to 0.0/1.0.
    """
    arr = _finite_float(T, name, n, unit_ids)
    bad = np.flatnonzero((arr != 0.0) & (arr != 1.0))
    if bad.size:
        values = np.unique(arr[bad])[:_SHOW].tolist()
        raise InputDataError(
            f"`{name}` must be binary (0 = control, 1 = treated); got values {values} at "
            f"{row_names(bad, unit_ids)}. Recode the treatment to 0/1."
        )
    return arr.astype(np.int64)


def check_outcome(Y, *, n: int | None = None, unit_ids=None, name: str = "Y") -> np.ndarray:
    """Check a finite numeric outcome and return it as float64."""
    return _finite_float(Y, name, n, unit_ids)


def check_features(X, *, n: int | None = None, unit_ids=None, name: str = "X") -> np.ndarray:
    """Check a finite numeric feature matrix and return it as a float64 array (n, p)."""
    if hasattr(X, "to_numpy"):
        columns = list(getattr(X, "columns", []))
        try:
            arr = X.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            bad_cols = [c for c in columns if not np.issubdtype(np.asarray(X[c]).dtype, np.number)]
            raise InputDataError(
                f"`{name}` must be numeric; non-numeric columns: {bad_cols}. "
                "Encode categorical covariates (e.g. one-hot) first."
            ) from None
    else:
        columns = []
        arr = np.asarray(X)
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InputDataError(f"`{name}` must be numeric; got dtype {arr.dtype}.") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputDataError(
            f"`{name}` must be a 2-D matrix (n_units, n_features); got shape {arr.shape}."
        )
    if n is not None and arr.shape[0] != n:
        raise InputDataError(
            f"`{name}` has {arr.shape[0]} rows but there are {n} units; pass one row per unit."
        )
    if arr.shape[1] == 0:
        raise InputDataError(f"`{name}` has no columns; give at least one feature.")
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        bad_cols = np.flatnonzero(~finite.all(axis=0))
        col_names = [columns[c] for c in bad_cols[:_SHOW]] if columns else bad_cols[:_SHOW].tolist()
        raise InputDataError(
            f"`{name}` has NaN or infinite values at {row_names(bad_rows, unit_ids)} "
            f"(columns {col_names}); impute or drop them before estimation."
        )
    return arr


def check_clusters(
    clusters, *, n: int | None = None, T: np.ndarray | None = None, single_arm: str = "warn"
) -> np.ndarray | None:
    """Check cluster labels (one per unit, no missing values).

    Parameters
    ----------
    clusters : array-like of shape (n,) or None
    n : int, default=None
        Expected number of units.
    T : ndarray of shape (n,), default=None
        Treatment; used to look for clusters whose units are all in one arm.
    single_arm : {"warn", "raise", "ignore"}, default="warn"
        What to do when SOME clusters hold one arm only while others hold both
        (in a cluster-randomised design every cluster is single-arm, which is
        fine and never reported).

    Returns
    -------
    clusters : ndarray of shape (n,) or None
    """
    if clusters is None:
        return None
    arr = _as_1d(clusters, "clusters", n)
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise InputDataError(
                f"`clusters` has missing labels at {row_names(bad, None)}; give every unit a cluster."
            )
    elif arr.dtype == object:
        bad = np.flatnonzero([v is None or (isinstance(v, float) and np.isnan(v)) for v in arr])
        if bad.size:
            raise InputDataError(
                f"`clusters` has missing labels at {row_names(bad, None)}; give every unit a cluster."
            )
        arr = arr.astype(str)
    if T is not None and single_arm != "ignore":
        labels, inverse = np.unique(arr, return_inverse=True)
        treated = np.bincount(inverse, weights=T, minlength=len(labels))
        sizes = np.bincount(inverse, minlength=len(labels))
        one_arm = (treated == 0) | (treated == sizes)
        if one_arm.any() and not one_arm.all():
            ids = labels[one_arm][:_SHOW].tolist()
            msg = (
                f"{int(one_arm.sum())} of {len(labels)} clusters hold units of one arm only "
                f"(first: {ids}); effects are identified only through the mixed clusters "
                "and cross-cluster comparisons. Check the cluster labels, or pass coarser clusters."
            )
            if single_arm == "raise":
                raise InputDataError(msg)
            warnings.warn(msg, OverlapWarning, stacklevel=3)
    return arr


def check_sample_weight(sample_weight, *, n: int, unit_ids=None) -> np.ndarray | None:
    """Check positive, finite weights (one per unit); ``None`` stays ``None``."""
    if sample_weight is None:
        return None
    arr = _finite_float(sample_weight, "sample_weight", n, unit_ids)
    bad = np.flatnonzero(arr <= 0)
    if bad.size:
        raise InputDataError(
            f"`sample_weight` must be positive; got values <= 0 at {row_names(bad, unit_ids)}. "
            "Drop zero-weight units instead."
        )
    return arr


def check_propensity(propensity, *, n: int, unit_ids=None, name: str = "propensity") -> np.ndarray:
    """Check propensities (a float or one per unit) strictly inside (0, 1); returns (n,)."""
    arr = np.asarray(propensity, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    arr = _finite_float(arr, name, n, unit_ids)
    bad = np.flatnonzero((arr <= 0.0) | (arr >= 1.0))
    if bad.size:
        raise InputDataError(
            f"`{name}` must lie strictly between 0 and 1; got {arr[bad][:_SHOW].tolist()} at "
            f"{row_names(bad, unit_ids)}."
        )
    return arr


class CheckedData(NamedTuple):
    """Cleaned estimation inputs (see :func:`check_treatment_outcome`)."""

    T: np.ndarray
    Y: np.ndarray
    X: np.ndarray | None
    clusters: np.ndarray | None
    sample_weight: np.ndarray | None


def check_treatment_outcome(
    T,
    Y,
    *,
    X=None,
    clusters=None,
    sample_weight=None,
    unit_ids=None,
    min_per_arm: int = 2,
    single_arm_clusters: str = "warn",
) -> CheckedData:
    """Check the inputs of an effect estimator and return them cleaned.

    Parameters
    ----------
    T : array-like of shape (n,)
        Binary treatment (0/1).
    Y : array-like of shape (n,)
        Outcome, finite.
    X : array-like of shape (n, p), default=None
        Features, finite.
    clusters : array-like of shape (n,), default=None
    sample_weight : array-like of shape (n,), default=None
    unit_ids : array-like of shape (n,), default=None
        Used only to name offending rows in messages.
    min_per_arm : int, default=2
        Fewest units allowed in each arm.
    single_arm_clusters : {"warn", "raise", "ignore"}, default="warn"

    Returns
    -------
    CheckedData
        ``(T int64, Y float64, X float64 or None, clusters or None, sample_weight or None)``.

    Raises
    ------
    InputDataError
        Non-binary treatment, NaN/infinite values (rows named), length
        mismatches, or fewer than ``min_per_arm`` units in an arm.
    """
    T_arr = np.asarray(T)
    n = T_arr.shape[0] if T_arr.ndim >= 1 else 0
    if unit_ids is not None:
        unit_ids = np.asarray(unit_ids).astype(str)
        if unit_ids.shape != (n,):
            raise InputDataError(f"`unit_ids` has {unit_ids.shape[0]} values but `T` has {n}.")
    T_clean = check_treatment(T, n=n, unit_ids=unit_ids)
    Y_clean = check_outcome(Y, n=n, unit_ids=unit_ids)
    X_clean = None if X is None else check_features(X, n=n, unit_ids=unit_ids)
    n1 = int(T_clean.sum())
    n0 = n - n1
    if min(n0, n1) < min_per_arm:
        raise InputDataError(
            f"Too few units per arm: {n1} treated and {n0} control; at least {min_per_arm} "
            "of each are needed. Check the treatment column, or lower `n_folds`."
        )
    cl = check_clusters(clusters, n=n, T=T_clean, single_arm=single_arm_clusters)
    w = check_sample_weight(sample_weight, n=n, unit_ids=unit_ids)
    return CheckedData(T_clean, Y_clean, X_clean, cl, w)


def cluster_codes(clusters, n: int) -> tuple[np.ndarray, int]:
    """Integer code ``0 .. C - 1`` of each unit's cluster, and ``C``.

    Without clusters (``None``) each unit is its own cluster: codes ``0 .. n - 1``, ``C = n``.
    """
    if clusters is None:
        return np.arange(n), n
    _, codes = np.unique(clusters, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if codes.size else 0


def check_is_fitted(estimator, attributes: str | tuple[str, ...]) -> None:
    """Raise :class:`~eocausal.errors.NotFittedError` unless ``estimator`` has all ``attributes``.

    The message is scikit-learn's: "This <Class> instance is not fitted yet. Call 'fit'
    with appropriate arguments before using this estimator."

    Parameters
    ----------
    estimator : object
    attributes : str or tuple of str
        Attributes that ``fit`` sets (e.g. ``"dr_scores_"``).
    """
    names = (attributes,) if isinstance(attributes, str) else attributes
    if not all(hasattr(estimator, a) for a in names):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )
