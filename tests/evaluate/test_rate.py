"""RATE / TOC against brute-force loops, grf's invariances and known-truth simulations."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.errors import InputDataError
from eocausal.evaluate.rate import (
    DEFAULT_Q,
    compare_priorities,
    rate,
    rate_difference,
    rate_shared_draws,
)
from eocausal.evaluate.rate_core import _half_sample

# ------------------------------------------------------------ brute force


def brute_force_rate(scores, priorities, weights=None, q=DEFAULT_Q):
    """Plain loops over METHODS.md section 1, written without the vectorised code.

    Returns (AUTOC, QINI, TOC on q).
    """
    n = len(scores)
    w = [1.0] * n if weights is None else [float(v) for v in weights]
    # Weighted mean of the scores within each priority value.
    group_mean = {}
    for value in set(priorities.tolist()):
        members = [i for i in range(n) if priorities[i] == value]
        group_mean[value] = sum(w[i] * scores[i] for i in members) / sum(w[i] for i in members)
    # Python's sort is stable: ties keep their input order.
    order = sorted(range(n), key=lambda i: -priorities[i])
    total = sum(w)
    ate = sum(w[i] * scores[i] for i in range(n)) / total
    cum_w, cum_s, toc = [], [], []
    acc_w = acc_s = 0.0
    for i in order:
        acc_w += w[i]
        acc_s += w[i] * group_mean[priorities[i]]
        cum_w.append(acc_w)
        cum_s.append(acc_s)
        toc.append(acc_s / acc_w - ate)
    autoc = sum(w[i] * t for i, t in zip(order, toc)) / total
    qini = sum(cw / total * w[i] * t for i, cw, t in zip(order, cum_w, toc)) / total
    toc_q = []
    for frac in q:
        target = frac * total
        m = 0
        for j in range(n):
            if cum_w[j] <= target + 1e-12:
                m = j + 1
        s_m = cum_s[m - 1] if m > 0 else 0.0
        w_m = cum_w[m - 1] if m > 0 else 0.0
        nxt = group_mean[priorities[order[min(m, n - 1)]]]
        toc_q.append((s_m + (target - w_m) * nxt) / target - ate)
    return autoc, qini, np.array(toc_q)


@pytest.fixture
def small():
    rng = np.random.default_rng(7)
    n = 40
    scores = rng.normal(size=n) + 0.5
    return rng, n, scores


Q_ODD = np.array([0.013, 0.125, 0.3, 0.37, 0.5, 0.75, 0.8, 1.0])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_agrees_with_brute_force(small, ties, weighted):
    rng, n, scores = small
    prio = rng.choice([13, 14, 15, 18, 21, 58], n) if ties else rng.uniform(size=n)
    weights = rng.choice([0.5, 1.0, 2.0, 3.5], n) if weighted else None
    autoc_bf, qini_bf, toc_bf = brute_force_rate(scores, prio, weights, Q_ODD)
    autoc = rate(scores, prio, sample_weight=weights, q=Q_ODD, n_bootstrap=0)
    qini = rate(scores, prio, sample_weight=weights, q=Q_ODD, target="QINI", n_bootstrap=0)
    np.testing.assert_allclose(autoc.estimate, autoc_bf, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(qini.estimate, qini_bf, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(autoc.toc["estimate"], toc_bf, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(qini.toc["estimate"], toc_bf, rtol=1e-10, atol=1e-13)
    assert autoc.toc["estimate"].iloc[-1] == 0.0


def test_toc_on_every_cumulative_weight_averages_to_autoc(small):
    rng, n, scores = small
    prio = rng.uniform(size=n)
    weights = rng.choice([1.0, 2.0], n)
    order = np.argsort(-prio, kind="stable")
    q_full = np.cumsum(weights[order]) / weights.sum()
    q_full[-1] = 1.0
    res = rate(scores, prio, sample_weight=weights, q=q_full, n_bootstrap=0)
    weighted_mean = np.average(res.toc["estimate"], weights=weights[order])
    np.testing.assert_allclose(weighted_mean, res.estimate, rtol=1e-10)


def test_hand_computed_example():
    # Priorities 3 > 2 > 1 > 0 put the scores in the order 3, 0, 0, 1: ATE = 1 and
    # TOC_j = 3 - 1, 1.5 - 1, 1 - 1, 1 - 1.
    scores = np.array([0.0, 3.0, 0.0, 1.0])
    prio = np.array([2.0, 3.0, 1.0, 0.0])
    q = [0.2, 0.375, 0.5, 1.0]
    res = rate(scores, prio, q=q, n_bootstrap=0)
    np.testing.assert_allclose(res.estimate, (2.0 + 0.5) / 4)
    qini = rate(scores, prio, q=q, target="QINI", n_bootstrap=0)
    np.testing.assert_allclose(qini.estimate, (1 / 4 * 2.0 + 2 / 4 * 0.5) / 4)
    # q = 0.2: qW = 0.8 is below the first weight (m = 0): TOC = 3 - 1.
    # q = 0.375: m = 1 and half of the second unit: (3 + 0.5 * 0) / 1.5 - 1.
    # q = 0.5: m = 2 exactly: 3 / 2 - 1.
    np.testing.assert_allclose(res.toc["estimate"], [2.0, 1.0, 0.5, 0.0])


def test_constant_priorities_give_zero():
    rng = np.random.default_rng(0)
    res = rate(rng.normal(size=100), np.ones(100), seed=0)
    assert res.estimate == 0.0
    assert np.allclose(res.toc["estimate"], 0.0)


# ------------------------------------------------------------- invariances


def test_invariant_to_permuting_units():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=10)
    prio = np.array([10, 10, 10, 9, 8, 8, 7, 7, 7, 6.0])
    q = [0.125, 0.3, 0.375, 0.5, 0.75, 0.8, 1.0]
    perm = np.array([1, 2, 0, 3, 5, 4, 7, 8, 6, 9])
    r1 = rate(scores, prio, q=q, n_bootstrap=0)
    r2 = rate(scores[perm], prio[perm], q=q, n_bootstrap=0)
    np.testing.assert_allclose(r1.estimate, r2.estimate, rtol=1e-14)
    np.testing.assert_allclose(r1.toc["estimate"], r2.toc["estimate"], rtol=1e-14, atol=1e-15)


def test_weighted_permutation_invariance_as_grf():
    # With ties and unequal weights the AUTOC depends on the order inside a tie
    # group (grf's test allows 1e-2); the grid TOC and the QINI do not.
    rng = np.random.default_rng(4)
    scores = rng.normal(size=10)
    prio = np.array([10, 10, 10, 9, 8, 8, 7, 7, 7, 6.0])
    wts = np.array([1, 3, 1, 1, 0.5, 1.5, 1, 1, 2, 4.0])
    q = [0.125, 0.3, 0.375, 0.5, 0.75, 0.8, 1.0]
    perm = np.array([1, 2, 0, 3, 5, 4, 7, 8, 6, 9])
    kw = {"q": q, "n_bootstrap": 0}
    r1 = rate(scores, prio, sample_weight=wts, **kw)
    r2 = rate(scores[perm], prio[perm], sample_weight=wts[perm], **kw)
    q1 = rate(scores, prio, sample_weight=wts, target="QINI", **kw)
    q2 = rate(scores[perm], prio[perm], sample_weight=wts[perm], target="QINI", **kw)
    np.testing.assert_allclose(r1.toc["estimate"], r2.toc["estimate"], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(q1.estimate, q2.estimate, rtol=1e-13)
    np.testing.assert_allclose(r1.estimate, r2.estimate, atol=0.02 * abs(r1.estimate) + 0.02)


def test_invariant_to_rescaling_weights():
    rng = np.random.default_rng(5)
    n = 300
    scores = rng.normal(size=n)
    prio = rng.normal(size=n)
    wts = rng.choice([1.0, 2.0], n)
    for target in ("AUTOC", "QINI"):
        a = rate(scores, prio, sample_weight=wts, target=target, n_bootstrap=20, seed=42)
        b = rate(scores, prio, sample_weight=wts / 1000, target=target, n_bootstrap=20, seed=42)
        np.testing.assert_allclose(a.estimate, b.estimate, rtol=1e-12)
        np.testing.assert_allclose(a.std_err, b.std_err, rtol=1e-10)
        np.testing.assert_allclose(a.toc["std_err"], b.toc["std_err"], rtol=1e-10, atol=1e-15)


def test_integer_weights_approximate_duplicated_rows():
    rng = np.random.default_rng(6)
    n = 250
    x = rng.normal(size=n)
    scores = np.maximum(x, 0) + rng.normal(size=n)
    dupe = rng.choice(n, 150, replace=False)
    wts = np.ones(n)
    wts[dupe] = 2.0
    s_dup = np.r_[scores, scores[dupe]]
    x_dup = np.r_[x, x[dupe]]
    for target in ("AUTOC", "QINI"):
        a = rate(scores, x, sample_weight=wts, target=target, n_bootstrap=0)
        b = rate(s_dup, x_dup, target=target, n_bootstrap=0)
        np.testing.assert_allclose(a.estimate, b.estimate, rtol=0.01)
        np.testing.assert_allclose(a.toc["estimate"], b.toc["estimate"], rtol=0.01, atol=1e-12)


def test_duplicating_units_inside_own_cluster_keeps_estimate_and_se():
    rng = np.random.default_rng(8)
    n = 500
    x = rng.normal(size=n)
    scores = np.maximum(x, 0) + rng.normal(size=n)
    prio = rng.uniform(size=n)
    clusters = np.tile(np.arange(n), 5)
    for target in ("AUTOC", "QINI"):
        a = rate(scores, prio, target=target, seed=11)
        b = rate(np.tile(scores, 5), np.tile(prio, 5), clusters=clusters, target=target, seed=11)
        assert b.n == 5 * n and b.n_clusters == n
        np.testing.assert_allclose(a.estimate, b.estimate, rtol=0.05, atol=0.002)
        np.testing.assert_allclose(a.std_err, b.std_err, rtol=0.02)


def test_same_seed_same_numbers_and_seed_matters():
    rng = np.random.default_rng(9)
    scores, prio = rng.normal(size=200), rng.normal(size=200)
    a = rate(scores, prio, seed=5)
    b = rate(scores, prio, seed=5)
    c = rate(scores, prio, seed=6)
    assert a.std_err == b.std_err
    np.testing.assert_array_equal(a.replicates, b.replicates)
    assert a.std_err != c.std_err


# ------------------------------------------------------ comparing two rules


def test_compare_priorities_is_internally_consistent():
    rng = np.random.default_rng(10)
    n = 500
    x = rng.normal(size=n)
    scores = np.maximum(x, 0) + rng.normal(size=n)
    p1, p2 = np.maximum(x, 0), rng.uniform(size=n)
    r1 = rate(scores, p1, n_bootstrap=50, seed=42)
    r2 = rate(scores, p2, n_bootstrap=50, seed=42)
    c12 = compare_priorities(scores, p1, p2, n_bootstrap=50, seed=42)
    c21 = compare_priorities(scores, p2, p1, n_bootstrap=50, seed=42)
    assert c12.a.estimate == r1.estimate and c12.a.std_err == r1.std_err
    assert c12.b.estimate == r2.estimate and c12.b.std_err == r2.std_err
    np.testing.assert_allclose(c12.difference, r1.estimate - r2.estimate)
    np.testing.assert_allclose(c12.difference, -c21.difference)
    np.testing.assert_allclose(c12.std_err, c21.std_err)
    np.testing.assert_allclose(
        c12.std_err, np.std(r1.replicates[:, 0] - r2.replicates[:, 0], ddof=1)
    )
    np.testing.assert_allclose(
        c12.toc_difference["estimate"], r1.toc["estimate"] - r2.toc["estimate"], atol=1e-15
    )
    same = compare_priorities(scores, p2, p2, n_bootstrap=50, seed=42)
    assert same.difference == 0.0 and same.std_err == 0.0
    assert c12.to_dict()["a"]["estimate"] == r1.estimate


def test_rate_difference_refuses_unpaired_results():
    rng = np.random.default_rng(1)
    s = rng.normal(size=100)
    a = rate(s, rng.normal(size=100), n_bootstrap=10, seed=1)
    b = rate(s, rng.normal(size=100), n_bootstrap=10, seed=1, target="QINI")
    with pytest.raises(InputDataError, match="same units"):
        rate_difference(a, b)


# ------------------------------------------- statistical behaviour (known truth)


def _rejection_rate(effect, n_sims=200, n=1000, seed=0):
    """Share of |RATE ratio| > 1.96 when DR scores are tau(x) + noise, priorities x."""
    rng = np.random.default_rng(seed)
    reject = 0
    for sim in range(n_sims):
        x = rng.uniform(size=n)
        scores = effect(x) + rng.normal(scale=2.0, size=n)
        res = rate(scores, x, seed=sim)
        reject += abs(res.ratio) > 1.96
    return reject / n_sims


@pytest.mark.slow
def test_size_under_no_heterogeneity_and_power_under_heterogeneity():
    size = _rejection_rate(lambda x: np.full_like(x, 0.5), seed=1)
    power = _rejection_rate(lambda x: 0.75 * x, seed=2)
    # 200 simulations: a 5% test rejects 10 times on average (sd ~3).
    assert 0.01 <= size <= 0.10, size
    assert power >= 0.6, power


def test_autoc_beats_qini_for_sparse_and_qini_beats_autoc_for_diffuse():
    rng = np.random.default_rng(12)
    ratios = {"sparse": [], "diffuse": []}
    for sim in range(12):
        x = rng.uniform(size=1000)
        for kind, found in ratios.items():
            tau = 2.0 * (x > 0.9) if kind == "sparse" else 1.0 * x
            scores = tau + rng.normal(scale=2.0, size=x.size)
            a = rate(scores, x, n_bootstrap=100, seed=sim)
            b = rate(scores, x, target="QINI", n_bootstrap=100, seed=sim)
            found.append((a.ratio, b.ratio))
    sparse, diffuse = np.mean(ratios["sparse"], axis=0), np.mean(ratios["diffuse"], axis=0)
    assert sparse[0] > sparse[1]
    assert diffuse[1] > diffuse[0]


def test_has_not_changed():
    rng = np.random.default_rng(2024)
    n = 1000
    x = rng.normal(size=n)
    scores = np.maximum(x, 0) + rng.normal(size=n)
    clusters = rng.integers(0, 100, n)
    wts = rng.choice([1.0, 2.0], n)
    res = rate(scores, np.round(x, 1), clusters=clusters, sample_weight=wts, seed=3)
    qini = rate(scores, np.round(x, 1), clusters=clusters, sample_weight=wts, seed=3, target="QINI")
    frozen = FROZEN
    np.testing.assert_allclose(
        [res.estimate, res.std_err, qini.estimate, qini.std_err], frozen, rtol=1e-10
    )


# Standard errors re-frozen when the bootstrap switched from rng.choice to `_half_sample`
# (same law of the draws, see test_half_samples_are_uniform_subsets; estimates unchanged).
FROZEN = [0.614509458923652, 0.04600290640394505, 0.1593868693542042, 0.010088147371218626]


# ------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors():
    s = np.arange(10.0)
    with pytest.raises(InputDataError, match="one priority per evaluation unit"):
        rate(s, np.arange(9.0))
    with pytest.raises(InputDataError, match="NaN"):
        rate(np.r_[s[:-1], np.nan], s)
    with pytest.raises(InputDataError, match="NaN or infinite"):
        rate(s, np.r_[s[:-1], np.inf])
    with pytest.raises(InputDataError, match="`q`"):
        rate(s, s, q=[0.5, 0.9])
    with pytest.raises(InputDataError, match="`q`"):
        rate(s, s, q=[0.5, 0.4, 1.0])
    with pytest.raises(InputDataError, match="`target`"):
        rate(s, s, target="AUC")
    with pytest.raises(InputDataError, match="positive"):
        rate(s, s, sample_weight=np.r_[0.0, np.ones(9)])
    with pytest.raises(InputDataError, match="at least 4 clusters"):
        rate(s, s, clusters=np.r_[np.zeros(5), np.ones(5)])
    with pytest.raises(InputDataError, match="`n_bootstrap`"):
        rate(s, s, n_bootstrap=-1)
    with pytest.raises(InputDataError, match="empty"):
        rate_shared_draws(s, {})


def test_cluster_minimum_is_grfs_four():
    """grf's boot_grf stops when floor(C / 2) <= 1: 4 clusters work, 3 do not."""
    rng = np.random.default_rng(3)
    scores, prio = rng.normal(size=12), rng.normal(size=12)
    four = np.repeat(np.arange(4), 3)
    res = rate(scores, prio, clusters=four, n_bootstrap=200, seed=0)
    assert res.n_clusters == 4 and res.std_err > 0
    # Every replicate is the RATE of the units of exactly two of the four clusters.
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    by_pair = [
        rate(scores[keep], prio[keep], n_bootstrap=0).estimate
        for keep in (np.isin(four, pair) for pair in pairs)
    ]
    distance = np.abs(res.replicates[:, :1] - np.array(by_pair)[None, :]).min(axis=1)
    np.testing.assert_allclose(distance, 0.0, atol=1e-12)
    assert np.std(res.replicates[:, 0], ddof=1) == pytest.approx(res.std_err)
    three = np.repeat(np.arange(3), 4)
    for call in (
        lambda: rate(scores, prio, clusters=three),
        lambda: compare_priorities(scores, prio, -prio, clusters=three),
        lambda: rate_shared_draws(scores, {"a": prio}, clusters=three),
    ):
        with pytest.raises(InputDataError, match="at least 4 clusters; got 3.*finer clusters"):
            call()
    with pytest.raises(InputDataError, match="at least 4 clusters; got 2"):
        rate(scores, prio, clusters=np.repeat([0, 1], 6))
    # Without clusters each unit is its own cluster: 4 units work, 3 do not.
    assert rate(scores[:4], prio[:4], seed=0).n_clusters == 4
    with pytest.raises(InputDataError, match="at least 4 units.*got 3.*more units"):
        rate(scores[:3], prio[:3])


@pytest.mark.parametrize("n_clusters", [6, 7])
def test_half_samples_are_uniform_subsets(n_clusters):
    """Every subset of floor(C / 2) clusters is equally likely, as with grf's sample()."""
    from itertools import combinations

    from scipy.stats import chi2

    half = n_clusters // 2
    index = {c: i for i, c in enumerate(combinations(range(n_clusters), half))}
    rng = np.random.default_rng(7)
    counts = np.zeros(len(index))
    n_draws = 300 * len(index)
    for _ in range(n_draws):
        mask = _half_sample(rng, n_clusters, half)
        counts[index[tuple(np.flatnonzero(mask).tolist())]] += 1
    expected = n_draws / len(index)
    statistic = np.sum((counts - expected) ** 2 / expected)
    assert statistic < chi2.ppf(0.999, len(index) - 1)


def test_half_samples_have_exact_size_and_even_inclusion():
    rng = np.random.default_rng(8)
    masks = np.array([_half_sample(rng, 10_001, 5_000) for _ in range(400)])
    assert (masks.sum(axis=1) == 5_000).all()
    # Each cluster is kept with probability 5000 / 10001; 400 draws give sd 0.025.
    inclusion = masks.mean(axis=0)
    assert abs(inclusion.mean() - 5_000 / 10_001) < 1e-12
    assert np.abs(inclusion - 0.5).max() < 0.15


@pytest.mark.parametrize("target", ["AUTOC", "QINI"])
def test_fast_replicates_equal_general_path(target):
    """Unit weights without ties use one dot product per replicate; weights of 1 take the
    general cumulative-sum path on the same draws: the replicates agree to 1e-12."""
    rng = np.random.default_rng(9)
    n = 3000
    x = rng.normal(size=n)
    scores = np.maximum(x, 0) + rng.normal(size=n)
    clusters = rng.integers(0, 500, n)
    fast = rate(scores, x, target=target, n_bootstrap=40, clusters=clusters, seed=4)
    general = rate(
        scores,
        x,
        target=target,
        n_bootstrap=40,
        clusters=clusters,
        sample_weight=np.ones(n),
        seed=4,
    )
    np.testing.assert_allclose(fast.replicates, general.replicates, rtol=1e-12, atol=1e-12)


def test_to_dict_is_json_serialisable():
    import json

    rng = np.random.default_rng(0)
    res = rate(rng.normal(size=50), rng.normal(size=50), n_bootstrap=0)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["ratio"] is None and d["std_err"] == 0.0 and len(d["toc"]["q"]) == 10
