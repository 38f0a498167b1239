"""Property tests of chip geometry against rasters whose values encode their pixel.

Every pixel of the test rasters holds ``row * 1000 + col``, so a chip says
exactly which pixels it was cut from. For random points (anywhere in the
raster, edges and corners included), CRSs (UTM zones north and south, a
geographic CRS), scales in pixels and kilometres and output sizes:

- the chip's centre pixel ``(h // 2, w // 2)`` is the pixel holding the point;
- the window is ``(r - h // 2, c - w // 2, h, w)``, read without shifting:
  in-raster pixels carry their own values, and exactly the out-of-raster part
  is padded with zeros and masked;
- the valid fraction equals the mask mean (the in-raster share of the window).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eocausal.errors import ConfigError
from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale
from eocausal.units import StudyUnits

from .conftest import index_image, write_tif

H, W = 37, 52  # raster rows, columns
#: CRS -> (top-left corner, pixel size in CRS units); the last one is geographic
GRIDS = {
    "EPSG:32636": ((500000.0, 100000.0), 30.0),  # UTM 36N
    "EPSG:32718": ((300000.0, 8000000.0), 30.0),  # UTM 18S
    "EPSG:32601": ((600000.0, 5000000.0), 30.0),  # UTM 1N
    "EPSG:4326": ((36.0, 1.0), 0.00027),  # lon/lat, about 30 m
}
PROPS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RasterSource]:
    folder = tmp_path_factory.mktemp("grids")
    out = {}
    for i, (crs, (origin, res)) in enumerate(GRIDS.items()):
        path = write_tif(folder / f"g{i}.tif", index_image(H, W), crs=crs, origin=origin, res=res)
        out[crs] = RasterSource(path)
    return out


def _units(crs: str, row: float, col: float) -> StudyUnits:
    (x0, y0), res = GRIDS[crs]
    frame = pd.DataFrame({"unit_id": ["u"], "x": [x0 + col * res], "y": [y0 - row * res]})
    return StudyUnits.from_frame(frame, lon_col="x", lat_col="y", crs=crs)


def _expected_window(r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and in-raster mask of the window at (r0, c0), from the encoding alone."""
    rows = np.arange(r0, r0 + h)[:, None]
    cols = np.arange(c0, c0 + w)[None, :]
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)
    return np.where(inside, rows * 1000 + cols, 0).astype(np.float32), inside


@st.composite
def _case(draw: st.DrawFn) -> dict:
    """A point (pixel and offset inside it), a CRS and 1-3 scales, each resampled or native."""
    crs = draw(st.sampled_from(sorted(GRIDS)))
    frac = st.floats(0.05, 0.95)
    scales = []
    for k in range(draw(st.integers(1, 3))):
        # windows stay within max(H, W): a raster smaller than a chip in both dimensions is an error
        n_px = draw(st.integers(1, W - 2))
        out_px = draw(st.one_of(st.none(), st.integers(1, 24)))  # None: native size, not resampled
        if draw(st.booleans()):
            scales.append({"name": f"s{k}", "size_px": n_px, "out_px": out_px})
        else:  # a little more than n_px pixels of about 30 m, so that none is below one pixel
            scales.append(
                {
                    "name": f"s{k}",
                    "size_km": round((max(n_px, 2) + 0.25) * 0.03, 6),
                    "out_px": out_px,
                }
            )
    return {
        "crs": crs,
        "r": draw(st.integers(0, H - 1)),
        "c": draw(st.integers(0, W - 1)),
        "dr": draw(frac),
        "dc": draw(frac),
        "scales": scales,
    }


def _spec(scales: list[dict], native: dict[str, int]) -> ChipSpec:
    return ChipSpec(
        [
            Scale(
                s["name"],
                size_px=s.get("size_px"),
                size_km=s.get("size_km"),
                out_px=s["out_px"] or native[s["name"]],
            )
            for s in scales
        ],
        min_valid_fraction=0.0,
    )


def _read(rasters: dict[str, RasterSource], case: dict) -> tuple[ChipDataset, dict, dict]:
    """Item 0 and its chip info; a native scale's out_px is its window height (a first pass)."""
    units = _units(case["crs"], case["r"] + case["dr"], case["c"] + case["dc"])
    source = rasters[case["crs"]]
    first = ChipDataset(
        units, source, _spec(case["scales"], {s["name"]: 1 for s in case["scales"]})
    )
    native = {name: e[0]["window"][2] for name, e in first.chip_info(0)["scales"].items()}
    ds = ChipDataset(units, source, _spec(case["scales"], native))
    return ds, ds[0], ds.chip_info(0)


@PROPS
@given(case=_case())
def test_centre_pixel_padding_mask_and_valid_fraction(rasters, case) -> None:
    ds, item, info = _read(rasters, case)
    r, c = case["r"], case["c"]
    assert not item["excluded"]
    for scale in ds.spec.scales:
        (window,) = [e["window"] for e in info["scales"][scale.name]]
        r0, c0, h, w = window
        if scale.size_px is not None:
            assert (h, w) == (scale.size_px, scale.size_px)
        # the window is centred on the pixel holding the point, never shifted at edges
        assert (r0, c0) == (r - h // 2, c - w // 2)
        values, inside = _expected_window(r0, c0, h, w)
        chip = item["chips"][scale.name].numpy()
        mask = item["masks"][scale.name].numpy()
        vf = float(item["valid_fraction"][scale.name])
        assert vf == pytest.approx(inside.mean(), abs=1e-6)
        if scale.out_px == h == w:  # not resampled: exact pixels
            assert chip[0, h // 2, w // 2] == r * 1000 + c
            np.testing.assert_array_equal(mask, inside)
            np.testing.assert_array_equal(chip[0], values)
            assert vf == pytest.approx(mask.mean(), abs=1e-6)
        elif inside.all():
            assert mask.all()
        else:
            assert chip[0][~mask].max(initial=0.0) == 0.0  # padding stays zero after resampling


def _km_case_strategy() -> st.SearchStrategy:
    return st.tuples(
        st.sampled_from(sorted(GRIDS)),
        st.integers(0, H - 1),
        st.integers(0, W - 1),
        st.integers(2, 40),
    )


@PROPS
@given(args=_km_case_strategy())
def test_km_window_matches_ground_size(rasters, args) -> None:
    """A km scale spans size_km on the ground: 1000 s / 30 m in UTM, cos(lat)-scaled in lon/lat."""
    crs, r, c, n = args
    size_km = round((n + 0.25) * 0.03, 6)
    case = {
        "crs": crs,
        "r": r,
        "c": c,
        "dr": 0.5,
        "dc": 0.5,
        "scales": [{"name": "k", "size_km": size_km, "out_px": 8}],
    }
    _, _, info = _read(rasters, case)
    (entry,) = info["scales"]["k"]
    _, _, h, w = entry["window"]
    if crs == "EPSG:4326":
        (_, lat0), res = GRIDS[crs]
        lat = math.radians(lat0 - (r + 0.5) * res)
        exp_h = size_km * 1000 / (res * 110_574.0)
        exp_w = size_km * 1000 / (res * 111_320.0 * math.cos(lat))
        assert abs(h - exp_h) <= 1 and abs(w - exp_w) <= 1
    else:
        assert h == w == round(size_km * 1000 / 30.0)


@PROPS
@given(crs=st.sampled_from(sorted(GRIDS)), fraction=st.floats(0.01, 0.9))
def test_scale_below_one_pixel_is_rejected(rasters, crs, fraction) -> None:
    """A km scale narrower than one pixel is an error that names the scale and its pixels."""
    size_km = round(fraction * 0.03, 6)
    units = _units(crs, H / 2, W / 2)
    spec = ChipSpec([Scale("wide", size_px=5, out_px=5), Scale("tiny", size_km=size_km, out_px=4)])
    with pytest.raises(
        ConfigError, match=r"'tiny'.*imagery\.scales\[1\]\.size_km.*less than one pixel"
    ) as err:
        ChipDataset(units, rasters[crs], spec)
    shown = float(str(err.value).split("covers only ")[1].split(" pixels")[0])
    assert shown == pytest.approx(fraction, rel=0.05)
