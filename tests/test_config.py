"""Config validation: unknown keys, wrong types and missing files name the field."""

from __future__ import annotations

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
        (tmp_path / "u.csv").write_text("unit_id\n")
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
