"""The arithmetic of RATE: priority rules sorted once, tie averages, the TOC on grf's grid,
and its replicates over half-samples of clusters (see :mod:`eocausal.evaluate.rate` for the
estimands, the public functions and the references).

A replicate keeps the units of the drawn clusters; a subset of a sorted order is still sorted,
so a replicate is one vectorised O(n) pass over a boolean mask of the sorted units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import digamma

__all__: list[str] = []

#: tolerance of grf's grid lookup (``findInterval`` on cumulative weights)
_FIND_TOL = 1e-15


@dataclass(frozen=True)
class _SortedRule:
    """One priority rule's sorted view of the evaluation units."""

    w: np.ndarray | None  # (n,) weights, sorted; None when all weights are 1
    sw: (
        np.ndarray
    )  # (n,) score * weight in sorted order (grf's ``DR.scores.sorted * sample.weights``)
    codes: np.ndarray  # (n,) cluster code per sorted position
    group_of: np.ndarray | None  # (n,) tie group of each sorted position; None without ties


def _sort_rule(
    priority: np.ndarray, gw: np.ndarray, w: np.ndarray | None, codes: np.ndarray
) -> _SortedRule:
    if priority.dtype.kind == "f":
        # Negating a float is exact and keeps ties (0.0 and -0.0 included) equal. Without
        # ties every sort gives the stable order, so the faster unstable one is tried first.
        order = np.argsort(-priority)
        r = priority[order]
        if np.any(r[1:] == r[:-1]):
            order = np.argsort(-priority, kind="stable")
            r = priority[order]
    else:
        _, rank = np.unique(priority, return_inverse=True)
        order = np.argsort(-rank.astype(np.int64), kind="stable")
        r = rank[order]
    gw_s = gw[order]
    w_s = None if w is None else w[order]
    new_group = np.empty(r.size, dtype=bool)
    new_group[0] = True
    np.not_equal(r[1:], r[:-1], out=new_group[1:])
    if new_group.all():
        group_of = None
        sw = gw_s if w_s is None else gw_s / w_s * w_s
    else:
        group_of = np.cumsum(new_group) - 1
        sw = gw_s  # tie groups are averaged in `_statistics`
    return _SortedRule(w_s, sw, codes[order], group_of)


def _statistics(
    rule: _SortedRule, kept: np.ndarray | None, q: np.ndarray, qini: bool
) -> np.ndarray:
    """RATE and TOC(q) on all units (``kept=None``) or on the sorted positions ``kept``.

    ``kept`` must be increasing, so the kept units are still in priority order.
    Returns an array of shape (1 + len(q),).
    """
    n_kept = rule.sw.size if kept is None else kept.size
    if rule.w is None:
        w = None  # unit weights: the cumulative weights are the counts 1, 2, ...
    else:
        w = rule.w if kept is None else rule.w[kept]
    sw = rule.sw if kept is None else rule.sw[kept]
    scores = None
    if rule.group_of is not None:
        # Weighted mean of the scores inside each group of tied priorities.
        group = rule.group_of if kept is None else rule.group_of[kept]
        n_groups = int(rule.group_of[-1]) + 1
        num = np.bincount(group, weights=sw, minlength=n_groups)
        den = np.bincount(group, weights=w, minlength=n_groups)
        avg = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        scores = avg[group]
        sw = scores if w is None else scores * w
    cum_w = np.arange(1.0, n_kept + 1.0) if w is None else np.cumsum(w)
    cum_s = np.cumsum(sw)
    total_w = cum_w[-1]
    ate = cum_s[-1] / total_w
    toc = cum_s / cum_w
    toc -= ate
    # Products and sums rather than BLAS dot products: BLAS threads stall on busy machines.
    weighted_toc = toc if w is None else toc * w
    if qini:
        rate = np.sum(cum_w / total_w * weighted_toc) / total_w
    else:
        rate = np.sum(weighted_toc) / total_w
    target = q * total_w
    idx = np.searchsorted(cum_w, target + _FIND_TOL, side="right")
    lo = np.maximum(idx - 1, 0)
    nxt = np.minimum(idx, n_kept - 1)
    if scores is not None:
        next_score = scores[nxt]
    else:
        next_score = sw[nxt] if w is None else sw[nxt] / w[nxt]
    adj = target - cum_w[lo]
    toc_grid = (cum_s[lo] + adj * next_score) / (cum_w[lo] + adj) - ate
    return np.concatenate([[rate], toc_grid])


def _half_sample(rng: np.random.Generator, n_clusters: int, half: int) -> np.ndarray:
    """Boolean mask of ``half`` clusters drawn uniformly without replacement.

    Each cluster is first kept with probability 1/2 (one random bit each); then
    uniformly drawn kept (or dropped) clusters are flipped until exactly ``half``
    are kept. Every step treats the cluster labels symmetrically, so the mask is
    uniform over the subsets of size ``half``: the same law as grf's
    ``sample(clusters, floor(C / 2))``, at a fraction of the cost of a shuffle.
    """
    raw = np.frombuffer(rng.bytes((n_clusters + 7) // 8), dtype=np.uint8)
    mask = np.unpackbits(raw, count=n_clusters).view(bool)
    excess = int(np.count_nonzero(mask)) - half
    while excess:
        state = excess > 0  # flip kept clusters when too many are kept, dropped ones otherwise
        cand = rng.integers(0, n_clusters, 2 * abs(excess) + 16)
        # A label drawn twice is flipped once: never past `half`, and the loop recounts.
        mask[cand[mask[cand] == state][: abs(excess)]] = not state
        excess = int(np.count_nonzero(mask)) - half
    return mask


def _fast_statistics(
    rule: _SortedRule, kept: np.ndarray, q: np.ndarray, qini: bool, ramp: np.ndarray
) -> np.ndarray:
    """:func:`_statistics` for unit weights and no ties, in one pass over the kept scores.

    With :math:`m` kept units, scores :math:`s_k` and :math:`S_j = \\sum_{k \\le j} s_k`,
    :math:`\\sum_j S_j / j = \\sum_k s_k (H_m - H_{k-1})` and
    :math:`\\sum_j S_j = \\sum_k s_k (m + 1 - k)`, so the AUTOC and the QINI need one
    dot product with ``ramp`` (the harmonic numbers :math:`H_{k-1}`, or :math:`k`)
    instead of a cumulative sum; the grid needs the sums of 10 slices.
    """
    m = kept.size
    s = np.take(rule.sw, kept)
    target = q * float(m)
    idx = np.minimum(np.floor(target + _FIND_TOL), m).astype(np.int64)
    lo = np.maximum(idx - 1, 0)
    nxt = np.minimum(idx, m - 1)
    ends = lo + 1  # cum_s[lo] is the sum of the first lo + 1 scores
    starts = np.concatenate([[0], ends[:-1]])
    parts = np.add.reduceat(s, np.minimum(starts, m - 1))
    parts[ends == starts] = 0.0  # reduceat gives s[start] for an empty slice
    head = np.cumsum(parts)
    total = head[-1]  # q ends at 1, so the last slice ends at m
    ate = total / m
    dot = np.einsum("i,i->", s, ramp[:m])
    if qini:
        rate = ((m + 1.0) * total - dot) / (float(m) * m) - ate * (m + 1.0) / (2.0 * m)
    else:
        rate = (ramp[m] * total - dot) / m - ate
    adj = target - ends
    toc_grid = (head + adj * s[nxt]) / (ends + adj) - ate
    return np.concatenate([[rate], toc_grid])


def _point_and_replicates(
    rules: list[_SortedRule], n_clusters: int, q: np.ndarray, qini: bool, n_bootstrap: int, seed
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Point estimates and (n_bootstrap, 1 + len(q)) replicates of every rule, same draws."""
    points = [_statistics(rule, None, q, qini) for rule in rules]
    reps = [np.empty((n_bootstrap, 1 + q.size)) for _ in rules]
    half = n_clusters // 2
    n = rules[0].sw.size
    ramp = None
    if n_bootstrap and any(rule.w is None and rule.group_of is None for rule in rules):
        if qini:
            ramp = np.arange(1.0, n + 1.0)
        else:
            # H_{k-1} = digamma(k) + Euler's gamma, to about 1e-16 relative.
            ramp = digamma(np.arange(1.0, n + 2.0)) + np.euler_gamma
            ramp[0] = 0.0
    rng = np.random.default_rng(seed)
    for b in range(n_bootstrap):
        keep = _half_sample(rng, n_clusters, half)
        for rule, rep in zip(rules, reps):
            kept = np.flatnonzero(np.take(keep, rule.codes))
            if ramp is not None and rule.w is None and rule.group_of is None:
                rep[b] = _fast_statistics(rule, kept, q, qini, ramp)
            else:
                rep[b] = _statistics(rule, kept, q, qini)
    return list(zip(points, reps))


def _clean(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=np.float64)
    values[np.abs(values) < 1e-15] = 0.0
    return values


def _std(reps: np.ndarray) -> np.ndarray:
    if reps.shape[0] < 2:
        return np.zeros(reps.shape[1])
    return _clean(np.std(reps, axis=0, ddof=1))
