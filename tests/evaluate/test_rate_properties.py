"""Property tests of RATE (hypothesis): grf's invariances and brute force on random small inputs.

Each property draws 50 inputs of 8 to 60 units, with tied priorities, weights and clusters,
from a fixed seed (``derandomize=True``), so every run checks the same examples.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eocausal.evaluate.rate import rate

PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)
TOL = {"rtol": 1e-12, "atol": 1e-12}

_SCORE = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
_WEIGHT = st.sampled_from([0.5, 1.0, 2.0, 3.5]) | st.floats(0.05, 20)


@dataclass
class Units:
    scores: np.ndarray
    priorities: np.ndarray
    weights: np.ndarray | None
    clusters: np.ndarray | None

    def __len__(self) -> int:
        return self.scores.size

    def take(self, index) -> Units:
        pick = lambda a: None if a is None else a[index]
        return Units(
            self.scores[index], self.priorities[index], pick(self.weights), pick(self.clusters)
        )


@st.composite
def units(draw, *, weights=True, clusters=True) -> Units:
    """8 to 60 units; few distinct priorities (many ties) as often as many."""
    n = draw(st.integers(8, 60))
    scores = draw(hnp.arrays(np.float64, n, elements=_SCORE))
    n_levels = draw(st.integers(1, n))
    levels = st.integers(0, n_levels - 1).map(lambda v: 0.37 * v - 2.0)
    priorities = draw(hnp.arrays(np.float64, n, elements=levels))
    w = draw(st.none() | hnp.arrays(np.float64, n, elements=_WEIGHT)) if weights else None
    cl = None
    if clusters and draw(st.booleans()):
        cl = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 9)))
        cl[:4] = [0, 1, 2, 3]  # the bootstrap needs at least 4 clusters
    return Units(scores, priorities, w, cl)


@st.composite
def grids(draw) -> np.ndarray:
    """A TOC grid: strictly increasing fractions in (0, 1] ending at 1."""
    inner = draw(st.lists(st.floats(0.001, 0.999), max_size=8, unique=True))
    return np.array(sorted(inner) + [1.0])


def _rate(u: Units, q, target="AUTOC", **kw):
    kw.setdefault("n_bootstrap", 0)
    return rate(
        u.scores,
        u.priorities,
        sample_weight=u.weights,
        clusters=u.clusters,
        q=q,
        target=target,
        **kw,
    )


def _points(u: Units, q) -> np.ndarray:
    """[AUTOC, QINI, TOC(q)...] as :func:`rate` reports them."""
    autoc, qini = _rate(u, q), _rate(u, q, "QINI")
    return np.r_[autoc.estimate, qini.estimate, autoc.toc["estimate"].to_numpy()]


# ------------------------------------------------------------ brute force


def brute_force(scores, priorities, weights, q) -> np.ndarray:
    """METHODS.md section 1, one step at a time in plain Python: [AUTOC, QINI, TOC(q)...]."""
    n = len(scores)
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    # 1. sort by priority, decreasing (Python's sort is stable)
    order = sorted(range(n), key=lambda i: -priorities[i])
    # 2. inside each group of equal priority, the weighted mean of the scores
    tilde = {}
    for i in range(n):
        group = [k for k in range(n) if priorities[k] == priorities[i]]
        tilde[i] = sum(w[k] * scores[k] for k in group) / sum(w[k] for k in group)
    # 3. cumulative weights and sums, ATE, TOC_j
    cum_w, cum_s = [], []
    acc_w = acc_s = 0.0
    for i in order:
        acc_w += w[i]
        acc_s += w[i] * tilde[i]
        cum_w.append(acc_w)
        cum_s.append(acc_s)
    total = cum_w[-1]
    ate = cum_s[-1] / total
    toc = [s / cw - ate for s, cw in zip(cum_s, cum_w)]
    # 4. AUTOC and QINI
    autoc = sum(w[i] * t for i, t in zip(order, toc)) / total
    qini = sum(cw / total * w[i] * t for i, cw, t in zip(order, cum_w, toc)) / total
    # 5. TOC on the grid: m = max{j : W_j <= qW}, possibly 0
    out = [autoc, qini]
    for frac in q:
        target = frac * total
        m = max([j + 1 for j in range(n) if cum_w[j] <= target], default=0)
        s_m = cum_s[m - 1] if m else 0.0
        w_m = cum_w[m - 1] if m else 0.0
        nxt = tilde[order[min(m, n - 1)]]
        out.append((s_m + (target - w_m) * nxt) / target - ate)
    return np.array(out)


# ------------------------------------------------------------- properties


@PROPERTY
@given(units(), grids())
def test_point_estimates_equal_brute_force(u, q):
    expected = brute_force(u.scores, u.priorities, u.weights, q)
    np.testing.assert_allclose(_points(u, q), expected, **TOL)


def _constant_weight_in_ties(u: Units) -> bool:
    if u.weights is None:
        return True
    return all(np.ptp(u.weights[u.priorities == v]) == 0 for v in np.unique(u.priorities))


@PROPERTY
@given(units(), grids(), st.data())
def test_invariant_to_permuting_units(u, q, data):
    v = u.take(np.array(data.draw(st.permutations(range(len(u))))))
    a, b = _points(u, q), _points(v, q)
    # QINI and the grid TOC never depend on the order inside a tie group; the AUTOC does
    # when weights differ inside one (grf's own test allows 1e-2 there).
    np.testing.assert_allclose(b[1:], a[1:], **TOL)
    if _constant_weight_in_ties(u):
        np.testing.assert_allclose(b[0], a[0], **TOL)
    if u.clusters is not None:
        # The bootstrap draws cluster labels, not rows: the replicates do not move either.
        for target in ("AUTOC", "QINI") if u.weights is None else ("QINI",):
            ra = _rate(u, q, target, n_bootstrap=10, seed=3).replicates
            rb = _rate(v, q, target, n_bootstrap=10, seed=3).replicates
            np.testing.assert_allclose(rb, ra, **TOL)


@PROPERTY
@given(units(), grids(), st.floats(1e-3, 1e3))
def test_invariant_to_rescaling_all_weights(u, q, scale):
    weights = np.ones(len(u)) if u.weights is None else u.weights
    a = Units(u.scores, u.priorities, weights, u.clusters)
    b = Units(u.scores, u.priorities, weights * scale, u.clusters)
    np.testing.assert_allclose(_points(b, q), _points(a, q), **TOL)
    ra = _rate(a, q, "QINI", n_bootstrap=10, seed=1)
    rb = _rate(b, q, "QINI", n_bootstrap=10, seed=1)
    np.testing.assert_allclose(rb.replicates, ra.replicates, **TOL)
    np.testing.assert_allclose(rb.std_err, ra.std_err, rtol=1e-10, atol=1e-12)


@PROPERTY
@given(units(weights=False, clusters=False), grids(), st.data())
def test_integer_weights_equal_duplicated_rows(u, q, data):
    counts = data.draw(hnp.arrays(np.int64, len(u), elements=st.integers(1, 3)))
    weighted = Units(u.scores, u.priorities, counts.astype(float), None)
    rows = np.repeat(np.arange(len(u)), counts)
    copies = Units(u.scores[rows], u.priorities[rows], None, None)
    # The TOC is S(qW) / (qW) - ATE with S piecewise linear in the cumulative weight:
    # a weight of 3 and three copies trace the same S, so the TOC agrees on any grid ...
    np.testing.assert_allclose(_points(weighted, q)[2:], _points(copies, q)[2:], **TOL)
    # ... and the AUTOC / QINI of the copies are sums of the weighted TOC at every copy.
    total = int(counts.sum())
    steps = np.arange(1, total + 1)
    grid = steps / total
    toc = _rate(weighted, grid).toc["estimate"].to_numpy()
    np.testing.assert_allclose(_rate(copies, grid).estimate, toc.mean(), **TOL)
    qini = np.sum(steps * toc) / total**2
    np.testing.assert_allclose(_rate(copies, grid, "QINI").estimate, qini, **TOL)


@st.composite
def tied_units(draw) -> Units:
    """8 to 60 units in tie groups of 1 to 4, each group with one weight."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=3, max_size=30))
    sizes = [s for s, total in zip(sizes, np.cumsum(sizes)) if total <= 60]
    if sum(sizes) < 8:
        sizes += [4, 4]
    n = sum(sizes)
    scores = draw(hnp.arrays(np.float64, n, elements=_SCORE))
    group_weight = draw(hnp.arrays(np.float64, len(sizes), elements=_WEIGHT))
    level = draw(st.permutations(range(len(sizes))))
    priorities = np.repeat(np.array(level, dtype=float), sizes)
    shuffle = draw(st.permutations(range(n)))
    u = Units(scores, priorities, np.repeat(group_weight, sizes), None)
    return u.take(np.array(shuffle))


def _untied(scores, weights, q) -> np.ndarray:
    """[AUTOC, QINI, TOC(q)...] of units already in priority order, no ties."""
    cum_w, cum_s = np.cumsum(weights), np.cumsum(weights * scores)
    total = cum_w[-1]
    ate = cum_s[-1] / total
    toc = cum_s / cum_w - ate
    out = [np.sum(weights * toc) / total, np.sum(cum_w / total * weights * toc) / total]
    for frac in q:
        m = np.count_nonzero(cum_w <= frac * total)
        s_m, w_m = (cum_s[m - 1], cum_w[m - 1]) if m else (0.0, 0.0)
        nxt = scores[min(m, scores.size - 1)]
        out.append((s_m + (frac * total - w_m) * nxt) / (frac * total) - ate)
    return np.array(out)


@PROPERTY
@given(tied_units())
def test_tie_groups_equal_the_average_over_their_orderings(u):
    order = np.argsort(-u.priorities, kind="stable")
    prio, score, weight = u.priorities[order], u.scores[order], u.weights[order]
    starts = np.flatnonzero(np.r_[True, prio[1:] != prio[:-1]])
    ends = np.r_[starts[1:], prio.size]
    cum_w = np.r_[0.0, np.cumsum(weight)]
    # one grid point inside every tie group, at half its weight
    mid = (cum_w[starts] + cum_w[ends]) / 2 / cum_w[-1]
    q = np.r_[mid[mid < 1.0], 1.0]
    base = _untied(score, weight, q)
    expected = base.copy()
    for lo, hi in zip(starts, ends):
        # Average over every order of this group, the others kept: the AUTOC and QINI
        # are sums over positions, so the group's share of them is averaged; the TOC at
        # the grid point inside the group depends on this group's order only.
        runs = []
        for perm in itertools.permutations(range(lo, hi)):
            idx = np.r_[np.arange(lo), perm, np.arange(hi, prio.size)].astype(int)
            runs.append(_untied(score[idx], weight[idx], q))
        avg = np.mean(runs, axis=0)
        expected[:2] += avg[:2] - base[:2]
        inside = (q * cum_w[-1] > cum_w[lo]) & (q * cum_w[-1] < cum_w[hi])
        expected[2:][inside] = avg[2:][inside]
    np.testing.assert_allclose(_points(u, q), expected, **TOL)
