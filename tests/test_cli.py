"""The CLI: help everywhere, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eocausal", *args], capture_output=True, text=True, cwd=cwd, timeout=120
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
