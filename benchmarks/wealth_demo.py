"""The wealth demo over seeds: per-run slopes and coverage, and where the per-run error comes from.

For each regional-greenness weight and seed this runs
:func:`eocausal.pipeline.wealth_demo.run_wealth_demo` (survey -> outcome model -> map of
the endline and of the baseline scene -> 24 trials with the map's value and with its
change as the outcome) and prints one row per run: the demo's summary, then three
slopes of the map that separate the sources of error of the corrected ATEs,

- ``k_hat``: the calibration slope (map on survey wealth at the calibration clusters'
  true locations), what the correction divides by;
- ``k_cs``: the same cross-sectional slope at the trial units (baseline map on the
  units' baseline wealth, the cluster mean over 150 m);
- ``k_treat``: the map's response to the treatment (change of the map on each unit's own
  effect :math:`W_i \\tau_i`), what the naive ATEs read;

and the correlation, at the trial units, between baseline wealth and the regional
greenness field of the rendering (a feature independent of wealth in expectation).
The corrected change slope is about ``k_treat / k_hat``.

Usage::

    python benchmarks/wealth_demo.py --seeds 0 1 2 3 4 5 --regional-greenness 0 0.4

About 70 s per run on a 2-core machine. Figures: docs/benchmarks.md, "The wealth demo
through the pipeline".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from tempfile import mkdtemp

import numpy as np
import pandas as pd

#: The demo's study sizes (its defaults), passed to the demo and to the simulation alike.
SIZES = {"scene_size": 1024, "n_survey": 4000, "n_trials": 24, "units_per_trial": None}


def _slopes(run_dir: Path, seed: int, greenness: float) -> dict[str, float]:
    from eocausal.maps import sample_map
    from eocausal.simulate import wealth
    from eocausal.simulate.wealth import cluster_mean

    # the study in memory, for the baseline wealth and the rendering's regional field
    world = wealth._simulate(seed=seed, **SIZES, regional_greenness=greenness)
    units = world.units
    rows, cols = units["row"].to_numpy(), units["col"].to_numpy()
    base = cluster_mean(world.wealth_base, world.noise.valid)[rows, cols]
    located = pd.concat([pd.read_csv(p) for p in sorted((run_dir / "study" / "trials").glob("*.csv"))],
                        ignore_index=True)
    if not np.array_equal(located["unit_id"].to_numpy(), units["unit_id"].to_numpy()):
        raise RuntimeError(f"{run_dir}: the trial units differ from the simulation's; rerun the demo")
    end = sample_map(run_dir / "map" / "map" / "wealth.tif", located["lon"], located["lat"], radius_m=150.0)
    before = sample_map(run_dir / "map_baseline" / "map" / "wealth.tif", located["lon"], located["lat"],
                        radius_m=150.0)
    own = (units["treated"] * units["tau_true"]).to_numpy()
    cal = pd.read_csv(run_dir / "map" / "map" / "calibration.csv")
    return {
        "k_hat": float(np.polyfit(cal["truth"], cal["predicted"], 1)[0]),
        "k_cs": float(np.polyfit(base, before, 1)[0]),
        "k_treat": float(np.polyfit(own, end - before, 1)[0]),
        "corr_wealth_regional": float(np.corrcoef(base, world.noise.regional[rows, cols])[0, 1]),
    }


def main() -> None:
    from eocausal.pipeline.wealth_demo import run_wealth_demo

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--regional-greenness", type=float, nargs="+", default=[0.0, 0.4])
    parser.add_argument("--out", type=Path, default=None, help="folder of the runs (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(mkdtemp(prefix="wealth_demo_"))
    records = []
    for greenness in args.regional_greenness:
        for seed in args.seeds:
            run_dir = out / f"greenness{greenness:g}_seed{seed}"
            start = time.perf_counter()
            summary = run_wealth_demo(run_dir, seed=seed, progress=False, regional_greenness=greenness, **SIZES)
            seconds = time.perf_counter() - start
            records.append({"greenness": greenness, "seed": seed, "seconds": round(seconds, 1), **summary,
                            **_slopes(run_dir, seed, greenness)})
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in records[-1].items()}),
                  flush=True)
    table = pd.DataFrame(records)
    cols = ["greenness", "seed", "seconds", "spatial_cv_r2", "spatial_cv_slope", "map_corr_with_true_wealth",
            "slope_naive_on_truth (map)", "slope_corrected_on_truth (map)", "coverage_corrected_95 (map)",
            "slope_naive_on_truth (change)", "slope_corrected_on_truth (change)",
            "slope_corrected_on_truth_se (change)", "coverage_corrected_95 (change)",
            "k_hat", "k_cs", "k_treat", "corr_wealth_regional"]
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table[cols].round(3).to_string(index=False))
    for greenness, runs in table.groupby("greenness"):
        change = runs["slope_corrected_on_truth (change)"]
        level = runs["slope_corrected_on_truth (map)"]
        print(f"regional greenness {greenness:g}: corrected slope, change: mean {change.mean():.3f} "
              f"(SD {change.std():.3f}), within 0.05 of 1 in {int((change - 1).abs().le(0.05).sum())} of "
              f"{len(runs)}, pooled coverage {runs['coverage_corrected_95 (change)'].mean():.3f}; map value: "
              f"mean {level.mean():.3f} (SD {level.std():.3f}), within 0.05 in "
              f"{int((level - 1).abs().le(0.05).sum())}, pooled coverage {runs['coverage_corrected_95 (map)'].mean():.3f}")
    print(f"runs in {out}")


if __name__ == "__main__":
    main()
