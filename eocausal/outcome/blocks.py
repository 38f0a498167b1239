"""Spatial blocks: the groups that keep nearby labelled locations together.

Labelled locations (survey clusters) are spatially correlated, and their
published coordinates are displaced (DHS: up to 2 km urban, 5 km rural), so a
model validated by random K-fold is scored on near-copies of its training
points. Grouping the locations into square blocks of a few tens of kilometres
and cross-fitting by block (Yeh et al. 2020; Rolf et al. 2021) removes that
optimism. The blocks are cells of one fixed grid anchored at the origin of the
projected coordinate system, so a location gets the same block id whatever
other locations are in the data set.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from eocausal.errors import InputDataError
from eocausal.validation import row_names

__all__ = ["check_groups", "spatial_blocks"]


def spatial_blocks(xy, *, block_km: float) -> np.ndarray:
    """Block id of each point on a square grid of ``block_km`` kilometres.

    Parameters
    ----------
    xy : array-like of shape (n, 2)
        Projected coordinates (x, y) in metres, e.g. UTM or an equal-area CRS;
        NOT longitude and latitude.
    block_km : float
        Side of a grid cell in kilometres. Take it well above the spatial
        range of the outcome's correlation and of the coordinate displacement
        (DHS: 5 km rural), e.g. 25-100 km.

    Returns
    -------
    blocks : ndarray of shape (n,), dtype str
        ``"x{i}_y{j}"`` with

        .. math:: i = \\lfloor x / (1000\\,b) \\rfloor,\\qquad
                  j = \\lfloor y / (1000\\,b) \\rfloor,

        where :math:`b` is ``block_km``; the grid is anchored at the CRS origin.

    Raises
    ------
    InputDataError
        When ``xy`` is not (n, 2), holds NaN or infinite values, looks like
        degrees, or ``block_km`` is not a positive number.

    Examples
    --------
    >>> spatial_blocks([[500.0, 2500.0], [-10.0, 99_000.0]], block_km=10)
    array(['x0_y0', 'x-1_y9'], dtype='<U6')
    """
    if (
        not isinstance(block_km, Real)
        or isinstance(block_km, bool)
        or not (math.isfinite(block_km) and block_km > 0)
    ):
        raise InputDataError(
            f"`block_km` must be a positive number of kilometres; got {block_km!r}. "
            "Use e.g. block_km=50."
        )
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputDataError(
            f"`xy` must have shape (n, 2) (projected x, y in metres); got shape {arr.shape}."
        )
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise InputDataError(
            f"`xy` has NaN or infinite coordinates at {row_names(bad, None)}; "
            "drop these locations or fix their coordinates."
        )
    if arr.shape[0] > 1 and (np.abs(arr[:, 0]) <= 180).all() and (np.abs(arr[:, 1]) <= 90).all():
        raise InputDataError(
            "`xy` looks like longitude/latitude in degrees (every |x| <= 180 and |y| <= 90); "
            "spatial_blocks needs projected coordinates in metres. Project the points first "
            "(e.g. to their UTM zone with pyproj or geopandas' to_crs)."
        )
    size = 1000.0 * float(block_km)
    cells = np.floor(arr / size).astype(np.int64)
    return np.array([f"x{i}_y{j}" for i, j in cells.tolist()], dtype=str)


def check_groups(groups, *, n: int) -> np.ndarray:
    """Check group labels (one per unit, none missing) and return them as strings.

    Parameters
    ----------
    groups : array-like of shape (n,)
        Spatial block ids (:func:`spatial_blocks`), admin units or countries.
    n : int
        Number of units.

    Returns
    -------
    groups : ndarray of shape (n,), dtype str
    """
    if groups is None:
        raise InputDataError(
            "`groups` is required: pass spatial block ids (eocausal.outcome.spatial_blocks) or "
            "admin/country labels, one per labelled location, so that nearby locations are "
            "never split between training and evaluation."
        )
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputDataError(
            f"`groups` must hold one label per labelled location; got shape {arr.shape}, "
            f"expected ({n},)."
        )
    if arr.dtype.kind == "f":
        missing = ~np.isfinite(arr)
    elif arr.dtype == object:
        missing = np.array([v is None or (isinstance(v, float) and math.isnan(v)) for v in arr])
    else:
        missing = np.zeros(n, dtype=bool)
    if missing.any():
        raise InputDataError(
            f"`groups` has missing labels at {row_names(missing, None)}; give every location a "
            "block or admin label."
        )
    return arr.astype(str)
