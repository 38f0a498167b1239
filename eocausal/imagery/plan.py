"""Planning a chip dataset before any pixel is read.

For each unit the plan lists, per date, the layers that can serve it (most
of the window inside first) with the unit's pixel and the window size of
every scale, or the reason it cannot be served (outside all imagery, unknown
image key). It also fixes the item order: by file, then by the Z-order of the
block holding the unit's pixel, so that consecutive items share blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eocausal.errors import ConfigError, ImageryError, UnitsError
from eocausal.imagery.bands import find_qa_band, resolve_bands
from eocausal.imagery.geometry import km_window_extent, morton_key, window_origin
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.keyed import KeyedSource
from eocausal.imagery.layers import Layer
from eocausal.imagery.spec import ChipSpec, size_field
from eocausal.units import StudyUnits

__all__ = [
    "Candidate",
    "Plan",
    "check_covers_a_pixel",
    "check_layer_holds_chips",
    "layer_label",
    "plan_geo",
    "plan_keyed",
    "select_dates",
]


@dataclass
class Candidate:
    """A layer that can serve a unit: the unit's pixel and the window of each scale."""

    layer: int
    row: int
    col: int
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) per scale


@dataclass
class Plan:
    """What a :class:`~eocausal.imagery.ChipDataset` reads.

    Attributes
    ----------
    band_names : list of str
        Bands to read, as spelled by the source.
    dates : list of str or None
        Dates of the chips' time axis (``[None]`` without one).
    candidates : list
        ``candidates[u][t]``: the :class:`Candidate` layers of unit ``u`` on
        date ``t``, best first (georeferenced sources; empty for keyed ones).
    keyed_sizes : list of (int, int)
        Window (h, w) of each scale (keyed sources; empty for georeferenced ones).
    order_key : ndarray of int64, shape (n_units,)
        Items are units sorted by this key (stable).
    excluded : dict of int -> str
        Units (rows) that cannot be served, with the reason.
    """

    band_names: list[str]
    dates: list[str | None]
    candidates: list[list[list[Candidate]]]
    keyed_sizes: list[tuple[int, int]]
    order_key: np.ndarray
    excluded: dict[int, str]


def select_dates(spec: ChipSpec, source: GeoSource) -> list[str | None]:
    """The dates of the chips' time axis: ``[None]`` (mosaic), the source's, or those asked."""
    if spec.dates is None:
        return [None]
    available = [d for d in source.dates if d is not None]
    if not available:
        raise ConfigError(
            f"config field `imagery.dates` (ChipSpec.dates) is {spec.dates!r} but {source.description} "
            "has no dated layers; remove `imagery.dates`, or use a STAC catalog whose items have dates."
        )
    if spec.dates == "all":
        return list(available)
    missing = [d for d in spec.dates if d not in available]
    if missing:
        raise ConfigError(
            f"config field `imagery.dates` (ChipSpec.dates): dates {missing} are not in "
            f"{source.description}; available dates: {available}."
        )
    return list(spec.dates)


def plan_geo(units: StudyUnits, source: GeoSource, spec: ChipSpec) -> Plan:
    """Plan the reads of point-centred chips from a georeferenced source."""
    band_names = resolve_bands(spec.bands, source.band_names, where=source.description)
    if spec.qa_mask and source.qa_band is None:
        raise ConfigError(
            f"config field `imagery.qa_mask` (ChipSpec(qa_mask=...)) is true but {source.description} "
            f"has no QA_PIXEL band (bands: {source.band_names}); add the QA_PIXEL band or set "
            "`imagery.qa_mask: false`."
        )
    dates = select_dates(spec, source)
    if units.gdf is None:
        raise UnitsError(
            f"{source.description} is georeferenced but the units have no coordinates; give "
            "`study.lon_col` and `study.lat_col` (lon_col=/lat_col= or a geometry), or use pre-cut "
            "chips (`imagery.source: precut`) with `study.image_key_col`."
        )
    n = units.n_units
    ucrs = units.crs
    ux, uy = units.coordinates(ucrs)
    plan: list[list[list[Candidate]]] = [[[] for _ in dates] for _ in range(n)]
    coverage: dict[tuple[int, int], float] = {}
    for li, lyr in enumerate(source.layers):
        slots = [t for t, d in enumerate(dates) if d is None or d == lyr.date]
        if not slots:
            continue
        row, col = source.pixel_coords(li, ux, uy, ucrs)
        inside = (row >= 0) & (row < lyr.height) & (col >= 0) & (col < lyr.width)
        idx = np.flatnonzero(inside)
        if not idx.size:
            continue
        r = np.floor(row[idx]).astype(np.int64)
        c = np.floor(col[idx]).astype(np.int64)
        sizes = []
        for k, s in enumerate(spec.scales):
            if s.size_px is not None:
                sizes.append((np.full(idx.size, s.size_px), np.full(idx.size, s.size_px)))
                continue
            eh, ew = km_window_extent(lyr, row[idx], col[idx], s.size_km)
            check_covers_a_pixel(spec, k, min(eh.min(), ew.min()), layer_label(lyr))
            sizes.append(
                (
                    np.maximum(1, np.round(eh)).astype(np.int64),
                    np.maximum(1, np.round(ew)).astype(np.int64),
                )
            )
        check_layer_holds_chips(spec, lyr, sizes)
        H = np.max([h for h, _ in sizes], axis=0)
        W = np.max([w for _, w in sizes], axis=0)
        r0, c0 = window_origin(r, c, H, W)
        cov_r = np.clip(np.minimum(r0 + H, lyr.height) - np.maximum(r0, 0), 0, None)
        cov_c = np.clip(np.minimum(c0 + W, lyr.width) - np.maximum(c0, 0), 0, None)
        cov = cov_r * cov_c / (H * W)
        for k, u in enumerate(idx):
            cand = Candidate(li, int(r[k]), int(c[k]), [(int(h[k]), int(w[k])) for h, w in sizes])
            coverage[(int(u), li)] = float(cov[k])
            for t in slots:
                plan[u][t].append(cand)
    first_layer = np.full(n, -1, dtype=np.int64)
    block_rc = np.zeros((2, n), dtype=np.int64)
    for u in range(n):
        for t in range(len(dates)):
            plan[u][t].sort(key=lambda cd, u=u: -coverage[(u, cd.layer)])
        first = next((cands[0] for cands in plan[u] if cands), None)
        if first is not None:
            bh, bw = source.layers[first.layer].block
            first_layer[u] = first.layer
            block_rc[:, u] = first.row // bh, first.col // bw
    # item order: by file, then Z-order of the block holding the unit's pixel
    order_key = (first_layer << 42) | morton_key(block_rc[0], block_rc[1])
    outside = np.flatnonzero(first_layer < 0)
    excluded = dict(
        zip(
            outside.tolist(),
            outside_reasons(source, ux[outside], uy[outside], ucrs, dates),
            strict=True,
        )
    )
    if len(excluded) == n and ucrs.is_geographic:
        swapped = sum("lon/lat look swapped" in r for r in excluded.values())
        if swapped >= max(1, n // 2):
            raise UnitsError(
                f"None of the {n} units lies on {source.description}, but {swapped} would with "
                "longitude and latitude exchanged: the lon/lat columns look swapped. "
                "Exchange `study.lon_col` and `study.lat_col` (lon_col=/lat_col=)."
            )
    return Plan(band_names, dates, plan, [], order_key, excluded)


def outside_reasons(
    source: GeoSource, x: np.ndarray, y: np.ndarray, crs: Any, dates: list[str | None]
) -> list[str]:
    """Why each point is outside; says so when exchanging lon and lat would put it inside."""
    on_dates = f" on dates {dates}" if dates != [None] else ""
    reasons = [
        f"outside all imagery: point ({a:.6g}, {b:.6g}) in {crs.to_string()} is not covered "
        f"by {source.description}{on_dates}"
        for a, b in zip(x, y, strict=True)
    ]
    if not crs.is_geographic or not len(x):
        return reasons
    hint = np.full(len(x), "", dtype=object)
    can_swap = np.abs(x) <= 90
    for li, lyr in enumerate(source.layers):
        row, col = source.pixel_coords(li, y, np.where(can_swap, x, 0.0), crs)
        hit = (
            can_swap
            & (hint == "")
            & (row >= 0)
            & (row < lyr.height)
            & (col >= 0)
            & (col < lyr.width)
        )
        hint[hit] = f"; with lon/lat exchanged it falls in {lyr.name}: lon/lat look swapped"
    return [r + h for r, h in zip(reasons, hint, strict=True)]


def plan_keyed(units: StudyUnits, source: KeyedSource, spec: ChipSpec) -> Plan:
    """Plan the reads of pre-cut chips looked up by the units' image keys."""
    if spec.dates is not None:
        raise ConfigError(
            f"config field `imagery.dates` (ChipSpec.dates) is {spec.dates!r} but {source.description} "
            "has no dates; remove `imagery.dates`, or use a georeferenced source (a STAC catalog)."
        )
    if units.image_key is None:
        raise UnitsError(
            f"{source.description} serves chips by image key but the units have none; set "
            "`study.image_key_col` (image_key_col= of StudyUnits.from_frame/read)."
        )
    excluded: dict[int, str] = {}
    has = source.has(units.image_key)
    for u in np.flatnonzero(~has):
        excluded[int(u)] = (
            f"image key {str(units.image_key[u])!r} not found in {source.description}"
        )
    if not source.band_names and has.any():  # a callable: learn the bands from one call
        source.get(units.image_key[np.flatnonzero(has)[:1]])
    band_names = resolve_bands(spec.bands, source.band_names, where=source.description)
    if spec.qa_mask and find_qa_band(source.band_names) is None:
        raise ConfigError(
            f"config field `imagery.qa_mask` (ChipSpec(qa_mask=...)) is true but {source.description} "
            f"has no QA_PIXEL band (bands: {source.band_names}); set `imagery.qa_mask: false`."
        )
    sizes = []
    for k, s in enumerate(spec.scales):
        if s.size_px is not None:
            sizes.append((s.size_px, s.size_px))
        else:
            if not source.pixel_size_m:
                raise ConfigError(
                    f"{size_field(k, s)} is in km but {source.description} has no pixel size; "
                    "give the scale in pixels (`size_px`), or pass pixel_size_m= to the source."
                )
            extent = s.size_km * 1000.0 / source.pixel_size_m
            check_covers_a_pixel(spec, k, extent, source.description)
            px = max(1, round(extent))
            sizes.append((px, px))
    return Plan(band_names, [None], [], sizes, np.arange(units.n_units, dtype=np.int64), excluded)


def layer_label(layer: Layer) -> str:
    """How messages name a layer: the file of a raster, the item of a STAC catalog."""
    if layer.paths == [layer.name]:
        return f"imagery file {layer.name}"
    return f"STAC item {layer.name!r}"


def check_covers_a_pixel(spec: ChipSpec, k: int, extent_px: float, where: str) -> None:
    """Reject a scale in kilometres that is narrower than one pixel of the imagery.

    Parameters
    ----------
    spec : ChipSpec
    k : int
        Index of the scale (given in ``size_km``).
    extent_px : float
        Its smallest height or width in pixels of the imagery, not rounded.
    where : str
        The imagery, named in the message.

    Raises
    ------
    ConfigError
        When ``extent_px < 1``: the chip would be one upsampled pixel. The
        message gives the size in pixels and the smallest ``size_km`` that
        covers one pixel, ``size_km / extent_px``.
    """
    if extent_px >= 1.0:
        return
    s = spec.scales[k]
    raise ConfigError(
        f"{size_field(k, s)} covers only {extent_px:.3g} pixels of {where}, less than one pixel: "
        f"its chips would be one upsampled pixel. Set `size_km` to at least "
        f"{s.size_km / extent_px:.4g} (one pixel), or give the scale in pixels (`size_px`)."
    )


def check_layer_holds_chips(
    spec: ChipSpec, layer: Layer, sizes: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Reject a raster of 1 x 1 pixels, or one smaller in both dimensions than a scale's window.

    Parameters
    ----------
    spec : ChipSpec
    layer : Layer
        A layer that holds units.
    sizes : list of (ndarray, ndarray)
        Window heights and widths (pixels) of each scale for the units in ``layer``.

    Raises
    ------
    ImageryError
        Naming the file, its size and the scale that needs more pixels.
    """
    label = layer_label(layer)
    if layer.height == 1 and layer.width == 1:
        raise ImageryError(
            f"{label} is 1 x 1 pixel: every chip cut from it would hold one value, whatever the scale. "
            "Use imagery with more pixels than the largest chip (`imagery.paths`)."
        )
    for k in np.argsort([-int(h.min()) * int(w.min()) for h, w in sizes], kind="stable"):
        h, w = int(sizes[k][0].min()), int(sizes[k][1].min())
        if h > layer.height and w > layer.width:
            raise ImageryError(
                f"{label} is {layer.height} x {layer.width} pixels, smaller in both dimensions than "
                f"the {h} x {w} pixel window of {size_field(int(k), spec.scales[k])}: its chips would "
                "be mostly padding. Use larger imagery (e.g. a mosaic of neighbouring files, "
                f"gdalbuildvrt), or a scale of at most {max(layer.height, layer.width)} pixels."
            )
