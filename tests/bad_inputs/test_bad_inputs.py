"""Bad inputs at the door: each gives one line on stderr, exit code 2 and no result.

Every case drives the real command line (``eocausal.cli.main``, in process; a few in a
subprocess through ``python -m eocausal``) on a tiny study: 60 units over the built-in
256 x 256 px scene. For each class of bad input a new user could give (config file,
config fields, units file, units content, run folder) the test asserts: exit code 2,
exactly one line on stderr that names the offending field, file or rows, no
traceback, and no run folder that reads as complete.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from eocausal import cli
from eocausal.simulate import make_demo_study

Case = Callable[[Path, Path], list[str]]  # (case folder, study folder) -> CLI arguments


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The built-in scene and 60 units (units.csv, scene.tif)."""
    folder = tmp_path_factory.mktemp("study")
    make_demo_study(folder, seed=0, n_units=60, scene_size=256)
    return folder


def _config(folder: Path, study: Path, *, units: Path | None = None, edit=None, text: str | None = None) -> Path:
    """A small valid run config in ``folder`` (run folder ``folder/run``), optionally edited."""
    data = {
        "run_dir": "run",
        "seed": 0,
        "study": {
            "units": str(units or study / "units.csv"),
            "covariate_cols": ["hh_size", "age"],
            "crs": "EPSG:4326",
            "propensity": 0.5,
        },
        "imagery": {
            "source": "raster",
            "paths": [str(study / "scene.tif")],
            "scales": [{"name": "s1", "size_px": 16, "out_px": 8}],
        },
        "encoder": {"name": "mosaiks", "n_features": 8},
        "features": {"pca_components": 3},
        "estimate": {"learner": "t_learner", "n_estimators": 20, "n_folds": 2},
        "evaluate": {"n_bootstrap": 10, "compare_scales": False},
        "map": {"enabled": False},
    }
    if edit is not None:
        edit(data)
    path = folder / "config.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path


def _units(folder: Path, study: Path, change: Callable[[pd.DataFrame], pd.DataFrame], name: str = "units.csv") -> Path:
    """The study's units table, changed, written to ``folder/name`` as CSV."""
    table = change(pd.read_csv(study / "units.csv", dtype={"unit_id": str}))
    table.to_csv(folder / name, index=False)
    return folder / name


def _run(*extra: str) -> Case:
    """A case whose bad input is in the config (``edit``) or on the command line (``extra``)."""

    def case_with(edit=None) -> Case:
        return lambda folder, study: ["run", "-q", str(_config(folder, study, edit=edit)), *extra]

    return case_with


def _set(path: str, value) -> Callable[[dict], None]:
    """Set the dotted config field ``path`` to ``value``."""

    def edit(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def _units_case(change, **config) -> Case:
    def case(folder: Path, study: Path) -> list[str]:
        units = _units(folder, study, change)
        edit = (lambda d: [_set(k, v)(d) for k, v in config.items()]) if config else None
        return ["run", "-q", str(_config(folder, study, units=units, edit=edit))]

    return case


def _units_file(name: str, content: bytes) -> Case:
    def case(folder: Path, study: Path) -> list[str]:
        (folder / name).write_bytes(content)
        return ["run", "-q", str(_config(folder, study, units=folder / name))]

    return case


def _config_text(text: str | bytes) -> Case:
    def case(folder: Path, study: Path) -> list[str]:
        path = folder / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", "-q", str(path)]

    return case


def _bomb(levels: int) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nseed: *l{levels - 1}\n"


def _row(col: str, row: int, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(t: pd.DataFrame) -> pd.DataFrame:
        t[col] = t[col].astype(object)
        t.loc[row, col] = value
        return t

    return change


def _run_dir_under_file(folder: Path, study: Path) -> list[str]:
    (folder / "afile").write_text("x")
    return ["run", "-q", str(_config(folder, study, edit=_set("run_dir", "afile/run")))]


def _run_dir_option_under_file(folder: Path, study: Path) -> list[str]:
    (folder / "afile").write_text("x")
    return ["run", "-q", str(_config(folder, study)), "--run-dir", str(folder / "afile" / "run")]


def _run_dir_is_file(folder: Path, study: Path) -> list[str]:
    (folder / "run").write_text("x")
    return ["chips", "-q", str(_config(folder, study))]


def _config_is_folder(folder: Path, study: Path) -> list[str]:
    return ["run", "-q", str(folder)]


def _missing_config(folder: Path, study: Path) -> list[str]:
    return ["evaluate", "-q", str(folder / "missing.yaml")]


def _units_folder(folder: Path, study: Path) -> list[str]:
    (folder / "units.csv").mkdir()
    return ["run", "-q", str(_config(folder, study, units=folder / "units.csv"))]


def _swap(t: pd.DataFrame) -> pd.DataFrame:
    return t.rename(columns={"lon": "lat", "lat": "lon"})


def _shift_lat(t: pd.DataFrame) -> pd.DataFrame:
    return t.assign(lat=t["lon"] + 60.0, lon=t["lat"])  # latitudes 92-93: out of range, fit as longitudes


def _duplicate(t: pd.DataFrame) -> pd.DataFrame:
    t.loc[5, "unit_id"] = t.loc[4, "unit_id"]
    return t


CASES: dict[str, tuple[Case, tuple[str, ...]]] = {
    # the config file itself
    "config_missing": (_missing_config, ("missing.yaml", "does not exist")),
    "config_is_folder": (_config_is_folder, ("is a folder",)),
    "config_not_yaml": (_config_text("study: [unclosed\n"), ("config.yaml", "not valid YAML at line 2")),
    "config_not_a_mapping": (_config_text("- 1\n- 2\n"), ("top level must be a mapping", "[1, 2]")),
    "config_not_utf8": (_config_text(b"seed: 0\nrun_dir: caf\xe9\n"), ("config.yaml", "not UTF-8", "offset 20")),
    "config_alias_bomb": (_config_text(_bomb(7)), ("config.yaml", "aliases", "limit of 10,000")),
    "config_over_1mb": (_config_text("seed: 0\n" + "#" * 1_100_000 + "\n"), ("config.yaml", "limit of 1,000,000 bytes")),
    # config fields
    "unknown_key": (_run()(_set("features.pca", 3)), ("`features.pca`", "unknown key", "did you mean `pca_components`")),
    "wrong_type": (_run()(_set("seed", "abc")), ("`seed`", "'abc'")),
    "wrong_choice": (_run()(_set("estimate.learner", "forest")), ("`estimate.learner`", "'forest'")),
    "huge_value": (_run()(_set("seed", "x" * 100_000)), ("`seed`", "(got 'xxxx", "...")),
    "huge_list": (_run()(_set("seed", list(range(5000)))), ("`seed`", "a list of 5000 items")),
    "out_of_range": (_run()(_set("evaluate.test_size", 1.5)), ("`evaluate.test_size`", "1.5")),
    "missing_imagery_file": (_run()(_set("imagery.paths", ["nowhere.tif"])), ("`imagery.paths.0`", "nowhere.tif")),
    "missing_units_file": (_run()(_set("study.units", "nowhere.csv")), ("`study.units`", "nowhere.csv")),
    "unknown_scale": (_run()(_set("features.scales", ["s2"])), ("features.scales", "['s2']")),
    # the run folder
    "run_dir_under_file": (_run_dir_under_file, ("`run_dir`", "afile", "which is a file")),
    "run_dir_option_under_file": (_run_dir_option_under_file, ("`run_dir`", "afile", "which is a file")),
    "run_dir_is_file": (_run_dir_is_file, ("`run_dir`", "is a file, not a folder")),
    "run_dir_not_writable": (_run()(_set("run_dir", "/proc/eocausal-run")), ("`run_dir`", "cannot create files in '/proc'")),
    # the units file
    "units_zero_bytes": (_units_file("units.csv", b""), ("`study.units`", "units.csv", "empty (0 bytes)")),
    "units_header_only": (_units_file("units.csv", b"unit_id,lon,lat,treated,outcome\n"), ("units.csv", "no rows")),
    "units_unknown_ending": (_units_file("units.xlsx", b"PK\x03\x04"), ("units.xlsx", "unsupported ending", ".csv", ".gpkg")),
    "units_is_folder": (_units_folder, ("units.csv", "is a folder")),
    "units_semicolons": (
        lambda f, s: ["run", "-q", str(_config(f, s, units=_units_semicolons(f, s)))],
        ("units.csv", "semicolon-separated", "save it with commas"),
    ),
    "units_not_utf8": (
        _units_file("units.csv", "unit_id,lon,lat,treated,outcome\nu1,32.1,2.7,1,caf\u00e9\n".encode("latin-1")),
        ("units.csv", "not UTF-8", "byte 0xe9 at offset 49"),
    ),
    # the units' content
    "missing_covariate_column": (_units_case(lambda t: t, **{"study.covariate_cols": ["hh_size", "income"]}),
                                 ("study.covariate_cols", "income")),
    "missing_treatment_column": (_units_case(lambda t: t, **{"study.treatment_col": "treat"}),
                                 ("treatment_col='treat'", "Available columns")),
    "non_binary_treatment": (_units_case(_row("treated", 3, 2)), ("'treated'", "binary", "rows 3")),
    "duplicate_ids": (_units_case(_duplicate), ("'unit_id'", "duplicated: 'u00004'", "rows 4, 5")),
    "missing_id": (_units_case(_row("unit_id", 1, None)), ("missing unit ids", "rows 1")),
    "nan_outcome": (_units_case(_row("outcome", 7, None)), ("Outcome column 'outcome'", "rows 7")),
    "text_covariate": (_units_case(_row("age", 2, "old")), ("Covariate column 'age'", "rows 2", "'old'")),
    "swapped_lon_lat": (_units_case(_shift_lat), ("'lat'", "look swapped")),
    "bad_crs": (_units_case(lambda t: t, **{"study.crs": "EPSG:999999"}), ("'EPSG:999999'", "not a valid CRS")),
    # the design, checked against the data before any chip is cut
    "declared_propensity_inconsistent": (_run()(_set("study.propensity", 0.999)),
                                         ("`study.propensity`", "0.999", "treated")),
    "propensity_column_inconsistent": (
        _units_case(lambda t: t.assign(p=0.999), **{"study.propensity": None, "study.propensity_col": "p"}),
        ("`study.propensity_col`", "average 0.999"),
    ),
    "propensity_column_at_one": (
        _units_case(lambda t: t.assign(p=t["treated"].astype(float)), **{"study.propensity": None,
                                                                          "study.propensity_col": "p"}),
        ("`study.propensity_col`", "outside (0, 1)", "units u0"),
    ),
    "all_treated": (_units_case(lambda t: t.assign(treated=1)), ("`study.treatment_col`", "all 60 units", "treated")),
    "test_size_too_small": (_run()(_set("evaluate.test_size", 0.02)), ("`evaluate.test_size`", "0.02")),
    "duplicate_feature_scales": (_run()(_set("features.scales", ["s1", "s1"])), ("features.scales repeats", "s1")),
    "temporal_transformer": (_run()(_set("encoder.temporal", "transformer")), ("`encoder.temporal`", "'transformer'")),
    # the encoder, checked before any chip is cut
    "unknown_encoder": (_run()(_set("encoder.name", "vit_nowhere_xyz")), ("`encoder.name`", "vit_nowhere_xyz")),
    "mosaiks_with_weights": (lambda f, s: ["run", "-q", str(_config(f, s, edit=_set("encoder.weights_path",
                                                                                 str(s / "units.csv"))))],
                             ("`encoder.weights_path`", "MOSAIKS")),
    "timm_without_pinned_sha256": (
        lambda f, s: ["run", "-q", str(_config(f, s, edit=lambda d: d["encoder"].update(
            name="test_vit", weights_path=str(s / "units.csv"))))],
        ("`encoder.weights_sha256`",),
    ),
}


def _units_semicolons(folder: Path, study: Path) -> Path:
    text = (study / "units.csv").read_text().replace(",", ";")
    (folder / "units.csv").write_text(text)
    return folder / "units.csv"


def _assert_one_line_and_no_result(code, err: str, expected: tuple[str, ...], run_dir: Path) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: ") and len(line) < 600, line
    for part in expected:
        assert part in line, (part, line)
    assert not (run_dir / "results.json").exists()
    if (run_dir / "run_log.json").is_file():
        assert json.loads((run_dir / "run_log.json").read_text())["status"] != "complete"
    return line


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line(name, study, tmp_path, monkeypatch, capsys):
    if name == "run_dir_not_writable" and not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux")
    case, expected = CASES[name]
    args = case(tmp_path, study)
    monkeypatch.setattr(sys, "argv", ["eocausal", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    _assert_one_line_and_no_result(exit_info.value.code, err, expected, tmp_path / "run")
    assert out == ""


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eocausal", *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def test_billion_laughs_through_python_m_eocausal(tmp_path):
    """The audit's alias bomb (9**9 strings from 600 bytes) is refused at once, in one short line."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))
    t0 = time.perf_counter()
    out = _cli("run", str(path))
    assert time.perf_counter() - t0 < 30
    line = _assert_one_line_and_no_result(out.returncode, out.stderr, ("bomb.yaml", "limit of 10,000"), tmp_path / "run")
    assert len(line) < 300


def test_semicolon_units_through_python_m_eocausal(tmp_path, study):
    cfg = _config(tmp_path, study, units=_units_semicolons(tmp_path, study))
    out = _cli("chips", str(cfg))
    _assert_one_line_and_no_result(out.returncode, out.stderr, ("semicolon-separated",), tmp_path / "run")


def test_ctrl_c_during_a_run(tmp_path, study):
    """SIGINT in the middle of `eocausal run`: "aborted", exit code 130, the run marked failed."""
    cfg = _config(tmp_path, study)
    run_log = tmp_path / "run" / "run_log.json"
    proc = subprocess.Popen([sys.executable, "-m", "eocausal", "run", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not run_log.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_log.exists(), proc.communicate(timeout=30)[1] if proc.poll() is not None else "no run_log.json"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "aborted" and "Traceback" not in err
    log = json.loads(run_log.read_text())
    assert log["status"] == "failed" and "interrupted" in log["error"]
    assert not (tmp_path / "run" / "results.json").exists()
