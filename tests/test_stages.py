"""Stages as artifacts: each CLI stage alone, reuse across processes, invalidation by inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eocausal", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def study_files(tmp_path_factory):
    """A units CSV and a raster on disk (inputs the tests can change)."""
    from eocausal.simulate import make_demo_study

    d = tmp_path_factory.mktemp("inputs")
    study = make_demo_study(d / "sim", seed=3, n_units=300, scene_size=512)
    units = study.units.copy()
    units.to_csv(d / "units.csv", index=False)
    shutil.copy(study.scene_path, d / "scene.tif")
    return d


def _config(folder: Path, inputs: Path) -> Path:
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = str(folder / "run")
    data["study"].pop("simulate")
    data["study"]["units"] = str(inputs / "units.csv")
    data["imagery"] = {"source": "raster", "paths": [str(inputs / "scene.tif")], "recipe": "c2_sr",
                       "scales": [{"name": "1km", "size_km": 1.0, "out_px": 16},
                                  {"name": "3km", "size_km": 3.0, "out_px": 16}]}
    data["encoder"]["n_features"] = 32
    data["estimate"]["n_estimators"] = 40
    data["evaluate"].update({"n_bootstrap": 20, "compare_scales": False})
    data["map"]["enabled"] = False
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _mtimes(folder: Path, pattern: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.glob(pattern))}


def test_embed_then_evaluate_in_a_fresh_process_reuses_the_embeddings(tmp_path, study_files):
    inputs = tmp_path / "inputs"
    shutil.copytree(study_files, inputs)
    cfg = _config(tmp_path, inputs)
    run = tmp_path / "run"
    embedded = _cli("embed", str(cfg))  # not quiet: the progress bar and logs go to stderr
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stdout.strip().splitlines() == [str(run / "embeddings" / "embeddings.parquet")]
    assert "GPU available" not in embedded.stderr and "Tip:" not in embedded.stderr
    shards = _mtimes(run / "embeddings" / "shards", "*.parquet")
    artifact = (run / "embeddings" / "embeddings.parquet").stat().st_mtime_ns
    assert shards

    evaluated = _cli("evaluate", str(cfg))  # not quiet: progress and logs go to stderr
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.strip().splitlines() == [str(run / "report.html")]
    assert _mtimes(run / "embeddings" / "shards", "*.parquet") == shards
    assert (run / "embeddings" / "embeddings.parquet").stat().st_mtime_ns == artifact
    assert json.loads((run / "run_log.json").read_text())["status"] == "complete"
    results = json.loads((run / "results.json").read_text())
    assert results["study"]["n_analysed"] > 200

    # a changed covariate: the embeddings stay, the fitted models are recomputed
    estimates = (run / "estimate" / "estimates.npz").stat().st_mtime_ns
    units = pd.read_csv(inputs / "units.csv")
    units.loc[0, "age"] = units.loc[0, "age"] + 1
    units.to_csv(inputs / "units.csv", index=False)
    again = _cli("evaluate", str(cfg), "-q")
    assert again.returncode == 0, again.stderr
    assert (run / "embeddings" / "embeddings.parquet").stat().st_mtime_ns == artifact
    assert (run / "estimate" / "estimates.npz").stat().st_mtime_ns != estimates

    # a moved unit: the embeddings are stale; `evaluate` refuses, `run` recomputes them
    units.loc[0, "lon"] = units.loc[0, "lon"] + 0.01
    units.to_csv(inputs / "units.csv", index=False)
    stale = _cli("evaluate", str(cfg), "-q")
    assert stale.returncode == 2
    assert "embed" in stale.stderr and len(stale.stderr.strip().splitlines()) == 1
    rerun = _cli("run", str(cfg), "-q")
    assert rerun.returncode == 0, rerun.stderr
    assert (run / "embeddings" / "embeddings.parquet").stat().st_mtime_ns != artifact


def test_a_changed_raster_invalidates_the_embeddings(tmp_path, study_files):
    from eocausal.config import load_config
    from eocausal.pipeline import embed_stage, prepare_study

    inputs = tmp_path / "inputs"
    shutil.copytree(study_files, inputs)
    cfg = load_config(_config(tmp_path, inputs))
    first = embed_stage(cfg, prepare_study(cfg), progress=False)
    same = embed_stage(cfg, prepare_study(cfg), progress=False)
    assert same.encoder is None and same.key == first.key  # reused, nothing built
    with rasterio.open(inputs / "scene.tif", "r+") as src:
        band = src.read(1)
        src.write(np.where(band > 0, band + 100, band), 1)
    changed = embed_stage(cfg, prepare_study(cfg), progress=False)
    assert changed.key != first.key and changed.encoder is not None
    assert not np.allclose(changed.embeddings.block("1km"), first.embeddings.block("1km"))


def test_a_killed_run_is_not_read_as_complete(tmp_path):
    from eocausal.errors import EocausalError
    from eocausal.pipeline import read_results, run_status
    from eocausal.pipeline.folder import mark_complete, mark_running

    run = tmp_path / "run"
    mark_running(run)
    (run / "results.json").write_text("{}")  # a results file left by an earlier run
    assert run_status(run) == "running"
    with pytest.raises(EocausalError, match="not a complete run"):
        read_results(run)
    mark_complete(run, {"total": 1.0})
    assert read_results(run) == {}


def test_kill_at_three_random_points_then_rerun_gives_identical_results(tmp_path, study_files):
    """kill -9 of `eocausal run` at three random moments; each killed folder reads as incomplete,
    and the final rerun gives the same results.json as an uninterrupted run, with no temporaries."""
    import os
    import signal
    import time

    from eocausal.pipeline import run_status

    inputs = tmp_path / "inputs"
    shutil.copytree(study_files, inputs)
    cfg = _config(tmp_path, inputs)
    data = yaml.safe_load(cfg.read_text())
    data["map"] = {"enabled": True, "grid": 6}
    cfg.write_text(yaml.safe_dump(data))

    t0 = time.perf_counter()
    reference = _cli("run", str(cfg), "-q", "--run-dir", str(tmp_path / "reference"))
    wall = time.perf_counter() - t0
    assert reference.returncode == 0, reference.stderr

    run = tmp_path / "killed"
    rng = np.random.default_rng(7)
    for moment in sorted(rng.uniform(0.15, 0.9, size=3) * wall):
        proc = subprocess.Popen([sys.executable, "-m", "eocausal", "run", str(cfg), "-q", "--run-dir", str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(moment)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            # killed mid-run: not complete; killed while exiting after its last write: complete and right
            if run_status(run) == "complete":
                assert (run / "results.json").read_bytes() == (tmp_path / "reference" / "results.json").read_bytes()
    final = _cli("run", str(cfg), "-q", "--run-dir", str(run))
    assert final.returncode == 0, final.stderr
    assert run_status(run) == "complete"
    assert (run / "results.json").read_bytes() == (tmp_path / "reference" / "results.json").read_bytes()
    assert (run / "cate.csv").read_bytes() == (tmp_path / "reference" / "cate.csv").read_bytes()
    leftovers = [p for p in run.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_all_nodata_imagery_stops_with_every_unit_and_its_reason(tmp_path, study_files):
    inputs = tmp_path / "inputs"
    shutil.copytree(study_files, inputs)
    with rasterio.open(inputs / "scene.tif", "r+") as src:
        for b in range(1, src.count + 1):
            src.write(np.full((src.height, src.width), src.nodata, dtype=src.dtypes[0]), b)
    cfg = _config(tmp_path, inputs)
    res = _cli("run", str(cfg), "-q")
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "excluded" in res.stderr
    table = pd.read_csv(tmp_path / "run" / "chips" / "exclusions.csv")
    assert len(table) == 300 and table["reason"].notna().all()
    from eocausal.pipeline import run_status

    assert run_status(tmp_path / "run") != "complete"
