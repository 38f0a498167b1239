"""The simulated programme-placement panel: deterministic, and its effect is what it says."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import rasterio

from eocausal.errors import InputDataError
from eocausal.estimate import panel_effects
from eocausal.simulate import (
    BAND_NAMES,
    make_panel_study,
    make_scene,
    simulate_panel,
    simulate_trial,
)

_COLS = dict(unit_col="unit_id", time_col="period", treatment_col="treated", outcome_col="outcome")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_panel_study(tmp_path_factory.mktemp("panel"), seed=0)


def _sites(units: pd.DataFrame) -> pd.DataFrame:
    return units.drop_duplicates("unit_id").rename(columns={"cluster": "village"})


def _oracle(units: pd.DataFrame, **kw):
    e = units.drop_duplicates("unit_id").set_index("unit_id")["propensity_true"]
    return panel_effects(units, propensity=e, cluster_col="cluster", seed=0, **_COLS, **kw)


def test_same_seed_same_files(study, tmp_path):
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    again = make_panel_study(tmp_path / "again", seed=0)
    assert digest(again.units_path) == digest(study.units_path)
    with rasterio.open(study.scene_path) as a, rasterio.open(again.scene_path) as b:
        assert np.array_equal(a.read(), b.read())
        assert a.crs.to_epsg() == 32636 and tuple(a.descriptions) == BAND_NAMES
    other = simulate_panel(_sites(study.units), seed=9)
    assert not np.array_equal(other["ever_treated"], study.units["ever_treated"])


def test_table_follows_the_documented_design(study):
    u = study.units
    assert len(u) == 600 * 6 and u["unit_id"].nunique() == 600
    assert {"unit_id", "period", "lon", "lat", "treated", "outcome", "ever_treated",
            "true_effect", "cluster", "propensity_true"} <= set(u.columns)
    assert study.adoption_period == 3 and study.true_att == 1.0
    np.testing.assert_array_equal(u["treated"], u["ever_treated"] * (u["period"] >= 3))
    per_unit = u.groupby("unit_id")
    for col in ("lon", "lat", "cluster", "ever_treated", "propensity_true", "true_effect"):
        assert (per_unit[col].nunique() == 1).all()
    # the placement feature is the built-in trial's 1 km built-up fraction at the same sites
    trial = simulate_trial(make_scene(512, seed=0), n_units=600, seed=1).set_index("unit_id")
    sites = u.drop_duplicates("unit_id").set_index("unit_id")
    np.testing.assert_allclose(sites["built_1km"], trial.loc[sites.index, "built_1km"], rtol=1e-12)
    np.testing.assert_allclose(sites[["lon", "lat"]], trial.loc[sites.index, ["lon", "lat"]])
    # placement follows the image feature: logistic(kappa + z) with mean propensity 0.4
    z, e = sites["z_built"], sites["propensity_true"]
    assert e.mean() == pytest.approx(0.4, abs=1e-9)
    np.testing.assert_allclose(np.log(e / (1 - e)) - z, np.log(e / (1 - e)).iloc[0] - z.iloc[0])
    z_by_arm = sites.groupby("ever_treated")["z_built"].mean()
    assert z_by_arm[1] > z_by_arm[0] + 0.5
    # imputed outcome = true outcome + independent map error with sd 0.3
    err = u["outcome"] - u["outcome_true"]
    assert err.std() == pytest.approx(0.3, rel=0.05)
    assert abs(np.corrcoef(err, u["treated"])[0, 1]) < 0.05


def test_oracle_propensity_recovers_the_att_and_unweighted_twfe_is_biased_upward(study):
    u = study.units
    res = _oracle(u)
    for method in ("twfe_ipw", "did_ipw"):
        assert abs(res[method].estimate - study.true_att) < 2 * res[method].std_err
    # unweighted TWFE: biased by lambda (zbar_1 - zbar_0)(tbar_post - tbar_pre) / (T - 1),
    # with lambda = 0.6
    sites = u.drop_duplicates("unit_id")
    dz = sites.groupby("ever_treated")["z_built"].mean().diff().iloc[-1]
    bias = 0.6 * dz * (4.0 - 1.0) / 5
    assert bias > 0.2
    twfe = res["twfe"]
    assert twfe.estimate - study.true_att > 3 * twfe.std_err
    assert abs(twfe.estimate - study.true_att - bias) < 2 * twfe.std_err
    # the naive post-period comparison of levels is biased upward too (level confounding)
    post = u[u["period"] >= study.adoption_period]
    post = post.groupby("unit_id")[["outcome", "ever_treated"]].mean()
    naive = post.groupby("ever_treated")["outcome"].mean().diff().iloc[-1]
    assert naive - study.true_att > 0.3


def test_heterogeneous_effect_has_a_known_att(study):
    units = simulate_panel(_sites(study.units), seed=2, effect=1.0, effect_heterogeneity=0.5)
    sites = units.drop_duplicates("unit_id")
    att = sites.loc[sites["ever_treated"] == 1, "true_effect"].mean()
    ate = sites["true_effect"].mean()
    np.testing.assert_allclose(sites["true_effect"], 1.0 + 0.5 * sites["z_built"])
    assert ate == pytest.approx(1.0) and att > ate + 0.15
    res = _oracle(units)
    assert abs(res["twfe_ipw"].estimate - att) < 2 * res["twfe_ipw"].std_err


def test_simulate_panel_errors(study):
    sites = _sites(study.units)
    with pytest.raises(InputDataError, match=r"`adoption_period` must lie in \[1, 3\]"):
        simulate_panel(sites, n_periods=4, adoption_period=0)
    with pytest.raises(InputDataError, match=r"lacks columns \['built_1km'\]"):
        simulate_panel(sites.drop(columns="built_1km"))
    with pytest.raises(InputDataError, match="`treated_share`"):
        simulate_panel(sites, treated_share=1.0)
