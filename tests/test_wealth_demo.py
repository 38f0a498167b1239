"""The wealth demo end to end on a small scene: map, baseline map, trials with both outcomes."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from eocausal.pipeline.wealth_demo import run_wealth_demo

    run_dir = tmp_path_factory.mktemp("wealth_demo")
    summary = run_wealth_demo(run_dir, seed=1, progress=False, scene_size=512, n_survey=800, n_trials=9)
    return run_dir, summary


def test_the_run_folder_is_complete_and_says_what_it_holds(demo):
    from eocausal.pipeline.folder import read_results

    run_dir, summary = demo
    results = read_results(run_dir)  # refuses a folder that is not complete
    assert results["summary"] == pytest.approx(summary)
    for name in ("trials", "trials_change"):
        table = pd.read_csv(run_dir / name / "trials.csv")
        assert len(table) == 9 and table["n_missing"].eq(0).all()
        outcome = json.loads((run_dir / name / "results.json").read_text())["map"]["outcome"]
        assert outcome.startswith("the change") == (name == "trials_change")
    assert summary["n_calibration_pairs"] > 150


def test_naive_effects_are_shrunk_and_the_correction_recovers_them(demo):
    """Known truth: the map responds to wealth by k < 1; the corrected slope is about 1."""
    _, s = demo
    assert 0 < s["spatial_cv_slope"] < 0.7 and s["map_corr_with_true_wealth"] > 0.5
    for outcome in ("map", "change"):
        assert s[f"slope_naive_on_truth ({outcome})"] < 0.7
    # the change since baseline: little trial noise, so the corrected slope is near 1 even in 9 trials
    assert s["slope_corrected_on_truth (change)"] == pytest.approx(1.0, abs=0.25)
    assert s["mean_abs_error_corrected (change)"] < 0.5 * s["mean_abs_error_naive (change)"]
    assert s["coverage_corrected_95 (change)"] >= 7 / 9
