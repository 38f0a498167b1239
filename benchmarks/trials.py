"""One map, many trials on the built-in wealth study, through the chain the pipeline uses.

Chain: :func:`eocausal.simulate.make_wealth_study` (imagery rendered from
wealth) -> MOSAIKS features (:class:`eocausal.encode.MosaiksEncoder`, ZCA-whitened
on random chips of the endline scene, 256 features per scale) of square chips
at two scales centred on a point, read from the ENDLINE GeoTIFF -> an
:class:`eocausal.outcome.OutcomeModel` (ridge, 5 km spatial blocks, 20 % of
the blocks held out as the calibration split) fitted on the survey at its
DHS-DISPLACED coordinates -> a map over the scene with
:func:`eocausal.maps.run_map_job` (``--cell-m`` cells) -> a
:class:`eocausal.maps.MapArtifact` -> :func:`eocausal.trials.run_trials`
(linear correction) on every trial.

Chips are cut from the scene held in memory and embedded by calling the
encoder directly, not through :func:`eocausal.encode.embed` (Lightning, one
chip read per unit): the same features, minutes faster on a shared 2-core
machine.

The calibration pairs come two ways (two result rows per seed):

- ``displaced``: the model's own calibration table, predictions at the
  clusters' published (displaced) coordinates, as a user of public DHS data
  gets;
- ``true``: the map sampled at the calibration clusters' TRUE coordinates
  (restricted DHS coordinates, or one's own survey). Only these pairs are
  made the way trial predictions are (at the unit), which the correction
  assumes.

Printed per seed: spatial-CV R² and slope, the calibration slope k, the map's
correlation with the true endline wealth surface, and over the trials the slopes of naive and corrected
ATEs on the true ATEs and the coverage of the corrected 95 % intervals.

Run::

    python benchmarks/trials.py --seeds 0 1 --n-bootstrap 100              # 1,500 survey clusters
    python benchmarks/trials.py --seeds 0 1 --n-bootstrap 100 --n-survey 600
    python benchmarks/trials.py --seeds 0 1 --scales-px 5 33     # a 1 km chip: breaks it (not measured)
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
from pyproj import Transformer

from eocausal.encode import MosaiksEncoder
from eocausal.errors import CalibrationWarning, EstimationError
from eocausal.maps import MapArtifact, RegionGrid, run_map_job, sample_map
from eocausal.outcome import OutcomeModel, outcome_metrics, spatial_blocks
from eocausal.simulate import make_wealth_study
from eocausal.trials import TrialSpec, run_trials


class ChipFeatures:
    """MOSAIKS features of square chips (one size per scale) centred on points of a scene."""

    def __init__(self, scene_path: Path, scales_px, n_features: int, seed: int) -> None:
        with rasterio.open(scene_path) as src:
            dn = src.read().astype(np.float32)
            self.transform, self.crs = src.transform, src.crs
            scale, offset = float(src.tags()["scale"]), float(src.tags()["offset"])
        self.valid = np.all(dn > 0, axis=0)
        self.refl = np.where(self.valid[None], dn * scale + offset, 0.0).astype(np.float32)
        self.scales = list(scales_px)
        self.to_scene = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        rng = np.random.default_rng(seed)
        h, w = self.valid.shape
        self.encoders = []
        for size in self.scales:
            enc = MosaiksEncoder(self.refl.shape[0], n_features=n_features, seed=seed)
            rows = rng.integers(size, h - size, 2000)
            cols = rng.integers(size, w - size, 2000)
            chips, ok = self._chips(rows, cols, size)
            enc.fit_whitening(torch.from_numpy(chips[ok]), n_patches=20000, relative_eps=True)
            self.encoders.append(enc)

    def rowcol(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.to_scene.transform(np.asarray(lon), np.asarray(lat))
        r, c = rasterio.transform.rowcol(self.transform, x, y)
        return np.asarray(r), np.asarray(c)

    def _chips(self, rows, cols, size) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.valid.shape
        half = size // 2
        inside = (rows - half >= 0) & (rows + half < h) & (cols - half >= 0) & (cols + half < w)
        r = np.clip(rows, half, h - half - 1)[:, None] + np.arange(-half, half + 1)[None, :]
        c = np.clip(cols, half, w - half - 1)[:, None] + np.arange(-half, half + 1)[None, :]
        chips = self.refl[:, r[:, :, None], c[:, None, :]].transpose(1, 0, 2, 3)
        ok = inside & self.valid[r[:, :, None], c[:, None, :]].all(axis=(1, 2))
        return np.ascontiguousarray(chips), ok

    def __call__(self, rows, cols) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, scales x n_features) and a mask of points whose chips are all valid."""
        feats, ok_all = [], np.ones(len(rows), dtype=bool)
        for size, enc in zip(self.scales, self.encoders, strict=True):
            chips, ok = self._chips(np.asarray(rows), np.asarray(cols), size)
            out = np.zeros((len(rows), enc.embed_dim), dtype=np.float64)
            with torch.no_grad():
                for s in range(0, len(rows), 4096):
                    out[s : s + 4096] = enc(torch.from_numpy(chips[s : s + 4096])).numpy()
            feats.append(out)
            ok_all &= ok
        return np.hstack(feats), ok_all


def _slope(x, y) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def one_seed(seed: int, args, out: Path) -> list[dict]:
    t0 = time.perf_counter()
    study = make_wealth_study(out / "study", seed=seed, n_survey=args.n_survey)
    t_study = time.perf_counter() - t0
    endline = ChipFeatures(study.scene_path, args.scales_px, args.n_features, seed)
    survey = pd.read_csv(study.survey_path)
    r, c = endline.rowcol(survey["lon"], survey["lat"])
    X, ok = endline(r, c)
    survey, X = survey[ok].reset_index(drop=True), X[ok]  # chips touching nodata are excluded
    x, y = endline.to_scene.transform(survey["lon"].to_numpy(), survey["lat"].to_numpy())
    model = OutcomeModel(model="ridge", random_state=seed).fit(
        X, survey["wealth"].to_numpy(), groups=spatial_blocks(np.column_stack([x, y]), block_km=5.0)
    )
    cv = model.metrics_.set_index("split").loc["cross-fitted (all folds)"]

    grid = RegionGrid.from_raster_footprint(study.scene_path, cell_size_m=args.cell_m)

    def predict_tile(tile, points):
        rows, cols = endline.rowcol(points["lon"], points["lat"])
        feats, good = endline(rows, cols)
        pred = np.full(len(points), np.nan)
        if good.any():
            pred[good] = model.predict(feats[good])
        return {"wealth": pred}

    t1 = time.perf_counter()
    cog = run_map_job(grid, predict_tile, out / "map" / "wealth.tif", work_dir=out / "map" / "work",
                      bands=[("wealth", "float32", "predicted endline wealth", float("nan"))],
                      tile_cells=128, key=f"seed{seed}", progress=False)
    t_map = time.perf_counter() - t1
    # map accuracy: the map against the true surface at every cell centre
    cells = pd.concat([grid.cell_points(t) for t in grid.tiles(512)], ignore_index=True)
    cell_map = sample_map(cog, cells["lon"], cells["lat"])
    cell_true = sample_map(study.wealth_raster_path, cells["lon"], cells["lat"])
    both = np.isfinite(cell_map) & np.isfinite(cell_true)
    corr = float(np.corrcoef(cell_map[both], cell_true[both])[0, 1])
    cal = model.calibration_table_
    held = survey.iloc[cal["row"].to_numpy()]
    tables = {
        "displaced": cal[["predicted", "truth"]],
        "true": pd.DataFrame({"predicted": sample_map(cog, held["true_lon"], held["true_lat"]),
                              "truth": cal["truth"].to_numpy()}).dropna(),
    }
    specs = [TrialSpec(name, path) for name, path in study.trials]
    rows = []
    for how, calibration in tables.items():
        artifact = MapArtifact.write(out / f"artifact_{how}", cog_path=cog, calibration_table=calibration,
                                     metadata={"value": "wealth", "calibration": how})
        k = outcome_metrics(calibration["truth"], calibration["predicted"])["slope"]
        head = {"seed": seed, "calibration": how, "cv_r2": cv["r2"], "cv_slope": cv["slope"], "k": k,
                "n_cal": len(calibration), "map_corr": corr}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CalibrationWarning)
                res = run_trials(specs, artifact, method="linear", n_bootstrap=args.n_bootstrap, seed=seed)
        except EstimationError as exc:  # a calibration set too weak to bootstrap: report, go on
            print(f"seed {seed}, calibration {how}: {exc}", flush=True)
            rows.append(head)
            continue
        table = res.table.merge(study.truth[["trial", "true_ate"]], on="trial")
        tau = table["true_ate"].to_numpy()
        covered = (table["ci_lower"] <= tau) & (tau <= table["ci_upper"])
        rows.append({
            **head,
            "naive_slope": _slope(tau, table["naive"]),
            "corrected_slope": _slope(tau, table["corrected"]),
            "coverage": covered.mean(),
            "mean_se": table["corrected_se"].mean(),
            "rmse": float(np.sqrt(np.mean((table["corrected"] - tau) ** 2))),
        })
        if args.verbose:
            print(table[["trial", "true_ate", "naive", "corrected", "corrected_se"]].round(3).to_string(index=False))
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    print(f"seed {seed}: study {t_study:.1f} s, map of {grid.n_cells} cells {t_map:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--cell-m", type=float, default=150.0)
    parser.add_argument("--scales-px", type=int, nargs="+", default=[5, 9],
                        help="chip sides in 30 m pixels (odd); 5 and 9 px = 150 and 270 m")
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument("--n-survey", type=int, default=1500)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="wealth_bench_"))
    rows = []
    for seed in args.seeds:
        rows += one_seed(seed, args, out / f"seed{seed}")
    pd.set_option("display.width", 200)
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
