"""Two-way fixed effects on simulated panels with a known effect."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eocausal.errors import InputDataError
from eocausal.estimate import twfe


def _panel(n_units=300, n_periods=6, effect=1.5, seed=0):
    rng = np.random.default_rng(seed)
    unit_fe = rng.normal(scale=2.0, size=n_units)
    time_fe = rng.normal(scale=1.0, size=n_periods)
    adopt = rng.choice([2, 3, 4, 99], size=n_units)  # staggered adoption, 99 = never
    region = rng.integers(0, 30, size=n_units)
    rows = []
    for i in range(n_units):
        shock = 0.0
        for t in range(n_periods):
            shock = 0.6 * shock + rng.normal()  # serially correlated errors within unit
            d = int(t >= adopt[i])
            y = unit_fe[i] + time_fe[t] + effect * d + shock
            rows.append((f"v{i}", t, d, y, region[i]))
    return pd.DataFrame(rows, columns=["unit", "year", "treated", "y", "region"])


def test_twfe_recovers_effect_and_matches_within_ols():
    df = _panel()
    res = twfe(df, unit_col="unit", time_col="year", treatment_col="treated", outcome_col="y")
    assert res.ci_lower < 1.5 < res.ci_upper
    assert abs(res.estimate - 1.5) < 0.15
    assert (res.n_units, res.n_periods, res.n_obs, res.n_clusters) == (300, 6, 1800, 300)

    # Brute force: balanced panel, double-demeaning then OLS through the origin.
    def demean(col):
        v = df[col]
        return (
            v
            - df.groupby("unit")[col].transform("mean")
            - df.groupby("year")[col].transform("mean")
            + v.mean()
        )

    d, y = demean("treated"), demean("y")
    assert res.estimate == pytest.approx(float((d * y).sum() / (d * d).sum()), rel=1e-8)
    json.dumps(res.to_dict())


def test_twfe_cluster_column_and_coverage():
    hits = []
    for seed in range(8):
        df = _panel(n_units=120, seed=seed)
        res = twfe(
            df,
            unit_col="unit",
            time_col="year",
            treatment_col="treated",
            outcome_col="y",
            cluster_col="region",
        )
        hits.append(res.ci_lower < 1.5 < res.ci_upper)
    assert res.cluster == "region" and res.n_clusters <= 30
    assert np.mean(hits) >= 0.75


def test_twfe_input_errors():
    df = _panel(n_units=20)
    with pytest.raises(InputDataError, match="lacks columns"):
        twfe(df, unit_col="unit", time_col="yr", treatment_col="treated", outcome_col="y")
    dup = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(InputDataError, match=r"more than one row per \(unit, period\).*v0"):
        twfe(dup, unit_col="unit", time_col="year", treatment_col="treated", outcome_col="y")
    bad = df.copy()
    bad.loc[5, "y"] = np.nan
    with pytest.raises(InputDataError, match=r"'y' has NaN.*\('v0', 5\)"):
        twfe(bad, unit_col="unit", time_col="year", treatment_col="treated", outcome_col="y")


# --------------------------------------------------------------------------- panel_effects
from eocausal.errors import OverlapWarning  # noqa: E402
from eocausal.estimate import panel_effects  # noqa: E402

_COLS = dict(unit_col="unit", time_col="year", treatment_col="d", outcome_col="y")


def _placement_panel(n=600, T=4, t0=2, tau=1.0, h=0.5, lam=1.0, seed=0, n_clusters=None):
    """Programme placement on x with conditional parallel trends.

    e = logistic(-0.4 + x), G ~ Bernoulli(e), tau_i = tau + h x,
    Y_it = a_i + g_t + lam x t/(T-1) + tau_i D_it + AR(1) noise (+ cluster-period shocks).
    Returns the long frame, the true propensity (Series by unit), the sample ATT and
    the in-sample trend bias of the unadjusted DiD,
    lam (xbar_1 - xbar_0)(tbar_post - tbar_pre) / (T - 1).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = 1.0 / (1.0 + np.exp(-(-0.4 + x)))
    G = (rng.random(n) < e).astype(int)
    tau_i = tau + h * x
    t = np.arange(T)
    eps = np.empty((n, T))
    eps[:, 0] = rng.normal(size=n)
    for k in range(1, T):
        eps[:, k] = 0.5 * eps[:, k - 1] + rng.normal(0, np.sqrt(0.75), n)
    cl = np.arange(n) if n_clusters is None else rng.integers(0, n_clusters, n)
    if n_clusters is not None:
        eps += 0.7 * rng.normal(size=(n_clusters, T))[cl]
    D = G[:, None] * (t[None, :] >= t0)
    Y = (rng.normal(size=n) + x)[:, None] + rng.normal(0, 0.5, T)[None, :]
    Y = Y + lam * x[:, None] * t[None, :] / (T - 1) + tau_i[:, None] * D + eps
    ids = np.array([f"u{i:04d}" for i in range(n)])
    frame = pd.DataFrame(
        {
            "unit": np.repeat(ids, T),
            "year": np.tile(2000 + t, n),
            "d": D.ravel(),
            "y": Y.ravel(),
            "cl": np.repeat(cl, T),
        }
    )
    dx = x[G == 1].mean() - x[G == 0].mean()
    trend_bias = lam * dx * (t[t0:].mean() - t[:t0].mean()) / (T - 1)
    return frame, pd.Series(e, index=ids), float(tau_i[G == 1].mean()), float(trend_bias)


def test_panel_effects_recover_the_att_and_unweighted_twfe_has_the_trend_bias():
    frame, e, att, bias = _placement_panel(seed=1)
    res = panel_effects(frame, propensity=e, seed=0, **_COLS)
    assert [r.method for r in res.effects] == ["twfe", "twfe_ipw", "did_ipw"]
    for method in ("twfe_ipw", "did_ipw"):
        assert abs(res[method].estimate - att) < 2 * res[method].std_err
    # the unadjusted TWFE is off by the known trend bias (about 0.55 here), not by noise
    assert bias > 0.4
    assert res["twfe"].estimate - att > 3 * res["twfe"].std_err
    assert abs(res["twfe"].estimate - att - bias) < 2 * res["twfe"].std_err
    shape = (res.n_units, res.n_periods, res.n_pre, res.n_post, res.adoption_period)
    assert shape == (600, 4, 2, 2, 2002)
    assert res.n_treated + res.n_control == 600
    assert json.loads(json.dumps(res.to_dict()))["effects"][2]["method"] == "did_ipw"


def test_panel_effects_agree_with_brute_force():
    """Block design: weighted TWFE = Hajek DiD-IPW by hand; its SE = the clustered influence SE."""
    frame, e, _, _ = _placement_panel(n=200, T=5, t0=3, seed=2)
    res = panel_effects(frame, propensity=e, seed=0, **_COLS)
    wide = frame.pivot(index="unit", columns="year", values="y").to_numpy()
    G = frame.groupby("unit")["d"].max().to_numpy()
    ev = e.sort_index().to_numpy()
    dY = wide[:, 3:].mean(axis=1) - wide[:, :3].mean(axis=1)
    r = ev / (1 - ev)
    mu1 = dY[G == 1].mean()
    mu0 = np.sum(r * (1 - G) * dY) / np.sum(r * (1 - G))
    assert res["twfe_ipw"].estimate == pytest.approx(mu1 - mu0, rel=1e-9)
    assert res["did_ipw"].estimate == pytest.approx(mu1 - mu0, rel=1e-9)
    assert res["twfe"].estimate == pytest.approx(dY[G == 1].mean() - dY[G == 0].mean(), rel=1e-9)
    # linearised ATT: psi_i = G (dY - mu1) / n1 - (1 - G) r (dY - mu0) / sum((1 - G) r)
    psi = G * (dY - mu1) / G.sum() - (1 - G) * r * (dY - mu0) / np.sum((1 - G) * r)
    n = len(G)
    assert res["twfe_ipw"].std_err == pytest.approx(np.sqrt(n / (n - 1) * np.sum(psi**2)), rel=1e-6)
    # the bootstrap SE is a different estimate of the same quantity
    assert res["did_ipw"].std_err == pytest.approx(res["twfe_ipw"].std_err, rel=0.15)


def test_panel_effects_invariances():
    frame, e, _, _ = _placement_panel(n=150, seed=3, n_clusters=20)
    base = panel_effects(frame, propensity=e, cluster_col="cl", seed=5, **_COLS).to_frame()
    shuffled = frame.sample(frac=1.0, random_state=0).assign(year=lambda f: f["year"] - 2000)
    perm = panel_effects(shuffled, propensity=e.iloc[::-1], cluster_col="cl", seed=5, **_COLS)
    np.testing.assert_allclose(perm.to_frame()["estimate"], base["estimate"], rtol=1e-10)
    np.testing.assert_allclose(perm.to_frame()["std_err"][:2], base["std_err"][:2], rtol=1e-8)
    weighted = panel_effects(frame.assign(w=3.0), propensity=e, cluster_col="cl", weight_col="w",
                             seed=5, **_COLS).to_frame()
    np.testing.assert_allclose(weighted["estimate"], base["estimate"], rtol=1e-10)
    np.testing.assert_allclose(weighted["std_err"], base["std_err"], rtol=1e-8)
    assert (base["n_clusters"] == 20).all()


def test_panel_effects_standard_errors_match_monte_carlo_sd():
    estimates, ses = [], []
    for seed in range(60):
        frame, e, _, _ = _placement_panel(n=300, seed=100 + seed, n_clusters=60)
        res = panel_effects(
            frame, propensity=e, cluster_col="cl", n_bootstrap=100, seed=seed, **_COLS
        )
        estimates.append(res.to_frame()["estimate"].to_numpy())
        ses.append(res.to_frame()["std_err"].to_numpy())
    sd = np.std(estimates, axis=0, ddof=1)
    ratio = np.mean(ses, axis=0) / sd
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    # the weighted estimators centre on the population ATT (E[tau | G = 1] = 1 + 0.5 E[x | G = 1])
    assert abs(np.mean(estimates, axis=0)[1] - np.mean(estimates, axis=0)[2]) < 1e-9


def test_panel_effects_input_errors():
    frame, e, _, _ = _placement_panel(n=40, seed=4)
    ever = frame.groupby("unit")["d"].max()
    treated_unit = ever.index[ever == 1][0]
    control_unit = ever.index[ever == 0][0]

    def run(f=frame, p=e, **kw):
        return panel_effects(f, propensity=p, **{**_COLS, **kw})

    with pytest.raises(InputDataError, match=r"unbalanced.*'u0000'.*drop these units"):
        run(frame.iloc[1:])
    off = frame.copy()
    off.loc[(off["unit"] == treated_unit) & (off["year"] == 2003), "d"] = 0
    with pytest.raises(InputDataError, match=f"switches off.*'{treated_unit}'"):
        run(off)
    stag = frame.copy()
    stag.loc[(stag["unit"] == control_unit) & (stag["year"] == 2003), "d"] = 1
    with pytest.raises(InputDataError, match=r"staggered.*\{2002: \d+, 2003: 1\}"):
        run(stag)
    early = frame.assign(d=frame.groupby("unit")["d"].transform("max"))
    with pytest.raises(InputDataError, match="from the first period"):
        run(early)
    with pytest.raises(InputDataError, match="must be 0/1"):
        run(frame.assign(d=frame["d"] * 2))
    with pytest.raises(InputDataError, match=r"no finite value for 1 of 40 units \('u0003'\)"):
        run(p=e.drop("u0003"))
    with pytest.raises(InputDataError, match=r"between 0 and 1; got \[1.0\] for units 'u0005'"):
        run(p=e.where(e.index != "u0005", 1.0))
    with pytest.raises(InputDataError, match=r"pandas Series indexed by unit id .*got ndarray"):
        run(p=e.to_numpy())
    varying = frame.assign(cl=np.arange(len(frame)) % 3)
    with pytest.raises(InputDataError, match=r"'cl' \(clusters\) must be constant within each"):
        run(varying, cluster_col="cl")
    few = frame[frame["unit"].isin(ever.index[ever == 0].tolist() + [treated_unit])]
    with pytest.raises(InputDataError, match="at least 2 ever-treated"):
        run(few)
    with pytest.raises(InputDataError, match="`clip`"):
        run(clip=(0.5, 0.1))
    # the mapping form works and extra ids are ignored
    res = run(p={**e.to_dict(), "not_a_unit": 0.5}, n_bootstrap=50)
    assert res.n_units == 40


def test_panel_effects_warn_when_controls_have_propensity_near_one():
    frame, e, _, _ = _placement_panel(n=60, seed=6)
    ever = frame.groupby("unit")["d"].max()
    control = ever.index[ever == 0][:2]
    with pytest.warns(OverlapWarning, match=r"2 never-treated units have propensity >= 0.95"):
        high = e.where(~e.index.isin(control), 0.99)
        panel_effects(frame, propensity=high, n_bootstrap=50, **_COLS)
