"""Rank-weighted average treatment effects (RATE) and TOC curves, as in grf 2.6.

The estimates follow grf's ``rank_average_treatment_effect.fit`` step by step
(METHODS.md section 1): a stable sort by priority, decreasing; doubly robust
scores averaged (with the sample weights) inside groups of tied priorities;
weighted cumulative sums for the TOC curve and its AUTOC / QINI average; the
TOC on a grid of fractions ``q`` with fractional use of the unit straddling
``q``; and a clustered half-sample bootstrap (``floor(C / 2)`` clusters drawn
without replacement, standard error = sample standard deviation of the
replicates).

The units are sorted once per priority rule. A replicate keeps the units of
the drawn clusters, and a subset of a sorted order is still sorted, so a
replicate needs no sorting: a boolean mask over the sorted units gives the
kept positions, and every step after that (tie averages, cumulative sums, the
grid lookup) is one vectorised O(n) pass. With unit weights and no ties the
AUTOC / QINI of a replicate is one dot product with a fixed ramp (harmonic
numbers, or ``1, 2, ...``) and the grid needs 10 slice sums, so no cumulative
sum is formed. A replicate draws one random bit per cluster, corrected to
exactly ``floor(C / 2)`` kept clusters by symmetric flips
(:func:`eocausal.evaluate.rate_core._half_sample`): uniform subsets, the law of grf's ``sample``, though
not grf's (nor earlier versions') exact draws. Memory stays O(n) whatever
the number of replicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from eocausal.errors import InputDataError
from eocausal.evaluate.rate_core import _clean, _point_and_replicates, _sort_rule, _std
from eocausal.validation import (
    check_clusters,
    check_outcome,
    check_sample_weight,
    cluster_codes,
)

__all__ = [
    "DEFAULT_Q",
    "MIN_CLUSTERS",
    "RATEComparison",
    "RATEResult",
    "compare_priorities",
    "rate",
    "rate_difference",
    "rate_shared_draws",
]

#: grf's default TOC grid, ``seq(0.1, 1, by = 0.1)``, computed as R does.
DEFAULT_Q = np.minimum(0.1 + np.arange(10) * 0.1, 1.0)

#: Fewest clusters (units, without clusters) the half-sample bootstrap accepts:
#: grf's ``boot_grf`` stops when ``floor(C / 2) <= 1``, i.e. for C < 4.
MIN_CLUSTERS = 4

_TARGETS = ("AUTOC", "QINI")


def _curve_dict(curve: pd.DataFrame) -> dict[str, list]:
    """A (q, estimate, std_err) curve as JSON-ready lists (non-finite values become ``None``)."""
    return {
        "q": [float(v) for v in curve["q"]],
        "estimate": [_finite_or_none(v) for v in curve["estimate"]],
        "std_err": [_finite_or_none(v) for v in curve["std_err"]],
    }


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


@dataclass
class RATEResult:
    """A RATE estimate with its bootstrap standard error and TOC curve.

    Attributes
    ----------
    target : {"AUTOC", "QINI"}
    estimate : float
        The RATE point estimate.
    std_err : float
        Half-sample bootstrap standard error (0 when ``n_bootstrap < 2``).
    ratio : float
        ``estimate / std_err`` (NaN when the standard error is 0).
    p_value : float
        Two-sided normal p-value of ``ratio``, ``2 * Phi(-|ratio|)``.
    toc : pandas.DataFrame
        Columns ``q``, ``estimate``, ``std_err``: the TOC curve on the grid.
    n : int
        Number of evaluation units.
    n_clusters : int
        Number of clusters resampled by the bootstrap (``n`` without clusters).
    n_bootstrap : int
        Number of bootstrap replicates.
    name : str
        Name of the priority rule.
    replicates : ndarray of shape (n_bootstrap, 1 + len(q))
        Bootstrap replicates: column 0 the RATE, then the TOC at each ``q``.
        Kept so that other rules evaluated on the same draws can be compared;
        not part of :meth:`to_dict`.
    """

    target: str
    estimate: float
    std_err: float
    ratio: float
    p_value: float
    toc: pd.DataFrame
    n: int
    n_clusters: int
    n_bootstrap: int
    name: str = "priority"
    replicates: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (non-finite numbers become ``None``)."""
        return {
            "name": self.name,
            "target": self.target,
            "estimate": _finite_or_none(self.estimate),
            "std_err": _finite_or_none(self.std_err),
            "ratio": _finite_or_none(self.ratio),
            "p_value": _finite_or_none(self.p_value),
            "n": int(self.n),
            "n_clusters": int(self.n_clusters),
            "n_bootstrap": int(self.n_bootstrap),
            "toc": _curve_dict(self.toc),
        }


@dataclass
class RATEComparison:
    """Two priority rules evaluated on the same bootstrap draws.

    Attributes
    ----------
    a, b : RATEResult
        The two rules, each exactly as :func:`rate` with the same seed returns it.
    difference : float
        ``a.estimate - b.estimate``.
    std_err : float
        Standard deviation of the paired replicate differences.
    ratio : float
        ``difference / std_err``.
    p_value : float
        Two-sided normal p-value of ``ratio``.
    toc_difference : pandas.DataFrame
        Columns ``q``, ``estimate``, ``std_err`` of ``TOC_a(q) - TOC_b(q)``.
    """

    a: RATEResult
    b: RATEResult
    difference: float
    std_err: float
    ratio: float
    p_value: float
    toc_difference: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "difference": _finite_or_none(self.difference),
            "std_err": _finite_or_none(self.std_err),
            "ratio": _finite_or_none(self.ratio),
            "p_value": _finite_or_none(self.p_value),
            "toc_difference": _curve_dict(self.toc_difference),
        }


# ----------------------------------------------------------------- validation


def validate_target(target: str) -> str:
    """Return ``"AUTOC"`` or ``"QINI"`` (case-insensitive) or raise."""
    name = str(target).upper()
    if name not in _TARGETS:
        raise InputDataError(f"`target` must be one of {list(_TARGETS)}; got {target!r}.")
    return name


def validate_q(q) -> np.ndarray:
    """Return the TOC grid as float64, checking grf's rule: increasing, in (0, 1], ending at 1."""
    if q is None:
        return DEFAULT_Q.copy()
    arr = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if (
        arr.ndim != 1
        or arr.size == 0
        or not np.isfinite(arr).all()
        or np.any(np.diff(arr) <= 0)
        or arr[0] <= 0
        or arr[-1] != 1.0
    ):
        raise InputDataError(
            "`q` should be a strictly increasing grid of fractions on the interval (0, 1] "
            f"whose last value is exactly 1; got {arr.tolist()[:12]}."
        )
    return arr


def validate_n_bootstrap(n_bootstrap) -> int:
    """Return ``n_bootstrap`` as a non-negative int or raise."""
    if (
        not isinstance(n_bootstrap, (int, np.integer))
        or isinstance(n_bootstrap, bool)
        or n_bootstrap < 0
    ):
        raise InputDataError(f"`n_bootstrap` must be an integer >= 0; got {n_bootstrap!r}.")
    return int(n_bootstrap)


def _validate_priority(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputDataError(
            f"`{name}` must hold one priority per evaluation unit (got shape {arr.shape}, "
            f"expected ({n},)); score only the units whose DR scores are given."
        )
    if arr.dtype.kind in "biuf":
        bad = np.flatnonzero(~np.isfinite(arr.astype(np.float64)))
        if bad.size:
            raise InputDataError(
                f"`{name}` has {bad.size} NaN or infinite values (rows {bad[:5].tolist()}); "
                "priorities must be finite."
            )
    return arr


def _validate_scores_weights_clusters(dr_scores, clusters, sample_weight):
    scores = check_outcome(dr_scores, name="dr_scores")
    n = scores.shape[0]
    weights = check_sample_weight(sample_weight, n=n)
    cl = check_clusters(clusters, n=n)
    codes, n_clusters = cluster_codes(cl, n)
    if n_clusters < MIN_CLUSTERS:
        if cl is not None:
            fix = (
                "use finer clusters (e.g. smaller spatial blocks) or evaluate on units "
                "from more clusters"
            )
        else:
            fix = "evaluate on more units"
        what = "clusters" if cl is not None else "units (each its own cluster)"
        raise InputDataError(
            f"The RATE half-sample bootstrap needs at least {MIN_CLUSTERS} {what}; got "
            f"{n_clusters}. Each replicate keeps floor(C / 2) clusters, and grf's "
            f"rank_average_treatment_effect.fit also refuses fewer than 2 per replicate; {fix}."
        )
    # grf: unit weights when none are given, else weights normalised to sum to one.
    if weights is None:
        weights = np.ones(n)
    else:
        weights = weights / weights.sum()
    return scores, weights, codes, n_clusters


# --------------------------------------------------------------------- engine


def _ratio(estimate: float, std_err: float) -> tuple[float, float]:
    if std_err > 0:
        ratio = estimate / std_err
        return ratio, float(2.0 * norm.sf(abs(ratio)))
    return float("nan"), float("nan")


def _result(name, target, point, reps, q, n, n_clusters) -> RATEResult:
    point = _clean(point)
    se = _std(reps)
    ratio, p_value = _ratio(float(point[0]), float(se[0]))
    toc = pd.DataFrame({"q": q, "estimate": point[1:], "std_err": se[1:]})
    return RATEResult(
        target=target,
        estimate=float(point[0]),
        std_err=float(se[0]),
        ratio=ratio,
        p_value=p_value,
        toc=toc,
        n=n,
        n_clusters=n_clusters,
        n_bootstrap=reps.shape[0],
        name=name,
        replicates=reps,
    )


# ------------------------------------------------------------------ public API


def rate_shared_draws(
    dr_scores,
    priorities: Mapping[str, Any],
    *,
    target: str = "AUTOC",
    q=None,
    n_bootstrap: int = 200,
    clusters=None,
    sample_weight=None,
    seed: int | None = None,
) -> dict[str, RATEResult]:
    """RATE of several priority rules on the same units and the same bootstrap draws.

    Parameters
    ----------
    dr_scores : array-like of shape (n,)
        Doubly robust scores of the evaluation units.
    priorities : mapping of str -> array-like of shape (n,)
        One priority vector per rule (higher = treat first).
    target, q, n_bootstrap, clusters, sample_weight, seed
        As in :func:`rate`.

    Returns
    -------
    dict of str -> RATEResult
        In the order of ``priorities``. Every result is exactly what :func:`rate`
        returns for that rule with the same ``seed``, and the ``replicates`` of
        different rules come from the same draws, so the standard deviation of
        their differences is the paired standard error.
    """
    if not priorities:
        raise InputDataError("`priorities` is empty; give at least one priority rule.")
    target = validate_target(target)
    q = validate_q(q)
    n_bootstrap = validate_n_bootstrap(n_bootstrap)
    scores, weights, codes, n_clusters = _validate_scores_weights_clusters(
        dr_scores, clusters, sample_weight
    )
    n = scores.size
    gw = scores * weights
    sorted_weights = None if sample_weight is None else weights
    names = [str(k) for k in priorities]
    rules = [
        _sort_rule(_validate_priority(v, n, f"priorities[{k!r}]"), gw, sorted_weights, codes)
        for k, v in priorities.items()
    ]
    outputs = _point_and_replicates(rules, n_clusters, q, target == "QINI", n_bootstrap, seed)
    return {
        name: _result(name, target, point, reps, q, n, n_clusters)
        for name, (point, reps) in zip(names, outputs)
    }


def rate(
    dr_scores,
    priorities,
    *,
    target: str = "AUTOC",
    q=None,
    n_bootstrap: int = 200,
    clusters=None,
    sample_weight=None,
    seed: int | None = None,
    name: str = "priority",
) -> RATEResult:
    """Rank-weighted average treatment effect of a priority rule (grf's RATE).

    Parameters
    ----------
    dr_scores : array-like of shape (n,)
        Doubly robust scores :math:`\\Gamma_i` of the evaluation units (AIPW
        scores from a model fitted with cross-fitting on the evaluation units;
        IPW scores also work).
    priorities : array-like of shape (n,)
        Priority :math:`S_i` of each evaluation unit; higher means treat first.
        WARNING: FOR VALID INFERENCE THE PRIORITIES MUST COME FROM A MODEL THAT
        DID NOT SEE THE EVALUATION UNITS (see :mod:`eocausal.evaluate.honest`).
    target : {"AUTOC", "QINI"}, default="AUTOC"
        AUTOC has more power when a small subset of units responds strongly;
        QINI when heterogeneity is diffuse across the population.
    q : array-like, default=None
        Grid of fractions for the TOC curve: strictly increasing in (0, 1] and
        ending at 1. ``None`` uses grf's ``0.1, 0.2, ..., 1.0``.
    n_bootstrap : int, default=200
        Number of half-sample bootstrap replicates (grf's ``R``).
    clusters : array-like of shape (n,), default=None
        Cluster labels; the bootstrap draws whole clusters. At least
        :data:`MIN_CLUSTERS` = 4 clusters (units, without clusters), as in grf:
        each replicate keeps ``floor(C / 2)`` of them, which must be 2 or more.
    sample_weight : array-like of shape (n,), default=None
        Positive weights of the units.
    seed : int, default=None
        Seed of the bootstrap draws; same seed, same numbers.
    name : str, default="priority"
        Name of the rule, carried into the result.

    Returns
    -------
    RATEResult

    Notes
    -----
    Sort the units by :math:`S` decreasing (stable), replace :math:`\\Gamma`
    by its weighted mean inside each group of tied priorities
    (:math:`\\tilde\\Gamma`), and let :math:`W_j = \\sum_{k \\le j} w_{(k)}`,
    :math:`S_j = \\sum_{k \\le j} w_{(k)} \\tilde\\Gamma_{(k)}`, :math:`W = W_n`:

    .. math::

        \\mathrm{TOC}_j = S_j / W_j - S_n / W, \\qquad
        \\mathrm{AUTOC} = \\sum_j \\frac{w_{(j)}}{W} \\mathrm{TOC}_j, \\qquad
        \\mathrm{QINI} = \\sum_j \\frac{W_j}{W} \\frac{w_{(j)}}{W} \\mathrm{TOC}_j.

    On the grid, with :math:`m = \\max\\{j : W_j \\le qW\\}` (possibly 0),
    :math:`\\mathrm{TOC}(q) = (S_m + (qW - W_m) \\tilde\\Gamma_{(m+1)}) / (qW) - S_n / W`.
    The standard error is the standard deviation (denominator R - 1) of R
    replicates, each computed on the units of ``floor(C / 2)`` clusters drawn
    without replacement. As in grf, weights are normalised to sum to one,
    values below 1e-15 in absolute value are reported as 0, and two distinct
    priorities are ties only if they are equal as floats (grf's ``as.factor``
    would also merge values equal to 15 significant digits). Within a tie
    group of a bootstrap replicate the units keep their sorted order (grf uses
    the order of the drawn clusters); this only matters for the AUTOC with
    unequal weights and ties, at the level of bootstrap noise.

    References
    ----------
    Yadlowsky, Fleming, Shah, Brunskill and Wager (2021), "Evaluating treatment
    prioritization rules via rank-weighted average treatment effects",
    arXiv:2111.07966; grf's ``rank_average_treatment_effect.fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from eocausal.evaluate import rate
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=2000)
    >>> scores = np.maximum(x, 0) + rng.normal(size=2000)
    >>> res = rate(scores, x, seed=1)
    >>> bool(res.ratio > 3)
    True
    """
    out = rate_shared_draws(
        dr_scores,
        {name: priorities},
        target=target,
        q=q,
        n_bootstrap=n_bootstrap,
        clusters=clusters,
        sample_weight=sample_weight,
        seed=seed,
    )
    return out[str(name)]


def compare_priorities(
    dr_scores,
    priorities_a,
    priorities_b,
    *,
    names: tuple[str, str] = ("a", "b"),
    target: str = "AUTOC",
    q=None,
    n_bootstrap: int = 200,
    clusters=None,
    sample_weight=None,
    seed: int | None = None,
) -> RATEComparison:
    """Compare two priority rules on the same units and bootstrap draws.

    Parameters
    ----------
    dr_scores : array-like of shape (n,)
    priorities_a, priorities_b : array-like of shape (n,)
    names : tuple of two str, default=("a", "b")
    target, q, n_bootstrap, clusters, sample_weight, seed
        As in :func:`rate`.

    Returns
    -------
    RATEComparison
        Each rule's result (identical to :func:`rate` with the same seed), the
        difference ``RATE_a - RATE_b`` and ``SE = sd(rep_a - rep_b)``, as grf
        does for a two-column ``priorities``.
    """
    if len(names) != 2 or str(names[0]) == str(names[1]):
        raise InputDataError(f"`names` must be two distinct names; got {names!r}.")
    res = rate_shared_draws(
        dr_scores,
        {names[0]: priorities_a, names[1]: priorities_b},
        target=target,
        q=q,
        n_bootstrap=n_bootstrap,
        clusters=clusters,
        sample_weight=sample_weight,
        seed=seed,
    )
    a, b = res[str(names[0])], res[str(names[1])]
    return rate_difference(a, b)


def rate_difference(a: RATEResult, b: RATEResult) -> RATEComparison:
    """Paired difference of two results computed by one :func:`rate_shared_draws` call.

    Raises
    ------
    InputDataError
        When the two results do not come from the same draws (different
        targets, grids, sizes or replicate counts).
    """
    if (
        a.target != b.target
        or a.n != b.n
        or a.replicates.shape != b.replicates.shape
        or not np.array_equal(a.toc["q"].to_numpy(), b.toc["q"].to_numpy())
    ):
        raise InputDataError(
            "Only results computed on the same units, grid, target and bootstrap draws "
            "(one `rate_shared_draws` call) can be differenced."
        )
    point = _clean(
        np.r_[a.estimate - b.estimate, a.toc["estimate"].to_numpy() - b.toc["estimate"].to_numpy()]
    )
    se = _std(a.replicates - b.replicates)
    ratio, p_value = _ratio(float(point[0]), float(se[0]))
    toc = pd.DataFrame({"q": a.toc["q"].to_numpy(), "estimate": point[1:], "std_err": se[1:]})
    return RATEComparison(a, b, float(point[0]), float(se[0]), ratio, p_value, toc)
