"""Throughput of the whole embedding job against model-only forward passes and the loader alone.

Whole job: GeoTIFF -> ChipDataset (read, scale, resample) -> DataLoader
workers -> Lightning predict -> encoder -> Parquet shards -> merged artifact.
Model only: the same encoder and batch size on tensors already in memory (on
the device). Loader only: the job's DataLoader (same workers, batch size and
pinning), each batch's chips copied to the device, no model. All three are
measured in one run; the ratio job / model is what matters (target >= 0.8 on
CPU: reading and writing should hide behind compute); loader / model says
whether the loader or the model sets the pace.

On CUDA every measurement uses the job's data path
(:func:`eocausal.encode.job.data_path_for`: pinned memory, non-blocking copies,
channels-last weights and chips) and bf16 autocast; model-only is also timed
with contiguous (NCHW) chips and weights, to show what channels-last buys.

    python benchmarks/embed.py                 # vit_small_patch16_224, 224 px, 256 units
    python benchmarks/embed.py --quick         # a few seconds
    python benchmarks/embed.py --device cuda --demo-dir /tmp/demo --n-units 8192 \\
        --batch-size 256 --num-workers 14      # chips of the built-in simulated scene
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
from affine import Affine

from eocausal.encode import build_encoder, embed
from eocausal.encode.job import ChipDataModule, data_path_for
from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale
from eocausal.imagery.sources import RasterSource
from eocausal.units import StudyUnits


def write_scene(path: Path, n_units: int, chip_px: int, bands: int, seed: int) -> StudyUnits:
    """A tiled uint16 GeoTIFF and ``n_units`` points whose chips lie inside it."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_units)))
    size = side * chip_px + chip_px
    data = rng.integers(7000, 20000, size=(bands, size, size), dtype=np.uint16)
    x0, y0, res = 500000.0, 100000.0, 30.0
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": bands,
        "dtype": "uint16",
        "crs": "EPSG:32636",
        "transform": Affine(res, 0, x0, 0, -res, y0),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    k = np.arange(n_units)
    rows = chip_px // 2 + (k // side) * chip_px + chip_px // 2
    cols = chip_px // 2 + (k % side) * chip_px + chip_px // 2
    frame = pd.DataFrame(
        {
            "unit_id": [f"u{i}" for i in k],
            "x": x0 + (cols + 0.5) * res,
            "y": y0 - (rows + 0.5) * res,
        }
    )
    return StudyUnits.from_frame(frame, lon_col="x", lat_col="y", crs="EPSG:32636")


def demo_chips(demo_dir: Path, n_units: int, px: int, scene_size: int, seed: int) -> ChipDataset:
    """Chips of the first ``n_units`` units of the built-in study in ``demo_dir`` (written if absent)."""
    from eocausal.simulate import make_demo_study

    if not (demo_dir / "scene.tif").is_file() or not (demo_dir / "units.csv").is_file():
        make_demo_study(demo_dir, seed=seed, n_units=n_units, scene_size=scene_size)
    table = pd.read_csv(demo_dir / "units.csv")
    if len(table) < n_units:
        raise SystemExit(
            f"{demo_dir / 'units.csv'} has {len(table)} units; --n-units asks for {n_units}. "
            "Use a fresh --demo-dir or a smaller --n-units."
        )
    units = StudyUnits.from_frame(
        table.head(n_units), lon_col="lon", lat_col="lat", crs="EPSG:4326"
    )
    spec = ChipSpec([Scale("s", size_px=px, out_px=px)], recipe="c2_sr")
    return ChipDataset(units, RasterSource(demo_dir / "scene.tif"), spec)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def model_only(
    encoder: torch.nn.Module,
    n: int,
    batch: int,
    bands: int,
    px: int,
    device: str,
    *,
    channels_last: bool,
) -> float:
    """Seconds for forward passes over n in-memory images (bf16 autocast on GPU)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    encoder = encoder.to(device).to(memory_format=fmt)
    x = torch.rand(batch, bands, px, px, device=device).contiguous(memory_format=fmt)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    with torch.inference_mode(), autocast:
        encoder(x[:2])  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            b = min(batch, n - done)
            encoder(x[:b])
            done += b
        _sync(device)
    elapsed = time.perf_counter() - t0
    encoder.cpu().to(memory_format=torch.contiguous_format)
    return elapsed


def loader_only(dataset: ChipDataset, batch: int, workers: int, device: str) -> float:
    """Seconds to iterate the job's DataLoader over ``dataset``, chips copied to ``device``."""
    feed = data_path_for(device, workers)
    loader = ChipDataModule(
        dataset,
        np.arange(len(dataset)),
        batch_size=batch,
        num_workers=workers,
        pin_memory=feed.pin_memory,
        persistent_workers=feed.persistent_workers,
    ).predict_dataloader()
    t0 = time.perf_counter()
    for item in loader:
        for chips in item["chips"].values():
            chips.to(device, non_blocking=feed.non_blocking)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="vit_small_patch16_224")
    p.add_argument("--n-units", type=int, default=256)
    p.add_argument("--px", type=int, default=224, help="chip and model input size")
    p.add_argument("--bands", type=int, default=7, help="bands of the random scene (demo: 6)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="48 units at 64 px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="alternating repetitions; best kept")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: bf16 autocast and the job's CUDA data path for every measurement",
    )
    p.add_argument(
        "--demo-dir",
        type=Path,
        help="chips of the built-in simulated study (make_demo_study) in this folder, written "
        "there if absent, instead of a random scene",
    )
    p.add_argument("--scene-size", type=int, default=2048, help="demo scene side in pixels")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.n_units, args.px, args.batch_size = 48, 64, 16
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.demo_dir is not None:
            dataset = demo_chips(args.demo_dir, args.n_units, args.px, args.scene_size, args.seed)
            args.bands = len(dataset.band_names)
            scene = f"built-in study ({args.demo_dir / 'scene.tif'}, c2_sr)"
        else:
            units = write_scene(tmp / "scene.tif", args.n_units, args.px, args.bands, args.seed)
            spec = ChipSpec(
                [Scale("s", size_px=args.px, out_px=args.px)], recipe="ssl4eo_l_sr_uint8"
            )
            dataset = ChipDataset(units, RasterSource(tmp / "scene.tif"), spec)
            scene = "random tiled GeoTIFF (ssl4eo_l_sr_uint8)"
        encoder = build_encoder(
            args.arch, in_chans=args.bands, random_weights=True, img_size=args.px
        )
        cl = data_path_for(args.device, args.num_workers).channels_last
        n = len(dataset)

        # Alternate the measurements and keep the fastest of each, so that a
        # load spike from other processes does not land on one side only.
        t_model, t_job, t_loader, t_nchw = [], [], [], []
        for rep in range(args.repeats):
            t_model.append(
                model_only(
                    encoder, n, args.batch_size, args.bands, args.px, args.device, channels_last=cl
                )
            )
            if cl:
                t_nchw.append(
                    model_only(
                        encoder,
                        n,
                        args.batch_size,
                        args.bands,
                        args.px,
                        args.device,
                        channels_last=False,
                    )
                )
            t_loader.append(loader_only(dataset, args.batch_size, args.num_workers, args.device))
            t0 = time.perf_counter()
            res = embed(
                dataset,
                encoder,
                tmp / f"out{rep}",
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                accelerator="gpu" if args.device == "cuda" else "cpu",
                progress=False,
                seed=args.seed,
            )
            t_job.append(time.perf_counter() - t0)
            encoder.cpu().to(memory_format=torch.contiguous_format)
            # read-time exclusions: units of the dataset without embeddings
            n_excluded = n - res.embeddings.n_units
            if len(res.exclusions) != n_excluded + len(dataset.exclusions):
                raise SystemExit(
                    f"{n} units read, {res.embeddings.n_units} embedded, but "
                    f"{len(res.exclusions)} exclusions listed"
                )

    rows = [("model only (in-memory tensors)", t_model)]
    if t_nchw:
        rows.append(("model only, contiguous NCHW", t_nchw))
    rows += [
        ("loader only (read, scale, collate, copy)", t_loader),
        ("whole job (GeoTIFF -> chips -> encode -> write)", t_job),
    ]
    best = {name: min(times) for name, times in rows}
    ips = {name: n / t for name, t in best.items()}
    ips_model, ips_job = ips[rows[0][0]], ips[rows[-1][0]]
    ips_loader = ips["loader only (read, scale, collate, copy)"]
    print(
        f"{args.arch}, {args.px} px, {args.bands} bands, batch {args.batch_size}, "
        f"{n} units ({n_excluded} excluded at read time), {args.num_workers} loader worker(s), "
        f"torch threads {torch.get_num_threads()}, "
        f"{'GPU bf16, channels-last' if args.device == 'cuda' else 'CPU float32'}, {scene}, "
        f"best of {args.repeats} alternating repeats"
    )
    for name, times in rows:
        print(f"all runs (s), {name}: {[round(t, 2) for t in times]}")
    print(f"{'stage':<50}{'seconds':>10}{'images/s':>12}")
    for name, _ in rows:
        print(f"{name:<50}{best[name]:>10.2f}{ips[name]:>12.1f}")
    print(f"ratio job / model-only throughput: {ips_job / ips_model:.2f} (target >= 0.8)")
    print(f"ratio loader / model-only throughput: {ips_loader / ips_model:.2f}")
    if t_nchw:
        nchw = ips["model only, contiguous NCHW"]
        print(f"channels-last / NCHW model-only throughput: {ips_model / nchw:.2f}")
    if args.json is not None:
        figures = {
            "arch": args.arch,
            "px": args.px,
            "bands": args.bands,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "device": args.device,
            "n_units": n,
            "n_excluded": n_excluded,
            "repeats": args.repeats,
            "scene": scene,
            "seconds": {name: times for name, times in rows},
            "images_per_s": {
                "model_only": ips_model,
                "loader_only": ips_loader,
                "job": ips_job,
                **({"model_only_nchw": ips["model only, contiguous NCHW"]} if t_nchw else {}),
            },
            "ratio_job_model": ips_job / ips_model,
            "ratio_loader_model": ips_loader / ips_model,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
