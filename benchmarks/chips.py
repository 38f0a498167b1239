"""Benchmark: ChipDataset vs a naive chip loop on a tiled 4-file mosaic in two UTM zones.

The script writes a 2 x 2 mosaic of tiled (512 x 512 blocks), deflate-compressed
uint16 GeoTIFFs in a temporary folder: the two western files in UTM 36N, the
two eastern ones in UTM 37N (the zone border, 36 E, runs between them). Units
are random points (EPSG:4326) over the mosaic; each gets 3 scales (two in
pixels, one in kilometres). Measured in the same run:

- ChipDataset: every unit through ``dataset[i]`` (one process, no workers).
- naive loop: per unit, pick the file from bounds read once up front, open
  that file, and do one ``boundless=True`` window read per scale, then the
  same resampling and recipe. Run on a subset of units to bound the time (said in
  the table); its chips are checked equal to ChipDataset's.
- raw read rate: every block of every file read once (decoded bytes / s),
  the physical limit for reading these files.

MB/s of the chip readers counts the decoded bytes of the largest window per
unit (C bands x 2 bytes x in-bounds pixels); neighbouring windows overlap, so
blocks are shared and this rate may approach or exceed the raw rate.

Usage::

    python benchmarks/chips.py                 # 10,000 units, 4 x 4096^2 x 3 bands, naive on 500 units
    python benchmarks/chips.py --quick         # a few seconds
    python benchmarks/chips.py --units 20000 --size 6144 --naive-units 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing


def write_mosaic(folder: Path, size: int, bands: int, seed: int) -> list[Path]:
    """Write 4 tiled GeoTIFFs of ``size`` x ``size`` pixels (30 m) around lon 36 E, lat 1 N."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer

    rng = np.random.default_rng(seed)
    ext = size * 30.0
    paths = []
    for k, (epsg, lon) in enumerate(
        [(32636, 35.999), (32636, 35.999), (32637, 36.001), (32637, 36.001)]
    ):
        x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, 1.0)
        west = x - ext if epsg == 32636 else x
        north = y + ext if k % 2 == 0 else y  # files 0, 2 north of 1 N, files 1, 3 south of it
        path = folder / f"tile{k}.tif"
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": bands,
            "dtype": "uint16",
            "crs": f"EPSG:{epsg}",
            "transform": Affine(30.0, 0, west, 0, -30.0, north),
            "nodata": 0,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "compress": "deflate",
        }
        r = np.arange(size)[:, None]
        with rasterio.open(path, "w", **profile) as dst:
            for b in range(bands):
                base = (
                    9000
                    + 3000 * np.sin(r / (37.0 + b))
                    + 2000 * np.cos(np.arange(size)[None] / 53.0)
                )
                noise = rng.integers(0, 400, size=(size, size))
                dst.write((base + noise).astype("uint16"), b + 1)
        paths.append(path)
    return paths


def random_units(paths: list[Path], n: int, seed: int):
    import pandas as pd
    import rasterio
    from pyproj import Transformer

    from eocausal.units import StudyUnits

    lons, lats = [], []
    for p in paths:
        with rasterio.open(p) as ds:
            tr = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
            lo, la = tr.transform(
                [ds.bounds.left, ds.bounds.right], [ds.bounds.bottom, ds.bounds.top]
            )
            lons += lo
            lats += la
    rng = np.random.default_rng(seed)
    lon = rng.uniform(min(lons), max(lons), n)
    lat = rng.uniform(min(lats), max(lats), n)
    frame = pd.DataFrame({"unit_id": [f"u{i}" for i in range(n)], "lon": lon, "lat": lat})
    return StudyUnits.from_frame(frame)


def raw_read_rate(paths: list[Path]) -> tuple[float, float]:
    """Read every block of every file once; returns (MB, seconds)."""
    import rasterio

    nbytes = 0
    t0 = time.perf_counter()
    for p in paths:
        with rasterio.open(p) as ds:
            for _, win in ds.block_windows(1):
                nbytes += ds.read(window=win).nbytes
    return nbytes / 1e6, time.perf_counter() - t0


def naive_chips(units, paths, spec, band_names, unit_rows):
    """Per unit: open its file, one boundless read per scale, same resampling and recipe."""
    import rasterio
    from pyproj import Transformer
    from rasterio.windows import Window

    from eocausal.imagery.bands import apply_recipe
    from eocausal.imagery.chips import resample

    lon = units.gdf.geometry.x.to_numpy()
    lat = units.gdf.geometry.y.to_numpy()
    meta = []  # file bounds read once up front, so the loop opens only the file it reads
    for p in paths:
        with rasterio.open(p) as ds:
            tr = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
            meta.append((p, tr, ds.transform, ds.height, ds.width, ds.res[0]))
    out, nbytes = {}, 0
    for u in unit_rows:
        best = None
        for p, tr, transform, height, width, res in meta:  # the file whose window is most inside
            x, y = tr.transform(lon[u], lat[u])
            col, row = ~transform @ (x, y)
            row, col = int(np.floor(row)), int(np.floor(col))
            if 0 <= row < height and 0 <= col < width:
                H = max(s.size_px or round(s.size_km * 1000 / res) for s in spec.scales)
                cov = (min(row - H // 2 + H, height) - max(row - H // 2, 0)) * (
                    min(col - H // 2 + H, width) - max(col - H // 2, 0)
                )
                if best is None or cov > best[0]:
                    best = (cov, p, row, col, res)
        if best is None:
            continue
        _, p, row, col, res = best
        chips = {}
        with rasterio.open(p) as ds:
            for s in spec.scales:
                h = s.size_px or round(s.size_km * 1000 / res)
                win = Window(col - h // 2, row - h // 2, h, h)
                data = ds.read(window=win, boundless=True, fill_value=0)
                valid = ~np.any(data == 0, axis=0)
                nbytes += data.nbytes if s is spec.scales[-1] else 0
                vals = apply_recipe(data.astype(np.float32), spec.recipe, band_names)
                vals[:, ~valid] = 0
                chips[s.name] = resample(vals, valid, s.out_px, s.out_px)[0]
        out[str(units.unit_id[u])] = chips
    return out, nbytes / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--naive-units", type=int, default=500)
    parser.add_argument("--size", type=int, default=4096, help="file width/height in pixels")
    parser.add_argument("--bands", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small files and few units (seconds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.units, args.naive_units, args.size = 400, 50, 1024

    from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale

    spec = ChipSpec(
        [
            Scale("small", size_px=32, out_px=32),
            Scale("medium", size_px=96, out_px=48),
            Scale("large", size_km=5.76, out_px=64),
        ],  # 192 px at 30 m
        recipe="c2_sr",
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_mosaic(Path(tmp), args.size, args.bands, args.seed)
        t_write = time.perf_counter() - t0
        units = random_units(paths, args.units, args.seed)
        raw_mb, raw_s = raw_read_rate(paths)

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = ChipDataset(units, RasterSource(paths), spec)
        t_plan = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast, fast_mb, n_excl = {}, 0.0, 0
        naive_ids = set(units.unit_id[: args.naive_units].tolist())
        for i in range(len(ds)):
            item = ds[i]
            n_excl += item["excluded"]
            if item["unit_id"] in naive_ids:
                fast[item["unit_id"]] = item
            fast_mb += float(item["valid_fraction"]["large"]) * 192 * 192 * args.bands * 2 / 1e6
        t_fast = time.perf_counter() - t0 + t_plan
        ds.source.close()

        rows = np.arange(min(args.naive_units, units.n_units))
        t0 = time.perf_counter()
        slow, slow_mb = naive_chips(units, paths, spec, ds.band_names, rows)
        t_slow = time.perf_counter() - t0
        # the two readers must agree chip for chip
        checked = 0
        for uid, chips in slow.items():
            if uid in fast and not fast[uid]["excluded"]:
                for s in spec.scale_names:
                    np.testing.assert_allclose(
                        fast[uid]["chips"][s].numpy(), chips[s], rtol=1e-5, atol=1e-6
                    )
                checked += 1

    n_fast = len(ds)
    fast_rate, slow_rate = n_fast / t_fast, len(rows) / t_slow
    print(
        f"mosaic: 4 files x {args.size}^2 x {args.bands} bands uint16, 512^2 blocks, deflate, "
        f"UTM 36N + 37N (written in {t_write:.1f} s)"
    )
    print(
        f"units: {units.n_units} random points, {n_fast} inside, 3 scales "
        f"(32 px, 96 px, 5.76 km = 192 px), recipe c2_sr; {n_excl} excluded at read time"
    )
    print()
    print(f"{'reader':<34}{'units':>8}{'seconds':>10}{'units/s':>10}{'chips/s':>10}{'MB/s':>9}")
    print(
        f"{'ChipDataset (1 process)':<34}{n_fast:>8}{t_fast:>10.2f}{fast_rate:>10.1f}"
        f"{3 * fast_rate:>10.1f}{fast_mb / t_fast:>9.1f}"
    )
    print(
        f"{'naive (open per unit, boundless)':<34}{len(rows):>8}{t_slow:>10.2f}{slow_rate:>10.1f}"
        f"{3 * slow_rate:>10.1f}{slow_mb / t_slow:>9.1f}"
    )
    print(
        f"{'raw read, every block once':<34}{'':>8}{raw_s:>10.2f}{'':>10}{'':>10}{raw_mb / raw_s:>9.1f}"
    )
    print()
    print(
        f"speed-up ChipDataset / naive: {fast_rate / slow_rate:.1f}x (target >= 10x); "
        f"naive run on the first {len(rows)} units; {checked} units checked chip-for-chip equal"
    )
    print(
        f"ChipDataset MB/s / raw read MB/s: {fast_mb / t_fast / (raw_mb / raw_s):.2f} "
        f"(planning {t_plan:.2f} s included in the ChipDataset time)"
    )


if __name__ == "__main__":
    main()
