"""scripts/gpu_check.sh: its tiny mode runs every step on CPU; the full plan fits in 8 minutes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _run(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHONWARNINGS="ignore")
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_tiny_mode_runs_every_step_and_prints_the_summary(tmp_path):
    proc = _run(tmp_path, "--tiny")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    assert "GPU check summary (tiny mode)" in proc.stdout
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[0] for s in steps] == ["env", "tests", "scene", "embed", "map"]
    assert all(s[1] == "0" for s in steps)
    assert "| total | |" in (out / "summary.md").read_text()

    emb = json.loads((out / "embed.json").read_text())
    assert emb["n_units"] == 64 and emb["px"] == 32 and emb["bands"] == 6
    assert all(v > 0 for v in emb["images_per_s"].values())
    assert emb["ratio_job_model"] == pytest.approx(
        emb["images_per_s"]["job"] / emb["images_per_s"]["model_only"]
    )
    # a 24 x 24-cell box of 60 m cells snaps to 24 rows x 25 columns, all inside the scene's
    # valid area; tiles of 13 x 13 cells: 2 x 2
    mp = json.loads((out / "map.json").read_text())
    assert mp["grid"] == [24, 25] and mp["cells"] == 600 and mp["tiles"] == 4
    assert mp["valid_cells"] == 600
    assert mp["peak_rss_mb"] >= mp["rss_before_map_mb"] > 0
    tiles = (out / "map.tiles.jsonl").read_text().splitlines()
    assert sum(json.loads(t)["cells"] for t in tiles) == 600


def test_dry_run_checks_the_plan_and_full_mode_needs_cuda(tmp_path):
    proc = _run(tmp_path, "--dry-run", timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "sum of the limits: 465s" in proc.stdout
    assert "--n-units 8192 --px 224" in proc.stdout and "--cells-per-side 1000" in proc.stdout
    assert _run(tmp_path, "--bogus", timeout=60).returncode == 2
    if not torch.cuda.is_available():
        full = _run(tmp_path, timeout=120)
        assert full.returncode == 1 and "no CUDA device here" in full.stderr
