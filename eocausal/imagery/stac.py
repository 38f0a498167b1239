"""Georeferenced imagery from a local STAC catalog: :class:`StacSource`.

Each item is one :class:`~eocausal.imagery.layers.Layer` whose bands are the
item's raster assets; items on several dates give time series.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyproj import CRS

from eocausal.errors import BandError, ImageryError
from eocausal.imagery.bands import find_qa_band
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.layers import Layer, open_raster_meta

__all__ = ["StacSource"]


def _asset_lookup(item: Any) -> dict[str, str]:
    """Lower-case band name -> asset key: asset keys first, then eo:bands name and common_name."""
    lookup: dict[str, str] = {}
    for key, asset in item.assets.items():
        for band in asset.extra_fields.get("eo:bands", []) or []:
            for field in ("name", "common_name"):
                if isinstance(band, dict) and band.get(field):
                    lookup.setdefault(str(band[field]).lower(), key)
    lookup.update({k.lower(): k for k in item.assets})
    return lookup


def _item_date(item: Any) -> str:
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise ImageryError(
            f"STAC item {item.id!r} has no datetime; every item needs an acquisition date."
        )
    return dt.date().isoformat()


class StacSource(GeoSource):
    """Landsat Collection 2 (or similar) items from a local STAC catalog or ItemCollection.

    Each item is one :class:`Layer` whose bands are the item's raster assets
    (one single-band GeoTIFF/COG per asset, e.g. ``red``, ``nir08``,
    ``qa_pixel`` or ``SR_B4``). Items on several dates give time series;
    items on one date in several places form a mosaic.

    Parameters
    ----------
    path : path-like
        A ``catalog.json``/``collection.json`` (walked recursively) or an
        ItemCollection GeoJSON file.
    bands : sequence of str, optional
        Asset keys to use as bands (case-insensitive); by default every
        GeoTIFF/COG asset that all items share. A QA asset (``qa_pixel``) is
        added automatically when present so that ``ChipSpec(qa_mask=True)`` works.
    nodata : float, optional
        Nodata value for every asset (default: the files' own, else 0 for
        Landsat C2 SR, whose fill is 0 and flagged in QA_PIXEL).

    Raises
    ------
    ImageryError
        The catalog is missing or unreadable, or an item lacks a date.
    BandError
        An item lacks a requested band; the message names item and band.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bands: Sequence[str] | None = None,
        nodata: float | None = None,
    ) -> None:
        import pystac

        path = Path(path)
        if not path.exists():
            raise ImageryError(f"STAC catalog or ItemCollection not found: {path}.")
        self.path = str(path)
        self.description = f"the STAC catalog {path}"
        try:
            with open(path) as fh:
                kind = json.load(fh).get("type")
            if kind == "FeatureCollection":
                items = list(pystac.ItemCollection.from_file(str(path)))
            elif kind == "Feature":
                items = [pystac.Item.from_file(str(path))]
            else:
                items = list(pystac.read_file(str(path)).get_items(recursive=True))
        except (OSError, ValueError, pystac.STACError) as exc:
            raise ImageryError(f"Could not read the STAC catalog {path}: {exc}") from exc
        if not items:
            raise ImageryError(f"The STAC catalog {path} holds no items.")

        def raster_keys(item: Any) -> list[str]:
            out = []
            for key, asset in item.assets.items():
                mt = (asset.media_type or "").lower()
                if "tiff" in mt or asset.href.lower().endswith((".tif", ".tiff", ".vrt")):
                    out.append(key)
            return out

        if bands is None:
            common = [
                k for k in raster_keys(items[0]) if all(k in raster_keys(it) for it in items[1:])
            ]
            wanted = [k for k in common if find_qa_band([k]) is None]
        else:
            wanted = list(bands)
        qa_keys = [k for k in items[0].assets if find_qa_band([k]) is not None]
        if (
            qa_keys
            and all(qa_keys[0] in it.assets for it in items)
            and qa_keys[0].lower() not in {w.lower() for w in wanted}
        ):
            wanted.append(qa_keys[0])
        layers = []
        for item in items:
            lookup = _asset_lookup(item)
            missing = [b for b in wanted if b.lower() not in lookup]
            if missing:
                raise BandError(
                    f"STAC item {item.id!r} in {path} has no asset(s) {missing}; its assets are "
                    f"{sorted(item.assets)} (eo:bands names also match). "
                    "Choose bands present in every item (config field `imagery.bands`)."
                )
            band_map: dict[str, tuple[str, int]] = {}
            nodatas: dict[str, float | None] = {}
            grid = None
            for b in wanted:
                asset = item.assets[lookup[b.lower()]]
                href = asset.get_absolute_href() or asset.href
                meta = open_raster_meta(href)
                key = (meta["crs_wkt"], meta["transform"], meta["width"], meta["height"])
                if grid is None:
                    grid, block = key, meta["block"]
                elif key[1:] != grid[1:] or not CRS.from_wkt(key[0]).equals(CRS.from_wkt(grid[0])):
                    raise ImageryError(
                        f"STAC item {item.id!r}: asset {b!r} ({href}) is on a different grid from the item's "
                        "first band; resample the assets to one grid (e.g. drop the panchromatic band)."
                    )
                band_map[b] = (href, 1)
                nodatas[href] = nodata if nodata is not None else meta["nodata"]
            layers.append(
                Layer(
                    name=item.id,
                    crs_wkt=grid[0],
                    transform=grid[1],
                    width=grid[2],
                    height=grid[3],
                    bands=band_map,
                    nodata=nodatas,
                    block=block,
                    date=_item_date(item),
                )
            )
        self.layers = layers
        self.band_names = wanted

    def __repr__(self) -> str:
        return f"StacSource({len(self.layers)} items, {len(self.dates)} dates, bands={self.band_names})"
