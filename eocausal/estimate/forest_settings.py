"""Settings of the learners' honest forests: mtry, little bags, and the large-n rules.

Two settings depend on the number of training units n and are resolved
at ``fit`` (fitted attributes ``max_samples_`` and ``final_model_``; see
:func:`resolved_settings`): ``max_samples="auto"`` (every learner) caps the units
a tree draws at :data:`AUTO_TREE_SAMPLES` (:func:`auto_max_samples`), and
``DRLearner(final_model="auto")`` switches the final stage from the honest forest
to gradient boosting at :data:`AUTO_HGB_MIN_UNITS` units (:func:`auto_final_model`).
Below both thresholds nothing changes: the share stays 0.45 and the final stage
a forest.

References
----------
Athey, Tibshirani, Wager (2019), "Generalized random forests" (``mtry``,
``ci.group.size``); econml ``econml.grf``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from econml.grf import RegressionForest as _GRFRegressionForest

from eocausal.errors import InputDataError
from eocausal.validation import check_is_fitted

__all__ = [
    "AUTO_HGB_MIN_UNITS",
    "AUTO_TREE_SAMPLES",
    "FINAL_MODELS",
    "auto_final_model",
    "auto_max_samples",
    "check_max_samples",
    "check_trees_per_bag",
    "default_mtry",
    "grf_mtry",
    "regression_forest",
    "resolve_max_features",
    "resolved_settings",
]

_FULL_SEARCH_UP_TO = 64
_SMALL_N_MAX_SAMPLES = 0.45
FINAL_MODELS = ("auto", "forest", "hgb")

#: Most units one tree draws under ``max_samples="auto"`` (:func:`auto_max_samples`).
AUTO_TREE_SAMPLES = 20_000

#: Training units from which ``DRLearner(final_model="auto")`` fits gradient boosting
#: instead of the honest forest (:func:`auto_final_model`).
AUTO_HGB_MIN_UNITS = 20_000


def grf_mtry(p: int) -> int:
    """grf's default number of features tried per split: ``min(ceil(sqrt(p) + 20), p)``."""
    return int(min(math.ceil(math.sqrt(p) + 20), p))


def default_mtry(p: int) -> int:
    """eocausal's default features per split: ``min(p, max(64, grf_mtry(p)))``.

    All features up to p = 64, then a fixed budget of 64 (or grf's
    ``sqrt(p) + 20`` once that is larger, p > ~1,900). On the METHODS.md
    section 3 problem (p = 64, two effect modifiers) grf's mtry of 28 gave a
    held-out MSE(τ) of 0.113 and searching all 64 features 0.087 with the same
    nuisances, so sparse effect modifiers favour a wide search; beyond 64 the
    cost per split stays bounded for 384-1,024-wide embeddings.
    """
    return int(min(p, max(_FULL_SEARCH_UP_TO, grf_mtry(p))))


def resolve_max_features(max_features, p: int):
    if max_features == "auto":
        return default_mtry(p)
    if max_features == "grf":
        return grf_mtry(p)
    return max_features


def auto_max_samples(n: int) -> float:
    """Share of the n training units each tree draws under ``max_samples="auto"``.

    .. math:: s(n) = \\min\\big(0.45,\\ S / n\\big),\\qquad S = 20{,}000

    (:data:`AUTO_TREE_SAMPLES`), so a tree draws ``0.45 n`` units up to
    n = S / 0.45 = 44,444 (the small-n setting, unchanged) and S units beyond:
    the cost of growing a tree stops growing with n, and only predicting
    (out-of-bag and new units) stays linear in n. The share stays under 0.5,
    which the honest little-bags layout needs (each tree draws from half of the
    units).

    Measured with ``benchmarks/learners_large_n.py`` (causal forest, 200 trees,
    33 features, 2 cores shared with other jobs; held-out MSE(τ), CPU seconds of
    fit and prediction, constant ATE MSE 0.41). Fit on 50,000 units: 22,500 units
    per tree (0.45) 0.0250 in 222 CPU s; 20,000 ("auto") 0.0252 in 190 CPU s;
    10,000 0.0318 and 5,000 0.0402, in 112 and 35 wall s against 256 for
    20,000 in the same run. Fit on 500,000 units, "auto" (0.04): 0.0226 in 235
    CPU s, the cross-fitted m̂ and the out-of-bag predictions of 500,000 units
    included. A tree's cost grows faster than its subsample (exponent 1.2-1.4).
    WARNING: WITH THE CAP, THE FOREST'S BIAS NO LONGER SHRINKS AS n GROWS (each
    tree's leaves stay as wide as at n = 44,444), only its variance does. For large
    n prefer :class:`DRLearner`, whose gradient-boosting final stage was both more
    accurate and faster: 0.0218 in 12 CPU s at 50,000 units, 0.0051 in 120 CPU s
    at 500,000.

    Parameters
    ----------
    n : int
        Units the forest is fitted on.

    Returns
    -------
    float
        The share, in (0, 0.45].
    """
    return min(_SMALL_N_MAX_SAMPLES, AUTO_TREE_SAMPLES / max(int(n), 1))


def auto_final_model(n: int) -> str:
    """The DR learner's final stage under ``final_model="auto"``: ``"hgb"`` from 20,000 units.

    Below :data:`AUTO_HGB_MIN_UNITS` (20,000 training units) the honest regression
    forest (``"forest"``), which has the little-bags intervals; from there on
    histogram gradient boosting (``"hgb"``), which has none. On
    ``benchmarks/learners_large_n.py`` (same data and nuisances for both, 2 shared
    cores), held-out MSE(τ) forest vs gradient boosting, with wall seconds of the
    whole fit: 5,000 units 0.045 vs 0.069 (10 vs 4 s); 10,000 units 0.050 vs 0.049
    (23 vs 4 s); 20,000 units 0.041 vs 0.040 (55 vs 14 s); 30,000 units 0.032 vs
    0.030 (85 vs 33 s); 50,000 units 0.026 vs 0.022 (191 vs 13 s); 500,000 units
    0.005 for gradient boosting in 131 s. The threshold is twice the size where
    the two broke even, so the forest, and its intervals, stay wherever it was
    as good.

    Parameters
    ----------
    n : int
        Units the DR learner is fitted on.

    Returns
    -------
    {"forest", "hgb"}
    """
    return "hgb" if n >= AUTO_HGB_MIN_UNITS else "forest"


def check_max_samples(max_samples, n: int, owner: str) -> float:
    """The resolved share of units per tree; an error naming the fix for a bad value."""
    if isinstance(max_samples, str) and max_samples == "auto":
        return auto_max_samples(n)
    if (
        isinstance(max_samples, Real)
        and not isinstance(max_samples, bool)
        and 0.0 < max_samples <= 0.5
    ):
        return float(max_samples)
    raise InputDataError(
        f"The 'max_samples' parameter of {owner} must be 'auto' or a float in (0, 0.5] (the "
        "share of units each tree draws; honest little bags draw from half of the units). "
        f"Got {max_samples!r}; use 'auto' (min(0.45, {AUTO_TREE_SAMPLES:,} / n)) or e.g. 0.45."
    )


def resolved_settings(learner) -> dict:
    """The n-dependent settings a fitted learner resolved, with the rule behind each.

    Parameters
    ----------
    learner : CausalForest, DRLearner or TLearner
        Fitted.

    Returns
    -------
    dict
        JSON-ready: ``n_fit`` (training units), ``max_samples`` (``max_samples_``),
        ``units_per_tree`` (``max_samples_ * n_fit``, rounded; the T-learner's arm
        forests draw the same share of their arm), ``max_samples_reason``; for the
        DR learner ``final_model`` and ``final_model_reason``; ``intervals``
        (whether :meth:`effect_interval` gives intervals or NaN).
    """
    check_is_fitted(learner, "dr_scores_")
    n = len(learner.treatment_)
    share = float(learner.max_samples_)
    cut = AUTO_TREE_SAMPLES / _SMALL_N_MAX_SAMPLES
    if learner.max_samples != "auto":
        why = f"max_samples={learner.max_samples!r} (given)"
    elif share < _SMALL_N_MAX_SAMPLES:
        why = (
            f"max_samples='auto': n = {n:,} > {cut:,.0f}, so {AUTO_TREE_SAMPLES:,} / n "
            f"(at most {AUTO_TREE_SAMPLES:,} units per tree)"
        )
    else:
        why = f"max_samples='auto': n = {n:,} <= {cut:,.0f}, so the small-n share 0.45"
    out = {
        "n_fit": n,
        "max_samples": share,
        "units_per_tree": round(share * n),
        "max_samples_reason": why,
    }
    final = getattr(learner, "final_model_", None)
    if final is not None:
        if learner.final_model != "auto":
            why = f"final_model={learner.final_model!r} (given)"
        else:
            sign = ">=" if final == "hgb" else "<"
            why = f"final_model='auto': n = {n:,} {sign} {AUTO_HGB_MIN_UNITS:,}"
        out.update(final_model=final, final_model_reason=why)
    out["intervals"] = final != "hgb"
    return out


def check_trees_per_bag(n_estimators, trees_per_bag, *, owner: str = "CausalForest") -> int:
    """Check the little-bags layout; return the number of bags, ``n_estimators // trees_per_bag``.

    econml grows the trees of an inference forest in bags of ``trees_per_bag``
    trees that share one half-sample, so ``trees_per_bag`` must be an int >= 2
    and ``n_estimators`` a positive multiple of it.
    """
    if (
        not isinstance(trees_per_bag, Integral)
        or isinstance(trees_per_bag, bool)
        or trees_per_bag < 2
    ):
        raise InputDataError(
            f"The 'trees_per_bag' parameter of {owner} must be an int >= 2 (the little-bags "
            f"variance compares trees grown on the same half-sample). Got {trees_per_bag!r}; "
            "use 2 (grf's ci.group.size default) or more."
        )
    if (
        not isinstance(n_estimators, Integral)
        or isinstance(n_estimators, bool)
        or n_estimators < trees_per_bag
        or n_estimators % trees_per_bag
    ):
        if isinstance(n_estimators, Integral) and n_estimators > 0:
            up = -(-int(n_estimators) // trees_per_bag) * trees_per_bag
            fix = f"use n_estimators={up}" + (
                f" or {up - trees_per_bag}" if up - trees_per_bag >= trees_per_bag else ""
            )
        else:
            fix = f"use e.g. n_estimators={50 * trees_per_bag} (50 bags)"
        raise InputDataError(
            f"The 'n_estimators' parameter of {owner} must be a positive multiple of "
            f"trees_per_bag={trees_per_bag} (econml grows n_estimators / trees_per_bag little "
            f"bags). Got {n_estimators!r}; {fix}, or change trees_per_bag."
        )
    return int(n_estimators) // int(trees_per_bag)


def regression_forest(learner, p: int, random_state):
    """The honest inference regression forest of ``learner``'s settings (resolved ``max_samples_``)."""
    return _GRFRegressionForest(
        n_estimators=learner.n_estimators,
        max_features=resolve_max_features(learner.max_features, p),
        min_samples_leaf=learner.min_samples_leaf,
        max_samples=learner.max_samples_,
        honest=True,
        inference=True,
        subforest_size=learner.trees_per_bag,
        n_jobs=learner.n_jobs,
        random_state=random_state,
    )
