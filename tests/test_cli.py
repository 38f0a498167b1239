"""The CLI: help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eocausal", *args], check=False, capture_output=True, text=True, cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [(), ("demo",), ("run",), ("chips",), ("embed",), ("evaluate",), ("weights",), ("weights", "list")],
)
def test_help(args):
    out = _cli(*args, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in out.stderr
    return " ".join(lines)


def test_missing_config_file(tmp_path):
    msg = _one_line_error(_cli("run", str(tmp_path / "missing.yaml")))
    assert "missing.yaml" in msg and "does not exist" in msg


def test_unknown_key(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["features"]["pca"] = 3
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    msg = _one_line_error(_cli("run", str(cfg)))
    assert "features.pca" in msg and "unknown key" in msg


def test_wrong_type(tmp_path):
    data = yaml.safe_load(DEMO.read_text())
    data["seed"] = "abc"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    msg = _one_line_error(_cli("chips", str(cfg)))
    assert "`seed`" in msg


def test_missing_imagery_file(tmp_path):
    (tmp_path / "units.csv").write_text("unit_id,lon,lat,treated,outcome\n1,30,1,0,1.0\n")
    data = yaml.safe_load(DEMO.read_text())
    data["study"] = {"units": "units.csv"}
    data["imagery"]["source"] = "raster"
    data["imagery"]["paths"] = ["missing_scene.tif"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    msg = _one_line_error(_cli("run", str(cfg)))
    assert "imagery.paths.0" in msg and "missing_scene.tif" in msg


_SLOW_PREDICT = '''
import sys, time, pathlib
import torch
import lightning.pytorch as pl
from eocausal import cli

ready = pathlib.Path(sys.argv[1])


@cli.app.command("slow")
def slow() -> None:
    class Slow(pl.LightningModule):
        def predict_step(self, batch, batch_idx):
            ready.touch()
            time.sleep(60)

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.predict(Slow(), torch.utils.data.DataLoader(torch.zeros(2, 1)))


sys.argv = ["eocausal", "slow"]
cli.main()
'''


def test_ctrl_c_inside_lightning_predict_exits_130(tmp_path):
    """Lightning turns KeyboardInterrupt into its own message and exit code 1; main must not let it."""
    script, ready = tmp_path / "slow.py", tmp_path / "ready"
    script.write_text(_SLOW_PREDICT)
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), "predict_step never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "aborted"
    assert "Traceback" not in err and "Detected KeyboardInterrupt" not in err


def test_run_dir_option_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    from eocausal.cli import _load

    folder, cwd = tmp_path / "configs", tmp_path / "work"
    folder.mkdir()
    cwd.mkdir()
    data = yaml.safe_load(DEMO.read_text())
    data["run_dir"] = "runs/x"
    (folder / "c.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(cwd)
    assert _load(folder / "c.yaml", None).run_dir == folder / "runs" / "x"
    assert _load(folder / "c.yaml", Path("out")).run_dir == cwd / "out"


@pytest.mark.parametrize(
    "results",
    [
        {},
        {"rate": None, "cate": None, "exclusions": None, "panel": None},
        {"panel": {"effects": [{"method": "twfe", "estimate": 0.5, "std_err": None}], "truth": 0.4},
         "exclusions": {"n": 3}},
        {"rate": {"table": [{"combination": "[a]+b", "estimate": 1.0}], "sequential_cv": {"statistic": 2.0}},
         "cate": {"corr_with_true_tau_held_out": None}, "exclusions": {"n": 2, "by_reason": {"off the scene": 2}}},
    ],
    ids=["empty", "sections_none", "panel_run", "partial_rows"],
)
def test_summary_tolerates_missing_sections(results, capsys):
    from eocausal.cli import _summary

    _summary(results)
    err = capsys.readouterr().err
    if results.get("panel"):
        assert "twfe" in err and "0.500" in err and "truth" in err and "3 units excluded" in err
    if results.get("rate"):
        assert "[a]+b" in err and "2 x off the scene" in err and "correlation" not in err
