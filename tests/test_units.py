"""StudyUnits: validation messages that name rows and columns, readers, subset."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon

from eocausal.errors import UnitsError
from eocausal.units import StudyUnits, check_units_file, read_units_table


def _frame(n=4):
    return pd.DataFrame(
        {
            "unit_id": [f"v{i}" for i in range(n)],
            "lon": np.linspace(33.0, 34.0, n),
            "lat": np.linspace(1.0, 2.0, n),
            "W": [0, 1] * (n // 2),
            "Y": np.arange(n, dtype=float),
            "x1": np.ones(n),
            "village": ["a", "a", "b", "b"][:n],
            "wt": np.full(n, 2.0),
        }
    )


def test_from_frame_all_columns():
    u = StudyUnits.from_frame(
        _frame(),
        treatment_col="W",
        outcome_col="Y",
        covariate_cols=["x1"],
        cluster_col="village",
        weight_col="wt",
    )
    assert u.n_units == 4 and u.unit_id.tolist() == ["v0", "v1", "v2", "v3"]
    assert u.treatment.dtype == np.int64 and u.treatment.tolist() == [0, 1, 0, 1]
    assert u.outcome.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert list(u.covariates.columns) == ["x1"] and list(u.covariates.index) == u.unit_id.tolist()
    assert u.crs.to_epsg() == 4326 and u.gdf.geometry.x.tolist() == pytest.approx(
        np.linspace(33, 34, 4).tolist()
    )
    assert u.clusters.tolist() == ["a", "a", "b", "b"] and u.weights.tolist() == [2.0] * 4


def test_ids_become_strings_and_duplicates_named():
    f = _frame()
    f["unit_id"] = [1, 2, 3, 4]
    assert StudyUnits.from_frame(f).unit_id.tolist() == ["1", "2", "3", "4"]
    f["unit_id"] = [1.0, 2.0, 3.0, 4.0]
    assert StudyUnits.from_frame(f).unit_id.tolist() == ["1", "2", "3", "4"]
    f["unit_id"] = ["a", "b", "a", "c"]
    with pytest.raises(UnitsError, match=r"duplicated: 'a' \(rows 0, 2\)"):
        StudyUnits.from_frame(f)


def test_missing_columns_and_coordinates_named():
    with pytest.raises(UnitsError, match=r"treatment_col='treated'.*Available columns"):
        StudyUnits.from_frame(_frame(), treatment_col="treated")
    f = _frame()
    f.loc[2, "lat"] = np.nan
    with pytest.raises(UnitsError, match=r"'lon'/'lat' at rows 2"):
        StudyUnits.from_frame(f)


def test_swapped_lat_lon_said():
    f = _frame()
    f["lat"], f["lon"] = f["lon"] + 100, f["lat"]  # latitudes > 90
    with pytest.raises(UnitsError, match="look swapped"):
        StudyUnits.from_frame(f)


def test_bad_treatment_weights_outcome():
    f = _frame()
    f.loc[1, "W"] = 2
    with pytest.raises(UnitsError, match=r"binary 0/1.*rows 1 hold 2"):
        StudyUnits.from_frame(f, treatment_col="W")
    f = _frame()
    f.loc[3, "wt"] = 0.0
    with pytest.raises(UnitsError, match="strictly positive; rows 3"):
        StudyUnits.from_frame(f, weight_col="wt")
    f = _frame()
    f["Y"] = ["n/a", 1.0, 2.0, 3.0]
    with pytest.raises(UnitsError, match=r"'Y' must be numeric and finite; rows 0"):
        StudyUnits.from_frame(f, outcome_col="Y")


def test_geodataframe_checks():
    pts = [Point(500000 + i, 100000) for i in range(3)]
    g = gpd.GeoDataFrame({"unit_id": ["a", "b", "c"]}, geometry=pts, crs="EPSG:32636")
    u = StudyUnits.from_frame(g)
    assert u.crs.to_epsg() == 32636
    x, y = u.coordinates("EPSG:4326")
    assert np.all((32 < x) & (x < 34)) and np.all(np.abs(y) < 2)
    with pytest.raises(UnitsError, match="no CRS"):
        StudyUnits.from_frame(g.set_crs(None, allow_override=True))
    g2 = g.copy()
    g2.loc[1, "geometry"] = Polygon([(0, 0), (1, 0), (1, 1)])
    with pytest.raises(UnitsError, match=r"rows 1 are \['Polygon'\]"):
        StudyUnits.from_frame(g2)


def test_xy_columns_need_crs_and_no_location_errors():
    f = pd.DataFrame({"unit_id": ["a"], "x": [500000.0], "y": [100000.0]})
    with pytest.raises(UnitsError, match="need a CRS"):
        StudyUnits.from_frame(f)
    assert StudyUnits.from_frame(f, crs="EPSG:32636").crs.to_epsg() == 32636
    with pytest.raises(UnitsError, match="need a location"):
        StudyUnits.from_frame(pd.DataFrame({"unit_id": ["a"], "z": [1]}))
    u = StudyUnits.from_frame(pd.DataFrame({"unit_id": ["a"], "k": [3]}), image_key_col="k")
    assert u.gdf is None and u.crs is None and u.image_key.tolist() == [3]


@pytest.mark.parametrize("fmt", ["csv", "gpkg", "parquet", "plain_parquet"])
def test_read_formats(tmp_path, fmt):
    f = _frame()
    f["unit_id"] = ["007", "008", "009", "010"]
    if fmt == "csv":
        path = tmp_path / "u.csv"
        f.to_csv(path, index=False)
    elif fmt == "plain_parquet":
        path = tmp_path / "u.parquet"
        f.to_parquet(path)
    else:
        g = gpd.GeoDataFrame(
            f.drop(columns=["lon", "lat"]), geometry=gpd.points_from_xy(f.lon, f.lat), crs=4326
        )
        path = tmp_path / f"u.{fmt}"
        g.to_file(path) if fmt == "gpkg" else g.to_parquet(path)
    u = StudyUnits.read(path, treatment_col="W", outcome_col="Y")
    assert u.unit_id.tolist() == ["007", "008", "009", "010"]
    assert u.treatment.tolist() == [0, 1, 0, 1] and u.crs.to_epsg() == 4326
    np.testing.assert_allclose(u.gdf.geometry.y, f.lat)
    with pytest.raises(UnitsError, match="not found"):
        StudyUnits.read(tmp_path / "missing.csv")


def test_subset_keeps_order_and_checks_ids():
    u = StudyUnits.from_frame(_frame(), treatment_col="W", covariate_cols=["x1"])
    s = u.subset(["v3", "v0"])
    assert s.unit_id.tolist() == ["v3", "v0"] and s.treatment.tolist() == [1, 0]
    assert list(s.covariates.index) == ["v3", "v0"] and list(s.gdf.index) == ["v3", "v0"]
    with pytest.raises(UnitsError, match="Unknown unit ids in subset: 'zz'"):
        u.subset(["zz"])


_BAD_FILES = {
    "zero_bytes": ("u.csv", b"", r"is empty \(0 bytes\)"),
    "blank_lines": ("u.csv", b"\n \n", "only blank lines"),
    "header_only": ("u.csv", b"unit_id,lon,lat\n", "header but no rows"),
    "semicolons": ("u.csv", b"unit_id;lon;lat\nv0;33;1\n", "semicolon-separated file .*save it with commas"),
    "tabs_in_csv": ("u.csv", b"unit_id\tlon\tlat\nv0\t33\t1\n", "looks tab-separated"),
    "latin1_row": ("u.csv", "unit_id,lon,lat,name\nv0,33,1,caf\u00e9\n".encode("latin-1"),
                   "not UTF-8 text: byte 0xe9 at offset 32"),
    "xlsx": ("u.xlsx", b"PK\x03\x04", r"unsupported ending '\.xlsx'.*\.csv.*\.parquet.*\.gpkg.*\.geojson.*\.shp"),
    "no_ending": ("units", b"unit_id\nv0\n", r"unsupported ending '\(none\)'"),
    "corrupt_parquet": ("u.parquet", b"not parquet", r"Could not read units file .*u\.parquet"),
    "corrupt_gpkg": ("u.gpkg", b"not a geopackage", r"Could not read units file .*u\.gpkg"),
}


@pytest.mark.parametrize("case", list(_BAD_FILES))
def test_read_units_table_names_the_file_and_the_fix(tmp_path, case):
    name, content, message = _BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnitsError, match=message) as info:
        read_units_table(path, id_col="unit_id")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_units_table_folder_and_missing(tmp_path):
    (tmp_path / "u.csv").mkdir()
    with pytest.raises(UnitsError, match="is a folder"):
        read_units_table(tmp_path / "u.csv")
    with pytest.raises(UnitsError, match="not found"):
        read_units_table(tmp_path / "missing.csv")


def test_read_units_table_ids_are_text(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufeffunit_id,lon,lat\n007,33,1\n010,33,1\n".encode())
    assert read_units_table(tmp_path / "bom.csv").unit_id.tolist() == ["007", "010"]
    pd.DataFrame({"unit_id": [7.0, 8.0, np.nan], "lon": [33.0] * 3}).to_parquet(tmp_path / "f.parquet")
    assert read_units_table(tmp_path / "f.parquet").unit_id.tolist() == ["7", "8", None]
    pd.DataFrame({"id": [7, 10], "lon": [33.0] * 2}).to_parquet(tmp_path / "i.parquet")
    assert read_units_table(tmp_path / "i.parquet", id_col="id").id.tolist() == ["7", "10"]
    # a missing id stays missing, so StudyUnits names its row
    with pytest.raises(UnitsError, match="missing unit ids in rows 2"):
        StudyUnits.read(tmp_path / "f.parquet", lon_col="lon", lat_col="lon")


def test_check_units_file_reads_a_large_file_in_chunks(tmp_path):
    """A bad byte far past the first chunk is found, at its exact offset."""
    head = b"unit_id,lon,lat\n"
    rows = b"".join(b"v%07d,33.0,1.0\n" % i for i in range(120_000))  # about 2.3 MB
    (tmp_path / "big.csv").write_bytes(head + rows + b"v\xff,33,1\n")
    with pytest.raises(UnitsError, match=f"byte 0xff at offset {len(head) + len(rows) + 1}"):
        check_units_file(tmp_path / "big.csv")
    (tmp_path / "ok.csv").write_bytes(head + rows)
    assert check_units_file(tmp_path / "ok.csv") == tmp_path / "ok.csv"
