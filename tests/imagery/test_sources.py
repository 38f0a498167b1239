"""Sources: mosaics across CRSs, VRT, local STAC time series, QA masking, file errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from pyproj import Transformer

from eocausal.errors import BandError, ChipReadError, ConfigError, ImageryError
from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale, StacSource
from eocausal.units import StudyUnits


def _lonlat_units(points):
    frame = pd.DataFrame(
        {
            "unit_id": [f"u{i}" for i in range(len(points))],
            "lon": [p[0] for p in points],
            "lat": [p[1] for p in points],
        }
    )
    return StudyUnits.from_frame(frame)


def _utm_origin(epsg, lon, lat, offset):
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(lon, lat)
    return (np.floor(x / 30) * 30 - offset, np.floor(y / 30) * 30 + offset)


def test_mosaic_of_two_utm_zones(kit, tmp_path):
    # file A in UTM 36N around lon 35.95, file B in UTM 37N around lon 36.05 (the zone border is 36 E)
    oa, ob = _utm_origin(32636, 35.95, 1.0, 3000), _utm_origin(32637, 36.05, 1.0, 3000)
    a = kit.write_tif(
        tmp_path / "a.tif", 1_000_000 + kit.index_image(200, 200), crs="EPSG:32636", origin=oa
    )
    b = kit.write_tif(
        tmp_path / "b.tif", 2_000_000 + kit.index_image(200, 200), crs="EPSG:32637", origin=ob
    )
    pts = [(35.95, 1.0), (36.05, 1.0), (35.951, 1.001)]
    units = _lonlat_units(pts)
    ds = ChipDataset(units, RasterSource([a, b]), ChipSpec([Scale("s", size_px=5, out_px=5)]))
    items = {ds[i]["unit_id"]: ds[i] for i in range(len(ds))}
    for k, (path, epsg, base) in enumerate([(a, 32636, 1e6), (b, 32637, 2e6), (a, 32636, 1e6)]):
        x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True).transform(*pts[k])
        with rasterio.open(path) as src:
            r, c = src.index(x, y)
        assert items[f"u{k}"]["chips"]["s"][0, 2, 2].item() == base + r * 1000 + c
    # items are grouped by file: all of a.tif, then b.tif
    sources = [ds.chip_info(i)["scales"]["s"][0]["source"] for i in range(len(ds))]
    assert sources == sorted(sources, key=lambda s: s.endswith("b.tif"))


def test_overlapping_files_read_from_best_coverage(kit, tmp_path):
    o = (500000.0, 100000.0)
    a = kit.write_tif(tmp_path / "a.tif", np.full((1, 100, 100), 1, "uint8"), origin=o)
    b = kit.write_tif(
        tmp_path / "b.tif", np.full((1, 100, 100), 2, "uint8"), origin=(o[0] + 50 * 30, o[1])
    )
    near_a_edge = kit.pixel_centre(o, 30.0, 50, 97)  # 3 px from a's right edge, 47 px inside b
    ds = ChipDataset(
        kit.units_at([near_a_edge]),
        RasterSource([a, b]),
        ChipSpec([Scale("s", size_px=21, out_px=21)]),
    )
    item = ds[0]
    assert item["masks"]["s"].all() and (item["chips"]["s"] == 2).all()
    assert ds.chip_info(0)["scales"]["s"][0]["source"] == str(b)


def test_vrt_mosaic_reads_across_the_seam(kit, tmp_path):
    img = kit.index_image(100, 120)
    o = (500000.0, 100000.0)
    left = kit.write_tif(tmp_path / "left.tif", img[:, :, :60], origin=o)
    right = kit.write_tif(tmp_path / "right.tif", img[:, :, 60:], origin=(o[0] + 60 * 30, o[1]))
    with rasterio.open(left) as src:
        wkt = src.crs.to_wkt()
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">{p.name}</SourceFilename><SourceBand>1</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="60" ySize="100"/><DstRect xOff="{off}" yOff="0" xSize="60" ySize="100"/>'
        "</SimpleSource>"
        for p, off in ((left, 0), (right, 60))
    )
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="120" rasterYSize="100"><SRS>{wkt.replace("<", "&lt;")}</SRS>'
        f"<GeoTransform>{o[0]}, 30, 0, {o[1]}, 0, -30</GeoTransform>"
        f'<VRTRasterBand dataType="Float32" band="1"><Description>red</Description>{sources}</VRTRasterBand>'
        "</VRTDataset>"
    )
    ds = ChipDataset(
        kit.units_at([kit.pixel_centre(o, 30.0, 50, 60)]),
        RasterSource(vrt),
        ChipSpec([Scale("s", size_px=9, out_px=9)], bands=["red"]),
    )
    np.testing.assert_array_equal(ds[0]["chips"]["s"][0].numpy(), img[0, 46:55, 56:65])


def _stac_catalog(kit, tmp_path, *, as_collection=False):
    o = (500000.0, 100000.0)
    items = []
    for t, day in enumerate([dt.datetime(2020, 1, 5), dt.datetime(2020, 3, 9)]):
        folder = tmp_path / f"scene{t}"
        folder.mkdir()
        red = kit.write_tif(
            folder / "red.tif",
            (10_000 + 100 * t + kit.index_image(50, 50) % 100).astype("uint16"),
            origin=o,
            nodata=0,
        )
        nir = kit.write_tif(
            folder / "nir08.tif", np.full((1, 50, 50), 20_000 + t, "uint16"), origin=o, nodata=0
        )
        qa = np.zeros((1, 50, 50), "uint16")
        if t == 1:
            qa[0, 20:25, 20:25] = 1 << 3  # cloud
            qa[0, 30, 30] = 1 << 4  # cloud shadow
            qa[0, 31, 31] = 1 << 2  # cirrus: not masked
        qa_path = kit.write_tif(folder / "qa_pixel.tif", qa, origin=o)
        item = pystac.Item(
            id=f"LC08_scene{t}", geometry=None, bbox=None, datetime=day, properties={}
        )
        for key, path, name in (
            ("red", red, "SR_B4"),
            ("nir08", nir, "SR_B5"),
            ("qa_pixel", qa_path, "QA_PIXEL"),
        ):
            asset = pystac.Asset(
                href=str(path),
                media_type=pystac.MediaType.COG,
                extra_fields={"eo:bands": [{"name": name, "common_name": key}]},
            )
            item.add_asset(key, asset)
        items.append(item)
    if as_collection:
        path = tmp_path / "items.json"
        pystac.ItemCollection(items).save_object(dest_href=str(path))
        return path
    cat = pystac.Catalog(id="test", description="generated Landsat-like items")
    cat.add_items(items)
    cat.normalize_hrefs(str(tmp_path / "stac"))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return tmp_path / "stac" / "catalog.json"


@pytest.mark.parametrize("as_collection", [False, True])
def test_stac_time_series_with_qa_mask(kit, tmp_path, as_collection):
    path = _stac_catalog(kit, tmp_path, as_collection=as_collection)
    src = StacSource(path, bands=["red", "nir08"])
    assert src.band_names == ["red", "nir08", "qa_pixel"] and src.dates == [
        "2020-01-05",
        "2020-03-09",
    ]
    o = (500000.0, 100000.0)
    spec = ChipSpec(
        [Scale("s", size_px=11, out_px=11)],
        dates="all",
        qa_mask=True,
        recipe="c2_sr",
        min_valid_fraction=0.2,
    )
    ds = ChipDataset(kit.units_at([kit.pixel_centre(o, 30.0, 22, 22)]), src, spec)
    assert ds.band_names == ["red", "nir08"]
    item = ds[0]
    chip, mask = item["chips"]["s"].numpy(), item["masks"]["s"].numpy()
    assert chip.shape == (2, 2, 11, 11) and mask.shape == (2, 11, 11)
    # date 0: all valid; date 1: the 5x5 cloud (rows/cols 20-24 -> window 3..7) is masked
    assert mask[0].all()
    assert (~mask[1]).sum() == 25 and not mask[1, 3:8, 3:8].any()
    expected_red_0 = (10_000 + 22 * 1000 + 22) % 100 + 10_000
    assert chip[0, 0, 5, 5] == pytest.approx(np.float32(expected_red_0 * 0.0000275 - 0.2))
    assert chip[1, 1, 0, 0] == pytest.approx(np.float32(20_001 * 0.0000275 - 0.2))
    assert float(item["valid_fraction"]["s"]) == pytest.approx((1 + (121 - 25) / 121) / 2)
    # a single date, and a shadow pixel next to an unmasked cirrus pixel
    ds1 = ChipDataset(
        kit.units_at([kit.pixel_centre(o, 30.0, 30, 30)]),
        src,
        ChipSpec([Scale("s", size_px=3, out_px=3)], dates=["2020-03-09"], qa_mask=True),
    )
    m = ds1[0]["masks"]["s"].numpy()
    assert m.shape == (1, 3, 3) and not m[0, 1, 1] and m[0, 2, 2] and m.sum() == 8
    with pytest.raises(ConfigError, match="2021-01-01"):
        ChipDataset(
            kit.units_at([kit.pixel_centre(o, 30.0, 30, 30)]),
            src,
            ChipSpec([Scale("s", size_px=3, out_px=3)], dates=["2021-01-01"]),
        )


def test_stac_missing_band_names_item_and_eo_band_aliases(kit, tmp_path):
    path = _stac_catalog(kit, tmp_path)
    src = StacSource(path, bands=["SR_B5"])  # eo:bands name of the "nir08" asset
    assert src.band_names == ["SR_B5", "qa_pixel"]
    assert all(lyr.bands["SR_B5"][0].endswith("nir08.tif") for lyr in src.layers)
    with pytest.raises(BandError, match=r"LC08_scene0.*\['swir16'\]"):
        StacSource(path, bands=["red", "swir16"])


def test_missing_corrupt_and_unreadable_files(kit, tmp_path, index_tif):
    with pytest.raises(ImageryError, match="not found: .*nope.tif"):
        RasterSource([index_tif, tmp_path / "nope.tif"])
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(ChipReadError, match="bad.tif"):
        RasterSource(bad)
    # a file that opens but whose pixel blocks are gone: its units are excluded, naming the file
    rng = np.random.default_rng(0)
    big = kit.write_tif(
        tmp_path / "trunc.tif", rng.integers(0, 60000, (1, 256, 256)).astype("uint16")
    )
    ds = ChipDataset(
        kit.units_at([kit.pixel_centre((500000.0, 100000.0), 30.0, 200, 200)]),
        RasterSource(big),
        ChipSpec([Scale("s", size_px=5, out_px=5)]),
    )
    size = big.stat().st_size
    with open(big, "r+b") as fh:
        fh.truncate(size // 2)
    item = ds[0]
    assert (
        item["excluded"]
        and "unreadable imagery" in item["reason"]
        and "trunc.tif" in item["reason"]
    )
    assert item["chips"]["s"].shape == (1, 5, 5)


def test_qa_mask_without_qa_band(index_tif, kit):
    with pytest.raises(ConfigError, match="no QA_PIXEL band"):
        ChipDataset(
            kit.units_at([kit.pixel_centre((500000.0, 100000.0), 30.0, 5, 5)]),
            RasterSource(index_tif),
            ChipSpec([Scale("s", size_px=3, out_px=3)], qa_mask=True),
        )


def test_mosaic_files_must_share_bands(kit, tmp_path, index_tif):
    other = kit.write_tif(
        tmp_path / "other.tif", np.ones((2, 10, 10), "float32"), descriptions=["red", "swir16"]
    )
    with pytest.raises(ImageryError, match="same bands"):
        RasterSource([index_tif, other])


def test_handles_are_bounded_and_reopened(kit, tmp_path):
    o = (500000.0, 100000.0)
    paths = [
        kit.write_tif(
            tmp_path / f"t{k}.tif",
            np.full((1, 10, 10), k + 1, "uint8"),
            origin=(o[0] + k * 300, o[1]),
        )
        for k in range(5)
    ]
    src = RasterSource(paths)
    ds = ChipDataset(
        kit.units_at([kit.pixel_centre((o[0] + k * 300, o[1]), 30.0, 5, 5) for k in range(5)]),
        src,
        ChipSpec([Scale("s", size_px=3, out_px=3)]),
    )
    src._ds(str(paths[0]))
    src.__dict__["_handles"].max_open = 2
    values = sorted(int(ds[i]["chips"]["s"][0, 1, 1]) for i in range(len(ds)))
    assert values == [1, 2, 3, 4, 5] and len(src.__dict__["_handles"].open) == 2
    src.close()
    assert int(ds[0]["chips"]["s"][0, 1, 1]) in range(1, 6)  # reopens lazily after close
