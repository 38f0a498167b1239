"""Trials against one map: naive estimates shrink by k, corrected ones recover the truth."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from eocausal.errors import ConfigError, EstimationError, ExclusionWarning, InputDataError
from eocausal.maps import MapArtifact
from eocausal.trials import TABLE_COLUMNS, TrialSpec, run_trials

M, K, PRED_SD = 0.3, 0.5, 0.4  # the map: Yhat = M + K * Y + N(0, PRED_SD^2)
N_TRIALS, N_UNITS, SIDE, CELL = 100, 100, 100, 100.0
N_CALIBRATION = 600
OFF_MAP = ["t00_u0003", "t00_u0017", "t00_u0051", "t00_u0080", "t00_u0099"]


def _synthetic_map(folder, seed=0):
    """One unit per 100 m cell; the map holds each unit's shrunk prediction, NaN at OFF_MAP."""
    rng = np.random.default_rng(seed)
    tau = rng.permutation(np.linspace(-1.0, 2.0, N_TRIALS))
    n = N_TRIALS * N_UNITS
    treated = (rng.random(n) < 0.5).astype(int)
    truth = rng.normal(0.0, 1.0, n) + treated * np.repeat(tau, N_UNITS)
    pred = M + K * truth + rng.normal(0.0, PRED_SD, n)
    ids = np.array([f"t{t:02d}_u{i:04d}" for t in range(N_TRIALS) for i in range(N_UNITS)])
    values = pred.reshape(SIDE, SIDE).astype(np.float32).copy()
    values.ravel()[np.isin(ids, OFF_MAP)] = np.nan
    transform = from_origin(400_000.0, 300_000.0, CELL, CELL)
    rows, cols = np.divmod(np.arange(n), SIDE)
    x, y = transform * (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True).transform(x, y)
    cog = folder / "pred.tif"
    profile = {"driver": "GTiff", "width": SIDE, "height": SIDE, "count": 1, "dtype": "float32",
                   "crs": "EPSG:32636", "transform": transform, "nodata": np.nan, "tiled": True,
                   "blockxsize": 32, "blockysize": 32, "compress": "deflate"}
    with rasterio.open(cog, "w", **profile) as dst:
        dst.write(values, 1)
    cal_truth = rng.normal(0.3, 1.3, N_CALIBRATION)
    calibration = pd.DataFrame(
        {"predicted": M + K * cal_truth + rng.normal(0.0, PRED_SD, N_CALIBRATION), "truth": cal_truth}
    )
    artifact = MapArtifact.write(folder / "artifact", cog_path=cog, calibration_table=calibration,
                                 metadata={"value": "synthetic"})
    units = pd.DataFrame({"unit_id": ids, "lon": lon, "lat": lat, "treated": treated,
                          "trial": np.repeat([f"trial_{t:02d}" for t in range(N_TRIALS)], N_UNITS),
                          "pred": pred})
    return artifact, units, dict(zip(units["trial"].unique(), tau, strict=True))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return _synthetic_map(tmp_path_factory.mktemp("map"))


@pytest.fixture(scope="module")
def all_trials(synthetic):
    artifact, units, tau = synthetic
    specs = [TrialSpec(name, frame.drop(columns="pred")) for name, frame in units.groupby("trial")]
    with pytest.warns(ExclusionWarning, match="t00_u0003"):
        result = run_trials(specs, artifact, n_bootstrap=60, seed=1)
    return result, tau


def _slope(x, y):
    return float(np.polyfit(x, y, 1)[0])


def test_naive_shrinks_by_k_and_corrected_recovers_the_true_ates(all_trials):
    result, tau = all_trials
    table = result.table
    assert list(table.columns) == list(TABLE_COLUMNS)
    truth = table["trial"].map(tau).to_numpy()
    assert _slope(truth, table["naive"]) == pytest.approx(K, abs=0.05)
    assert _slope(truth, table["corrected"]) == pytest.approx(1.0, abs=0.08)
    covered = (table["ci_lower"] <= truth) & (truth <= table["ci_upper"])
    assert covered.mean() >= 0.9
    # linear correction: the sampling SE is the naive one over k_hat, plus the calibration part
    # the calibration part grows with the size of the effect: error(k_hat) * tau / k
    k_hat = result.details["trial_00"].diagnostics["correction"]["slope"]
    calibration_se = []
    for name, d in result.details.items():
        row = table.set_index("trial").loc[name]
        assert d.sampling_se == pytest.approx(row["naive_se"] / k_hat, rel=1e-6)
        assert row["corrected_se"] == pytest.approx(np.hypot(d.sampling_se, d.calibration_se))
        calibration_se.append(d.calibration_se)
    assert np.corrcoef(np.abs(truth), calibration_se)[0, 1] > 0.9
    assert set(table["method"]) == {"linear"}


def test_units_without_map_value_are_reported_by_id(all_trials):
    result, _ = all_trials
    assert sorted(result.missing["unit_id"]) == OFF_MAP
    assert set(result.missing["trial"]) == {"trial_00"}
    row = result.table.set_index("trial").loc["trial_00"]
    assert (row["n"], row["n_missing"]) == (N_UNITS - len(OFF_MAP), len(OFF_MAP))
    assert result.table["n_missing"].sum() == len(OFF_MAP)


def test_estimates_match_brute_force_difference_in_means(synthetic):
    artifact, units, _ = synthetic
    frame = units[units["trial"] == "trial_07"]
    out = run_trials([TrialSpec("t7", frame)], artifact, n_bootstrap=20).table.iloc[0]
    y, w = frame["pred"].to_numpy(), frame["treated"].to_numpy() == 1
    assert out["naive"] == pytest.approx(y[w].mean() - y[~w].mean(), rel=1e-5)
    cal = artifact.calibration
    k, m = np.polyfit(cal["truth"], cal["predicted"], 1)  # Yhat = m + k Y, inverted
    corrected = (y - m) / k
    assert out["corrected"] == pytest.approx(corrected[w].mean() - corrected[~w].mean(), rel=1e-5)


def test_a_trial_row_depends_neither_on_other_trials_nor_on_row_order(synthetic):
    artifact, units, _ = synthetic
    a = units[units["trial"] == "trial_03"]
    b = units[units["trial"] == "trial_04"]
    alone = run_trials([TrialSpec("a", a)], artifact, n_bootstrap=30).table
    shuffled = a.sample(frac=1.0, random_state=5)
    both = run_trials([TrialSpec("b", b), TrialSpec("a", shuffled)], artifact, n_bootstrap=30).table
    cols = ["naive", "naive_se", "corrected", "corrected_se"]
    np.testing.assert_allclose(both.iloc[1][cols].to_numpy(float), alone.iloc[0][cols].to_numpy(float), rtol=1e-9)


def test_clusters_and_a_propensity_column_enter_the_estimate(synthetic):
    artifact, units, _ = synthetic
    frame = units[units["trial"] == "trial_05"].copy()
    frame["village"] = np.arange(len(frame)) // 10
    frame["e"] = np.where(np.arange(len(frame)) % 2 == 0, 0.3, 0.7)
    res = run_trials([TrialSpec("t", frame, propensity="e", cluster_col="village")], artifact,
                     n_bootstrap=20)
    assert res.details["t"].n_clusters == 10
    y, w, e = frame["pred"].to_numpy(), frame["treated"].to_numpy(), frame["e"].to_numpy()
    hajek = np.sum(w * y / e) / np.sum(w / e) - np.sum((1 - w) * y / (1 - e)) / np.sum((1 - w) / (1 - e))
    assert res.table["naive"].iloc[0] == pytest.approx(hajek, rel=1e-5)
    assert json.loads(json.dumps(res.to_dict()))["trials"][0]["trial"] == "t"


def test_units_read_from_a_file(synthetic, tmp_path):
    artifact, units, _ = synthetic
    frame = units[units["trial"] == "trial_09"].drop(columns="pred")
    frame.to_csv(tmp_path / "t9.csv", index=False)
    from_file = run_trials([TrialSpec("f", tmp_path / "t9.csv")], artifact, n_bootstrap=20).table
    from_frame = run_trials([TrialSpec("f", frame)], artifact, n_bootstrap=20).table
    pd.testing.assert_frame_equal(from_file, from_frame)


def test_invalid_inputs_name_the_problem(synthetic):
    artifact, units, _ = synthetic
    frame = units[units["trial"] == "trial_01"]
    with pytest.raises(ConfigError, match="unique"):
        run_trials([TrialSpec("x", frame), TrialSpec("x", frame)], artifact)
    with pytest.raises(ConfigError, match="`method`"):
        run_trials([TrialSpec("x", frame)], artifact, method="ppi")
    with pytest.raises(InputDataError, match="'e_col'"):
        run_trials([TrialSpec("x", frame, propensity="e_col")], artifact)
    off = frame.assign(lon=frame["lon"] + 5.0)  # the whole trial lies off the map
    with pytest.warns(ExclusionWarning), pytest.raises(EstimationError, match="each arm needs"):
        run_trials([TrialSpec("off", off)], artifact)
    bad = dataclasses.replace(artifact, calibration=artifact.calibration.rename(columns={"truth": "y"}))
    with pytest.raises(InputDataError, match="truth"):
        run_trials([TrialSpec("x", frame)], bad)


def _map_pair(folder, seed=2, n_trials=40, side=60):
    """Endline and baseline maps of one model: Yhat = M + K Y + e with the SAME persistent error e."""
    rng = np.random.default_rng(seed)
    n = side * side
    per = n // n_trials
    tau = rng.permutation(np.linspace(0.0, 1.0, n_trials))
    base = rng.normal(0.0, 1.0, n)
    treated = (rng.random(n) < 0.5).astype(int)
    end = base + treated * np.repeat(tau, per)
    error = rng.normal(0.0, 0.8, n)  # persistent: the same landscape at both dates
    transform = from_origin(400_000.0, 300_000.0, CELL, CELL)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 1, "dtype": "float32",
               "crs": "EPSG:32636", "transform": transform, "nodata": np.nan}
    cal_truth = rng.normal(0.0, 1.0, 2000)
    calibration = pd.DataFrame({"predicted": M + K * cal_truth + rng.normal(0.0, 0.8, 2000), "truth": cal_truth})
    artifacts = {}
    for name, y in (("end", end), ("base", base)):
        cog = folder / f"{name}.tif"
        with rasterio.open(cog, "w", **profile) as dst:
            dst.write((M + K * y + error).reshape(side, side).astype(np.float32), 1)
        artifacts[name] = MapArtifact.write(folder / name, cog_path=cog, calibration_table=calibration,
                                            metadata={"value": name})
    rows, cols = np.divmod(np.arange(n), side)
    x, y = transform * (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True).transform(x, y)
    units = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "lon": lon, "lat": lat,
                          "treated": treated, "trial": np.repeat(np.arange(n_trials), per)})
    return artifacts, units, tau


def test_a_baseline_map_removes_the_persistent_error_and_stays_unbiased(tmp_path):
    maps, units, tau = _map_pair(tmp_path)
    specs = [TrialSpec(f"t{t:02d}", frame) for t, frame in units.groupby("trial")]
    level = run_trials(specs, maps["end"], n_bootstrap=50, seed=0)
    change = run_trials(specs, maps["end"], baseline=maps["base"], n_bootstrap=50, seed=0)
    assert change.to_dict()["baseline_map"] == str(maps["base"].cog_path)
    # the naive change is the difference in means of (endline map - baseline map) = K * tau exactly
    t = change.table
    np.testing.assert_allclose(t["naive"], K * tau, atol=2e-6)
    assert _slope(tau, t["corrected"]) == pytest.approx(1.0, abs=0.05)
    covered = (t["ci_lower"] <= tau) & (tau <= t["ci_upper"])
    assert covered.mean() >= 0.9
    # the level's SE carries Var(K Y_base + e); the change's only the calibration part
    assert (t["corrected_se"] < 0.5 * level.table["corrected_se"]).all()
    with pytest.raises(ConfigError, match="linear"):
        run_trials(specs[:1], maps["end"], baseline=maps["base"], method="tweedie")


def test_summary_across_trials_against_the_truth():
    from eocausal.pipeline.trials import trials_summary

    truth = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    table = pd.DataFrame({"true_ate": truth, "naive": 0.4 * truth, "corrected": truth + [0, 0.1, -0.1, 0.1, -0.1],
                          "ci_lower": [1e-17, 0.2, 0.2, 0.5, 1.05], "ci_upper": [1e-17, 0.4, 0.45, 0.9, 1.1]})
    s = trials_summary(table)
    assert s["slope_naive_on_truth"] == pytest.approx(0.4)
    slope, cov = np.polyfit(truth, table["corrected"], 1, cov=True)
    assert s["slope_corrected_on_truth"] == pytest.approx(slope[0])
    assert s["slope_corrected_on_truth_se"] == pytest.approx(np.sqrt(cov[0, 0]))
    # the zero-width interval at the exact truth covers (rounding); 0.5 and 1.0 are missed
    assert s["coverage_corrected_95"] == pytest.approx(3 / 5)
    assert s["mean_abs_error_corrected"] == pytest.approx(0.08)
