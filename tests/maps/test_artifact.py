"""The map artifact: COG + calibration CSV + JSON metadata, round trip and checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from eocausal.errors import InputDataError
from eocausal.maps import MapArtifact


@pytest.fixture
def cog(tmp_path):
    path = tmp_path / "src" / "wealth.tif"
    path.parent.mkdir()
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=3,
        width=4,
        count=1,
        dtype="float32",
        crs="EPSG:32636",
        transform=from_origin(500_000, 200_000, 1000, 1000),
    ) as dst:
        dst.write(np.arange(12, dtype="float32").reshape(1, 3, 4))
    return path


def test_round_trip_keeps_table_metadata_and_cog_bytes(tmp_path, cog):
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "row": np.arange(30),
            "group": np.repeat(["a", "b", "c"], 10),
            "predicted": rng.normal(size=30),
            "truth": rng.normal(size=30),
        }
    )
    meta = {
        "model": "ridge",
        "key": "abc",
        "metrics": {"r2": 0.41, "slope": np.float64(0.62)},
        "n": np.int64(30),
    }
    art = MapArtifact.write(tmp_path / "art", cog_path=cog, calibration_table=table, metadata=meta)
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == [
        "calibration.csv",
        "map.tif",
        "metadata.json",
    ]
    back = MapArtifact.read(tmp_path / "art")
    assert back.cog_path.read_bytes() == cog.read_bytes() and back.verify()
    pd.testing.assert_frame_equal(back.calibration, table, check_exact=True)
    assert back.metadata == {
        "model": "ridge",
        "key": "abc",
        "metrics": {"r2": 0.41, "slope": 0.62},
        "n": 30,
    }
    assert back.metadata == art.metadata and back.cog_sha256 == art.cog_sha256
    record = json.loads((tmp_path / "art" / "metadata.json").read_text())
    assert record["n_calibration"] == 30 and record["cog"] == "map.tif"
    with rasterio.open(
        back.cog_path, "r+"
    ) as dst:  # the map changed after the artifact was written
        dst.write(np.zeros((1, 3, 4), dtype="float32"))
    assert not MapArtifact.read(tmp_path / "art").verify()


def test_cog_already_in_the_folder_is_not_copied(cog):
    table = pd.DataFrame({"predicted": [0.1, 0.2], "truth": [0.0, 0.4]})
    art = MapArtifact.write(cog.parent, cog_path=cog, calibration_table=table, metadata={})
    assert art.cog_path == cog.resolve() and not (cog.parent / "map.tif").exists()
    assert MapArtifact.read(cog.parent).cog_path.name == "wealth.tif"


def test_bad_tables_and_folders_are_refused(tmp_path, cog):
    with pytest.raises(InputDataError, match=r"lacks column\(s\) \['truth'\]"):
        MapArtifact.write(
            tmp_path / "a",
            cog_path=cog,
            calibration_table=pd.DataFrame({"predicted": [1.0]}),
            metadata={},
        )
    with pytest.raises(InputDataError, match="rows \\[1\\]"):
        MapArtifact.write(
            tmp_path / "a",
            cog_path=cog,
            metadata={},
            calibration_table=pd.DataFrame({"predicted": [1.0, 2.0], "truth": [0.0, np.nan]}),
        )
    with pytest.raises(InputDataError, match="JSON-serialisable"):
        MapArtifact.write(
            tmp_path / "a",
            cog_path=cog,
            metadata={"model": object()},
            calibration_table=pd.DataFrame({"predicted": [1.0], "truth": [0.0]}),
        )
    with pytest.raises(InputDataError, match="metadata.json missing"):
        MapArtifact.read(tmp_path / "nothing")
