"""Region maps: cells per second and peak memory of the map job through the real imagery path.

Two square regions over the built-in scene (``make_demo_study(seed=0, n_units=100,
scene_size=2048)``: 61.44 km of 30 m pixels, UTM 36N), the larger four times the
area of the smaller, each mapped in its own subprocess: chips cut from the scene
GeoTIFF for every cell (:class:`~eocausal.imagery.ChipDataset`), MOSAIKS embeddings
(:func:`~eocausal.encode.embed`, one job per tile), a ridge prediction (ridge fitted
on the study units' outcome), streamed into a COG by :func:`~eocausal.maps.run_map_job`.

The scene is written by the parent process. Peak RSS is ``ru_maxrss`` of the
region's subprocess, measured after the job; the baseline is the peak before
the job started (imports, chips of the 100 units, MOSAIKS whitening, ridge fit). The job is
memory-bounded when the large region's peak RSS is at most 1.2 times the
small one's.

Run::

    python benchmarks/maps.py                    # both regions, prints the table
    python benchmarks/maps.py --side-km 8        # a quicker check
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALE = {"name": "1km", "size_km": 1.0, "out_px": 32}


def _spec():
    from eocausal.imagery import ChipSpec, Scale

    return ChipSpec([Scale(**SCALE)], recipe="c2_sr", min_valid_fraction=0.5)


def _fit(scene_path: Path, units_path: Path, n_features: int, work: Path):
    """MOSAIKS (whitened on the units' chips) and a cross-validated ridge on the units' outcome."""
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.linear_model import RidgeCV

    from eocausal.encode import MosaiksEncoder, embed
    from eocausal.imagery import ChipDataset, RasterSource
    from eocausal.units import StudyUnits

    source = RasterSource([str(scene_path)])
    units = StudyUnits.read(
        units_path, outcome_col="outcome", lon_col="lon", lat_col="lat", crs="EPSG:4326"
    )
    dataset = ChipDataset(units, source, _spec())
    encoder = MosaiksEncoder(len(dataset.band_names), n_features=n_features, seed=0)
    chips = torch.stack(
        [
            dataset[i]["chips"][SCALE["name"]]
            for i in range(len(dataset))
            if not dataset[i]["excluded"]
        ]
    )
    encoder.fit_whitening(chips)
    emb = embed(
        dataset, encoder, work / "units", progress=False, accelerator="cpu", batch_size=256
    ).embeddings
    y = pd.read_csv(units_path).set_index("unit_id").loc[emb.unit_ids, "outcome"].to_numpy()
    model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(emb.block(SCALE["name"]), y)
    return source, encoder, model


def run_region(out: Path, side_km: float, cell_m: float, tile_cells: int, n_features: int) -> dict:
    """Map one square region centred on the scene; return the figures (run in a fresh process)."""
    import numpy as np
    import pandas as pd
    import rasterio

    from eocausal.encode import embed
    from eocausal.imagery import ChipDataset
    from eocausal.maps import RegionGrid, run_map_job
    from eocausal.units import StudyUnits

    scene_path, units_path = out / "study" / "scene.tif", out / "study" / "units.csv"
    work = Path(tempfile.mkdtemp(dir=out))
    source, encoder, model = _fit(scene_path, units_path, n_features, work)
    with rasterio.open(scene_path) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    cx, cy, half = (left + right) / 2, (bottom + top) / 2, side_km * 500.0
    grid = RegionGrid.from_bbox(
        (cx - half, cy - half, cx + half, cy + half), bbox_crs=crs, cell_size_m=cell_m
    )

    def predict_tile(tile, points: pd.DataFrame) -> dict[str, np.ndarray]:
        cells = StudyUnits.from_frame(
            points, id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326"
        )
        folder = work / f"tile{tile.index}"
        emb = embed(
            ChipDataset(cells, source, _spec()),
            encoder,
            folder,
            progress=False,
            accelerator="cpu",
            batch_size=256,
        ).embeddings
        shutil.rmtree(folder)
        pred = np.full(len(points), np.nan)
        rows = pd.Index(points["unit_id"]).get_indexer(emb.unit_ids)
        pred[rows] = model.predict(emb.block(SCALE["name"]))
        return {"prediction": pred}

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    cog = run_map_job(
        grid,
        predict_tile,
        out / f"map_{side_km:g}km.tif",
        tile_cells=tile_cells,
        bands=[("prediction", "float32", "ridge on MOSAIKS", float("nan"))],
        progress=False,
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with rasterio.open(cog) as src:
        valid = int(np.isfinite(src.read(1)).sum())
    shutil.rmtree(work)
    return {
        "side_km": side_km,
        "cells": grid.n_cells,
        "valid_cells": valid,
        "tiles": len(grid.tiles(tile_cells)),
        "seconds": seconds,
        "cells_per_s": grid.n_cells / seconds,
        "baseline_rss_mb": baseline_kb / 1024,
        "peak_rss_mb": peak_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side-km", type=float, default=12.0, help="side of the small region (large: 2x)"
    )
    parser.add_argument("--cell-m", type=float, default=120.0, help="cell size in metres")
    parser.add_argument("--tile-cells", type=int, default=64)
    parser.add_argument("--n-features", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=None, help="work folder (default: a temporary one)"
    )
    parser.add_argument("--_region", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="eocausal_maps_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    if args._region is not None:  # child process: one region
        print(
            json.dumps(run_region(out, args._region, args.cell_m, args.tile_cells, args.n_features))
        )
        return
    from eocausal.simulate import make_demo_study

    make_demo_study(
        out / "study", seed=0, n_units=100, scene_size=2048
    )  # here, not in the measured children
    rows = []
    for side in (args.side_km, 2 * args.side_km):
        cmd = [
            sys.executable,
            __file__,
            "--_region",
            str(side),
            "--cell-m",
            str(args.cell_m),
            "--tile-cells",
            str(args.tile_cells),
            "--n-features",
            str(args.n_features),
            "--out",
            str(out),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"region {side} km failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"cells of {args.cell_m:g} m, tiles of {args.tile_cells} cells, MOSAIKS {args.n_features} features, "
        f"1 km chips of {SCALE['out_px']} px"
    )
    print("| region | cells | tiles | seconds | cells/s | baseline RSS (MB) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['side_km']:g} km x {r['side_km']:g} km | {r['cells']:,} | {r['tiles']} | {r['seconds']:.1f} | "
            f"{r['cells_per_s']:.0f} | {r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    growth = [r["peak_rss_mb"] - r["baseline_rss_mb"] for r in rows]
    print(
        f"peak RSS ratio (4x area / 1x) = {ratio:.3f} (must be <= 1.2); "
        f"growth during the job: {growth[0]:.0f} MB vs {growth[1]:.0f} MB"
    )
    if args.out is None:
        shutil.rmtree(out)
    if ratio > 1.2:
        sys.exit("memory is not bounded by a tile")


if __name__ == "__main__":
    main()
