"""Config validation: unknown keys, wrong types and missing files name the field."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from eocausal.config import load_config, parse_config
from eocausal.errors import ConfigError

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _demo() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_config_is_valid():
    cfg = load_config(DEMO)
    assert [s.name for s in cfg.imagery.scales] == ["1km", "6km"]
    assert cfg.study.simulate is not None and cfg.study.simulate.n_units == 2000
    assert cfg.run_dir.is_absolute()


def test_unknown_key_names_the_field():
    data = _demo()
    data["encoder"]["n_featurez"] = 12
    with pytest.raises(ConfigError, match=r"`encoder\.n_featurez`: unknown key"):
        parse_config(data)


def test_wrong_type_names_the_field_and_value():
    data = _demo()
    data["estimate"]["n_estimators"] = "many"
    with pytest.raises(ConfigError, match=r"`estimate\.n_estimators`.*'many'"):
        parse_config(data)


def test_nested_list_field_path():
    data = _demo()
    data["imagery"]["scales"][1]["size_km"] = -3
    with pytest.raises(ConfigError, match=r"`imagery\.scales\.1\.size_km`"):
        parse_config(data)


def test_missing_file_is_named(tmp_path):
    data = _demo()
    data["study"] = {"units": "nowhere.csv", "lon_col": "lon", "lat_col": "lat"}
    data["imagery"]["source"] = "raster"
    data["imagery"]["paths"] = ["scene.tif"]
    with pytest.raises(ConfigError, match=r"`study\.units`: file .*nowhere\.csv' does not exist"):
        parse_config(data, base_dir=tmp_path)


def test_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "units.csv").write_text("unit_id,lon,lat\n1,30,1\n")
    (tmp_path / "scene.tif").write_bytes(b"")
    data = _demo()
    data["study"] = {"units": "units.csv"}
    data["imagery"]["source"] = "raster"
    data["imagery"]["paths"] = ["scene.tif"]
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    cfg = load_config(cfg_path)
    assert cfg.study.units == tmp_path / "units.csv"
    assert cfg.imagery.paths == [tmp_path / "scene.tif"]


def test_inconsistent_choices_are_explained():
    data = _demo()
    data["features"]["scales"] = ["1km", "20km"]
    with pytest.raises(ConfigError, match=r"unknown scales \['20km'\]"):
        parse_config(data)
    data = _demo()
    data["imagery"]["scales"][0].pop("size_km")
    with pytest.raises(ConfigError, match="exactly one of `size_px` or `size_km`"):
        parse_config(data)


def test_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


@pytest.mark.parametrize("name", ["cluster_vit.yaml", "uganda.yaml"])
def test_example_configs_validate(name, tmp_path):
    """The example configs stay valid against the schema (input files replaced by stand-ins)."""
    data = yaml.safe_load((DEMO.parent / name).read_text())
    for key in ("units",):
        (tmp_path / "u.csv").write_text("unit_id\n1\n")
        data["study"][key] = str(tmp_path / "u.csv")
    if data["imagery"].get("paths"):
        (tmp_path / "m.vrt").write_text("")
        data["imagery"]["paths"] = [str(tmp_path / "m.vrt")]
    if data["imagery"].get("precut"):
        (tmp_path / "c.npz").write_bytes(b"")
        data["imagery"]["precut"] = str(tmp_path / "c.npz")
    cfg = parse_config(data, base_dir=tmp_path)
    if cfg.encoder.name != "mosaiks":
        from eocausal.encode import get_weights_entry

        assert get_weights_entry(cfg.encoder.name).in_chans == 7


def _units_config(folder: Path, **top) -> Path:
    """A config file in ``folder`` over a units table and a scene there (both stand-ins)."""
    (folder / "units.csv").write_text("unit_id,lon,lat\n1,30,1\n")
    (folder / "scene.tif").write_bytes(b"")
    data = _demo()
    data["study"] = {"units": "units.csv"}
    data["imagery"]["source"] = "raster"
    data["imagery"]["paths"] = ["scene.tif"]
    data.update(top)
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _bomb(levels: int) -> str:
    """A "billion laughs" document: ``seed`` expands to 9**levels strings."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nseed: *l{levels - 1}\n"


def test_alias_bomb_is_refused_before_it_is_built(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(7))  # 9**7 = 4.8 million strings from 500 bytes
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml'.*aliases.* to 11,434,292 values, over the limit of 10,000") as info:
        load_config(path)
    assert time.perf_counter() - t0 < 2.0 and len(str(info.value)) < 300


def test_aliases_within_the_limit_and_self_reference(tmp_path):
    data = _demo()
    shared = ["hh_size"]
    data["study"]["covariate_cols"] = data["study"]["drop_covariates"] = shared
    path = tmp_path / "aliased.yaml"
    path.write_text(yaml.safe_dump(data))  # PyYAML writes the shared list once, then an alias
    assert "*id001" in path.read_text()
    assert load_config(path).study.drop_covariates == ["hh_size"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("seed: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        load_config(loop)


@pytest.mark.parametrize(
    ("value", "echo"),
    [
        ("x" * 5000, "'xxxxxxxx"),
        (list(range(5000)), "a list of 5000 items"),
        ({f"k{i}": i for i in range(5000)}, "a dict of 5000 items"),
    ],
    ids=["long_string", "long_list", "big_mapping"],
)
def test_echoed_values_are_capped(value, echo):
    data = _demo()
    data["seed"] = value
    with pytest.raises(ConfigError, match=r"`seed`") as info:
        parse_config(data)
    message = str(info.value)
    assert echo in message and len(message) < 200, message


def test_long_unknown_key_is_capped():
    data = _demo()
    data["k" * 10_000] = 1
    with pytest.raises(ConfigError, match="unknown key") as info:
        parse_config(data)
    assert len(str(info.value)) < 400


def test_unknown_key_suggests_the_known_one():
    data = _demo()
    data["encoder"]["n_featurez"] = 12
    with pytest.raises(ConfigError, match=r"`encoder\.n_featurez`: unknown key; did you mean `n_features`\?"):
        parse_config(data)
    data = _demo()
    data["imagery"]["scales"][0]["zzz"] = 1
    with pytest.raises(ConfigError, match=r"`imagery\.scales\.0\.zzz`: unknown key; the known keys here are name, size_px"):
        parse_config(data)


def test_file_level_problems_name_the_file(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"seed: 0\nrun_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml' is not UTF-8 text: byte 0xe9 at offset 20"):
        load_config(latin)
    big = tmp_path / "big.yaml"
    big.write_text("seed: 0\n" + "# padding\n" * 120_000)
    with pytest.raises(ConfigError, match=r"big\.yaml' is 1,200,008 bytes, over the limit of 1,000,000"):
        load_config(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("seed: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml' is nested too deeply"):
        load_config(deep)
    nul = tmp_path / "nul.yaml"
    nul.write_text("seed: 0\x00\n")
    with pytest.raises(ConfigError, match=r"nul\.yaml' is not valid YAML at character 7: unacceptable character #x0000"):
        load_config(nul)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping .*got \[1, 2\]"):
        load_config(lst)


def test_relative_run_dir_resolves_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_units_config(folder, run_dir="out/run1"))
    assert cfg.run_dir == folder / "out" / "run1"
    cfg = load_config(folder / "c.yaml", overrides={"run_dir": str(tmp_path / "elsewhere")})
    assert cfg.run_dir == tmp_path / "elsewhere"


def test_run_dir_must_be_a_writable_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    path = _units_config(tmp_path, run_dir="afile")
    with pytest.raises(ConfigError, match=r"`run_dir`: '.*afile' is a file, not a folder; choose another `run_dir`"):
        load_config(path)
    path = _units_config(tmp_path, run_dir="afile/deeper/run")
    with pytest.raises(ConfigError, match=r"`run_dir`: '.*afile/deeper/run' lies under '.*afile', which is a file"):
        load_config(path)
    if sys.platform.startswith("linux"):  # /proc refuses new files, even to root
        path = _units_config(tmp_path, run_dir="/proc/eocausal-run")
        with pytest.raises(ConfigError, match=r"`run_dir`: cannot create files in '/proc'"):
            load_config(path)
    path = _units_config(tmp_path, run_dir="new/run")
    assert load_config(path).run_dir == tmp_path / "new" / "run" and not (tmp_path / "new").exists()


def test_units_file_is_checked_at_load(tmp_path):
    path = _units_config(tmp_path)
    (tmp_path / "units.csv").write_text("unit_id;lon;lat\n1;30;1\n")
    with pytest.raises(ConfigError, match=r"`study\.units`: Units file .*units\.csv' looks like a semicolon-separated"):
        load_config(path)
    (tmp_path / "units.csv").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"`study\.units`: .*is empty \(0 bytes\)"):
        load_config(path)


@pytest.mark.parametrize(
    ("debias", "message"),
    [
        ({"method": "linear"}, r"`debias`.*needs the predicted outcome: `map`"),
        ({"predicted_col": "p"}, r"needs the predicted outcome"),
        ({"map": ".", "predicted_col": "p"}, r"`debias\.map` brings its own predictions"),
        ({"predicted_col": "p", "calibration": "cal.csv", "radius_m": 100}, r"`debias\.radius_m`.*give `map`"),
        ({"map": ".", "residuals_col": "r", "sigma_source": "validation_residuals"}, r"`debias\.residuals_col`"),
        ({"map": "no_such_map"}, r"`debias\.map`: file .*no_such_map' does not exist"),
    ],
)
def test_debias_source_is_a_map_or_a_column_with_calibration(tmp_path, debias, message):
    (tmp_path / "cal.csv").write_text("predicted,truth\n0,0\n")
    data = _demo()
    data["debias"] = debias
    with pytest.raises(ConfigError, match=message):
        parse_config(data, base_dir=tmp_path)
