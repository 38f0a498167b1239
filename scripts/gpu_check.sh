#!/usr/bin/env bash
# GPU check for the embedding and map jobs ("One map, many trials"). Run it on a CUDA machine
# from anywhere in the repository; it needs no network (random weights, simulated imagery):
#
#   bash scripts/gpu_check.sh              # on a CUDA machine: the full check, under 8 minutes
#   bash scripts/gpu_check.sh --tiny       # any machine, CPU allowed: every step shrunk to seconds
#   bash scripts/gpu_check.sh --dry-run    # print the plan and check the step scripts compile
#
# Steps, each under `timeout` (the limits add up to 465 s), each logged to $OUT/<step>.log:
#   env    torch, CUDA device, CPU cores                                  -> env.json
#   tests  python -m pytest -m cuda (bf16 job vs float32 on CPU; pinned,
#          channels-last data path)                                       -> tests.log
#   scene  the built-in simulated study, make_demo_study (2,048 px scene,
#          8,192 units)                                                   -> demo/
#   embed  ViT-S/16 (vit_small_patch16_224, random weights, 6 bands,
#          224 px, bf16) on GeoTIFF chips of the scene: model-only vs
#          loader-only vs the whole job (eocausal.encode.embed), images/s -> embed.json
#   map    about 1,000,000 cells of 60 m (1,001 x 1,001) through
#          eocausal.maps.run_map_job: per tile chips (32 px) -> embed with
#          ViT-S/16 at 32 px -> ridge OutcomeModel fitted on 400 units ->
#          prediction, valid and out-of-support bands; cells/s, peak RSS  -> map.json
# then a summary table (printed, and written to $OUT/summary.md).
#
# Output: everything goes under "$OUT" when set, else ./gpu_check_out. Exit status: 0 when
# every step succeeded, 1 otherwise (the summary is printed either way); 2 for bad arguments.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

mode=full
dry_run=0
for arg in "$@"; do
    case "$arg" in
        --tiny) mode=tiny ;;
        --dry-run) dry_run=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (use --tiny, --dry-run or --help)" >&2; exit 2 ;;
    esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$PWD/gpu_check_out}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$REPO"
# the step scripts import this checkout's eocausal, installed or not
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

cores=$(nproc)
workers=$((cores > 3 ? cores - 2 : 1))
workers=$((workers > 14 ? 14 : workers))

if [[ $mode == full ]]; then
    scene_px=2048 n_units=8192
    embed_n=8192 embed_px=224 embed_batch=256 embed_repeats=2
    map_side=1000 map_cell_m=60 map_chip_px=32 map_tile=256 map_labels=400 map_block_km=5
    map_batch=2048
else
    scene_px=256 n_units=300
    embed_n=64 embed_px=32 embed_batch=32 embed_repeats=1
    map_side=24 map_cell_m=60 map_chip_px=16 map_tile=13 map_labels=200 map_block_km=1
    map_batch=256 workers=1
fi
#        step   limit (s)
limits=(env 20 tests 60 scene 40 embed 90 map 240 summary 15)
declare -A limit
for ((i = 0; i < ${#limits[@]}; i += 2)); do limit[${limits[i]}]=${limits[i + 1]}; done

steps_dir=$OUT/steps
mkdir -p "$steps_dir"

# ----------------------------------------------------------------------------- step scripts
cat >"$steps_dir/env_step.py" <<'PY'
"""Step env: what the check runs on."""

import json
import os
import platform
import sys

import torch

info = {
    "python": platform.python_version(),
    "torch": torch.__version__,
    "cuda_available": torch.cuda.is_available(),
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    "cuda": torch.version.cuda,
    "cpu_cores": os.cpu_count(),
}
with open(sys.argv[1], "w") as fh:
    json.dump(info, fh, indent=1)
print(json.dumps(info))
PY

cat >"$steps_dir/map_step.py" <<'PY'
"""Step map: about a million cells through eocausal.maps.run_map_job, as the map stage does it.

Per tile: the cells' chips (ChipDataset over the scene GeoTIFF) -> eocausal.encode.embed
(ViT-S/16, random weights) -> a ridge OutcomeModel fitted on labelled units of the study ->
prediction, valid and out-of-support bands (eocausal/pipeline/outcome_map.py's bands) ->
tiles streamed into a COG. Figures go to --json; one line per finished tile goes to
<json>.tiles.jsonl as the job runs, so a timeout still leaves the throughput so far.
"""

import argparse
import json
import logging
import resource
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch

BANDS = [
    ("prediction", "float32", "predicted outcome at the cell centre", float("nan")),
    ("valid", "float32", "1 where the cell had enough valid imagery, else 0", float("nan")),
    ("out_of_support", "float32", "1 where the features lie outside the labels'", float("nan")),
]


def rss_mb(who):
    return resource.getrusage(who).ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("demo-dir", "work", "json"):
        p.add_argument(f"--{name}", type=Path, required=True)
    ints = ("cells-per-side", "chip-px", "tile-cells", "n-labels", "batch-size", "num-workers")
    for name in ints:
        p.add_argument(f"--{name}", type=int, required=True)
    p.add_argument("--cell-m", type=float, required=True)
    p.add_argument("--block-km", type=float, required=True)
    p.add_argument("--device", choices=["cpu", "cuda"], required=True)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    from eocausal.encode import build_encoder, embed
    from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale
    from eocausal.maps import RegionGrid, run_map_job, support_flags
    from eocausal.outcome import OutcomeModel, spatial_blocks
    from eocausal.units import StudyUnits

    t_start = time.perf_counter()
    run = {
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "progress": False,
        "accelerator": "gpu" if args.device == "cuda" else "cpu",
    }
    scene = args.demo_dir / "scene.tif"
    source = RasterSource(scene)
    spec = ChipSpec([Scale("cell", size_px=args.chip_px, out_px=args.chip_px)], recipe="c2_sr")
    table = pd.read_csv(args.demo_dir / "units.csv").head(args.n_labels)
    labels = ChipDataset(
        StudyUnits.from_frame(table, lon_col="lon", lat_col="lat", crs="EPSG:4326"), source, spec
    )
    encoder = build_encoder(
        "vit_small_patch16_224",
        in_chans=len(labels.band_names),
        random_weights=True,
        img_size=args.chip_px,
    )
    args.work.mkdir(parents=True, exist_ok=True)
    lab = embed(labels, encoder, args.work / "labels", **run).embeddings
    train = lab.block("cell")
    rows = table.set_index("unit_id").loc[lab.unit_ids]
    groups = spatial_blocks(rows[["x", "y"]].to_numpy(), block_km=args.block_km)
    model = OutcomeModel(model="ridge", random_state=0)
    model.fit(train, rows["outcome"].to_numpy(), groups=groups)
    fit_s = time.perf_counter() - t_start

    with rasterio.open(scene) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    cx, cy, half = (left + right) / 2, (bottom + top) / 2, args.cells_per_side * args.cell_m / 2
    grid = RegionGrid.from_bbox(
        (cx - half, cy - half, cx + half, cy + half), bbox_crs=crs, cell_size_m=args.cell_m
    )
    tiles_log = args.json.with_suffix(".tiles.jsonl")
    tiles_log.unlink(missing_ok=True)
    totals = {"embed_s": 0.0, "predict_s": 0.0, "support_s": 0.0, "embedded": 0}
    job_start = time.perf_counter()

    def predict_tile(tile, points):
        t0 = time.perf_counter()
        cells = StudyUnits.from_frame(
            points, id_col="unit_id", lon_col="x", lat_col="y", crs=grid.crs.to_wkt()
        )
        folder = args.work / f"tile{tile.index:05d}"
        chips = ChipDataset(cells, source, spec)
        emb = embed(chips, encoder, folder, resume=False, **run).embeddings
        shutil.rmtree(folder)
        t1 = time.perf_counter()
        n = len(points)
        out = {
            "prediction": np.full(n, np.nan, np.float32),
            "valid": np.zeros(n, np.float32),
            "out_of_support": np.full(n, np.nan, np.float32),
        }
        t2 = t1
        if emb.n_units:
            X = emb.block("cell")
            at = pd.Index(points["unit_id"]).get_indexer(emb.unit_ids)
            out["prediction"][at] = model.predict(X)
            out["valid"][at] = 1
            t2 = time.perf_counter()
            out["out_of_support"][at] = support_flags(train, X)[0]
        t3 = time.perf_counter()
        totals["embed_s"] += t1 - t0
        totals["predict_s"] += t2 - t1
        totals["support_s"] += t3 - t2
        totals["embedded"] += emb.n_units
        with tiles_log.open("a") as fh:
            fh.write(
                json.dumps(
                    {
                        "tile": tile.index,
                        "cells": n,
                        "embedded": emb.n_units,
                        "embed_s": round(t1 - t0, 3),
                        "predict_s": round(t2 - t1, 3),
                        "support_s": round(t3 - t2, 3),
                        "since_start_s": round(t3 - job_start, 3),
                    }
                )
                + "\n"
            )
        return out

    baseline = rss_mb(resource.RUSAGE_SELF)
    cog = run_map_job(
        grid,
        predict_tile,
        args.work / "map.tif",
        bands=BANDS,
        tile_cells=args.tile_cells,
        key="gpu_check",
    )
    seconds = time.perf_counter() - job_start
    with rasterio.open(cog) as src:
        valid = int(np.nansum(src.read(2)))
        cog_mb = cog.stat().st_size / 2**20
    if valid != totals["embedded"]:
        raise SystemExit(f"the COG has {valid} valid cells; {totals['embedded']} were embedded")
    figures = {
        "cells": grid.n_cells,
        "grid": [grid.height, grid.width],
        "cell_m": args.cell_m,
        "chip_px": args.chip_px,
        "tiles": len(grid.tiles(args.tile_cells)),
        "tile_cells": args.tile_cells,
        "valid_cells": valid,
        "labels": len(lab.unit_ids),
        "fit_s": fit_s,
        "map_s": seconds,
        "cells_per_s": grid.n_cells / seconds,
        "embed_s": totals["embed_s"],
        "predict_s": totals["predict_s"],
        "support_s": totals["support_s"],
        "map_job_own_s": seconds - totals["embed_s"] - totals["predict_s"] - totals["support_s"],
        "rss_before_map_mb": baseline,
        "peak_rss_mb": rss_mb(resource.RUSAGE_SELF),
        "peak_rss_workers_mb": rss_mb(resource.RUSAGE_CHILDREN),
        "gpu_peak_mb": (
            torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        ),
        "cog_mb": cog_mb,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": args.device,
    }
    args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
PY

cat >"$steps_dir/summary_step.py" <<'PY'
"""Step summary: one table from steps.tsv and the steps' JSON files."""

import json
import re
import sys
from pathlib import Path

out, mode = Path(sys.argv[1]), sys.argv[2]


def load(name):
    path = out / name
    return json.loads(path.read_text()) if path.is_file() else None


env, emb, mp = load("env.json"), load("embed.json"), load("map.json")
result = {}
if env:
    result["env"] = (
        f"{env['device']}, torch {env['torch']} (CUDA {env['cuda']}), {env['cpu_cores']} CPU cores"
    )
tests_log = out / "tests.log"
if tests_log.is_file():
    counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", tests_log.read_text())
    result["tests"] = ", ".join(f"{n} {what}" for n, what in counts) or "no pytest summary line"
scene = out / "demo" / "units.csv"
if scene.is_file():
    n_units = scene.read_text().count("\n") - 1
    result["scene"] = f"{n_units} units on {out / 'demo' / 'scene.tif'}"
if emb:
    ips = emb["images_per_s"]
    nchw = f" (NCHW {ips['model_only_nchw']:,.0f})" if "model_only_nchw" in ips else ""
    result["embed"] = (
        f"{emb['arch']} {emb['px']} px, batch {emb['batch_size']}, {emb['num_workers']} workers, "
        f"{emb['n_units']} chips: model-only {ips['model_only']:,.0f} img/s{nchw}, loader "
        f"{ips['loader_only']:,.0f}, job {ips['job']:,.0f}; "
        f"job/model {emb['ratio_job_model']:.2f}, loader/model {emb['ratio_loader_model']:.2f}"
    )
if mp:
    gpu = f", GPU peak {mp['gpu_peak_mb']:,.0f} MB" if mp["gpu_peak_mb"] is not None else ""
    result["map"] = (
        f"{mp['cells']:,} cells ({mp['valid_cells']:,} valid) in {mp['tiles']} tiles: "
        f"{mp['map_s']:.1f} s, {mp['cells_per_s']:,.0f} cells/s (embed {mp['embed_s']:.1f} s, "
        f"ridge {mp['predict_s']:.1f} s, support flags {mp['support_s']:.1f} s, tiles + COG "
        f"{mp['map_job_own_s']:.1f} s); peak RSS "
        f"{mp['peak_rss_mb']:,.0f} MB (before the map {mp['rss_before_map_mb']:,.0f} MB, "
        f"workers {mp['peak_rss_workers_mb']:,.0f} MB){gpu}"
    )
else:
    tiles = out / "map.tiles.jsonl"
    if tiles.is_file():
        done = [json.loads(line) for line in tiles.read_text().splitlines() if line.strip()]
        if done:
            cells, seconds = sum(t["cells"] for t in done), done[-1]["since_start_s"]
            result["map"] = (
                f"UNFINISHED: {len(done)} tiles, {cells:,} cells in {seconds:.1f} s "
                f"({cells / max(seconds, 1e-9):,.0f} cells/s so far)"
            )

rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
lines = [
    f"GPU check summary ({mode} mode), {out}",
    "",
    "| step | exit | seconds | limit | result |",
    "|---|---:|---:|---:|---|",
]
for name, rc, seconds, limit in rows:
    status = rc if rc != "124" else "124 (timed out)"
    lines.append(f"| {name} | {status} | {seconds} | {limit} | {result.get(name, '')} |")
total = sum(float(r[2]) for r in rows)
verdict = "all steps passed" if all(r[1] == "0" for r in rows) else "SOME STEPS FAILED"
lines.append(f"| total | | {total:.1f} | | {verdict} |")
text = "\n".join(lines)
(out / "summary.md").write_text(text + "\n")
print(text)
PY

# ----------------------------------------------------------------------------- plan
demo=$OUT/demo
device_arg=cuda
[[ $mode == tiny ]] && device_arg=cpu
py=$(printf '%q' "$PYTHON") q_out=$(printf '%q' "$OUT") q_steps=$(printf '%q' "$steps_dir")
q_demo=$(printf '%q' "$demo")
declare -A cmd
cmd[env]="$py $q_steps/env_step.py $q_out/env.json"
cmd[tests]="$py -m pytest -q -m cuda tests/encode/test_embed_job.py -p no:cacheprovider"
cmd[scene]="$py -c 'import sys; from eocausal.simulate import make_demo_study; make_demo_study(sys.argv[1], seed=0, n_units=int(sys.argv[2]), scene_size=int(sys.argv[3]))' $q_demo $n_units $scene_px"
cmd[embed]="$py benchmarks/embed.py --device $device_arg --demo-dir $q_demo --n-units $embed_n --px $embed_px --batch-size $embed_batch --num-workers $workers --repeats $embed_repeats --json $q_out/embed.json"
cmd[map]="$py $q_steps/map_step.py --demo-dir $q_demo --work $q_out/map_work --json $q_out/map.json --cells-per-side $map_side --cell-m $map_cell_m --chip-px $map_chip_px --tile-cells $map_tile --n-labels $map_labels --block-km $map_block_km --batch-size $map_batch --num-workers $workers --device $device_arg"
cmd[summary]="$py $q_steps/summary_step.py $q_out $mode"
order=(env tests scene embed map summary)

total_limit=0
echo "gpu_check.sh: $mode mode, output in $OUT, $cores CPU cores, $workers loader workers"
for step in "${order[@]}"; do
    total_limit=$((total_limit + limit[$step]))
    printf '  %-8s limit %4ss  %s\n' "$step" "${limit[$step]}" "${cmd[$step]}"
done
echo "  sum of the limits: ${total_limit}s"

if ((dry_run)); then
    "$PYTHON" -m py_compile "$steps_dir"/env_step.py "$steps_dir"/map_step.py "$steps_dir"/summary_step.py
    "$PYTHON" -c 'import eocausal.encode, eocausal.maps, eocausal.outcome, eocausal.simulate'
    [[ -f benchmarks/embed.py && -f tests/encode/test_embed_job.py ]]
    ((total_limit <= 480)) || { echo "the limits add up to ${total_limit}s > 480s" >&2; exit 1; }
    echo "dry run: the step scripts compile, eocausal imports, the limits fit in 8 minutes"
    exit 0
fi

# ----------------------------------------------------------------------------- run
: >"$OUT/steps.tsv"
failed=0
run_step() {
    local step=$1 rc t0 t1 seconds
    t0=$(date +%s.%N)
    echo "== $step (limit ${limit[$step]}s)"
    if timeout --kill-after=10 "${limit[$step]}" bash -c "${cmd[$step]}" >"$OUT/$step.log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    t1=$(date +%s.%N)
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\t%s\n' "$step" "$rc" "$seconds" "${limit[$step]}" >>"$OUT/steps.tsv"
    echo "   exit $rc after ${seconds}s (log: $OUT/$step.log)"
    if ((rc != 0)); then
        failed=1
        tail -n 5 "$OUT/$step.log" | sed 's/^/   | /'
    fi
    return 0
}

run_step env
if [[ $mode == full ]] && ! grep -q '"cuda_available": true' "$OUT/env.json" 2>/dev/null; then
    echo "gpu_check.sh: no CUDA device here (see $OUT/env.log); run with --tiny for a CPU smoke run" >&2
    exit 1
fi
for step in tests scene embed map; do run_step "$step"; done
echo
if ! timeout "${limit[summary]}" bash -c "${cmd[summary]}"; then failed=1; fi
exit $failed
