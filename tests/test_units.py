"""StudyUnits: validation messages that name rows and columns, readers, subset."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Point, Polygon

from eocausal.errors import UnitsError
from eocausal.units import StudyUnits


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
