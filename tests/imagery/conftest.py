"""Generated GeoTIFFs with known pixel values (written in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from eocausal.units import StudyUnits


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str = "EPSG:32636",
    origin: tuple[float, float] = (500000.0, 100000.0),
    res: float = 30.0,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    tiled: bool = True,
    block: int = 64,
) -> Path:
    """Write ``data`` (C, H, W) as a GeoTIFF with top-left corner ``origin``."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype,
        "crs": crs,
        "transform": Affine(res, 0.0, origin[0], 0.0, -res, origin[1]),
        "nodata": nodata,
    }
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
    return path


def index_image(height: int, width: int, bands: int = 1, dtype: str = "float32") -> np.ndarray:
    """Pixel value = band * 1e6 + row * 1000 + col."""
    r, c = np.mgrid[0:height, 0:width]
    return np.stack([b * 1_000_000 + r * 1000 + c for b in range(bands)]).astype(dtype)


def pixel_centre(
    origin: tuple[float, float], res: float, row: int, col: int
) -> tuple[float, float]:
    return origin[0] + (col + 0.5) * res, origin[1] - (row + 0.5) * res


def units_at(
    xy: list[tuple[float, float]], crs: str = "EPSG:32636", ids: list[str] | None = None
) -> StudyUnits:
    ids = ids or [f"u{i}" for i in range(len(xy))]
    frame = pd.DataFrame({"unit_id": ids, "x": [p[0] for p in xy], "y": [p[1] for p in xy]})
    return StudyUnits.from_frame(frame, lon_col="x", lat_col="y", crs=crs)


class Kit:
    """The helpers above, handed to tests through the ``kit`` fixture."""

    write_tif = staticmethod(write_tif)
    index_image = staticmethod(index_image)
    pixel_centre = staticmethod(pixel_centre)
    units_at = staticmethod(units_at)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def index_tif(tmp_path: Path) -> Path:
    """200 x 300 float32 GeoTIFF, 2 bands named 'red', 'nir', value = band*1e6 + row*1000 + col."""
    return write_tif(tmp_path / "index.tif", index_image(200, 300, 2), descriptions=["red", "nir"])
