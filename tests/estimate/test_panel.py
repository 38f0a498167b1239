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
