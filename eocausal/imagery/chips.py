"""Chip specification and the streaming chip reader.

:class:`ChipSpec` says what to cut around each unit (scales in pixels or
kilometres, output size, bands, scaling recipe, dates, masking), and
:class:`ChipDataset` cuts it: a map-style ``torch.utils.data.Dataset`` whose
items are dictionaries of float32 tensors that the default collate batches.

Geometry conventions
--------------------
The unit's point falls in pixel ``(r, c) = (floor(row), floor(col))`` of the
layer it is read from. A window of ``h x w`` pixels starts at
``(r - h // 2, c - w // 2)``, so the unit's pixel sits at index
``(h // 2, w // 2)`` of the window (for odd sizes, the exact centre).
Windows that leave the imagery are padded, never shifted: the padding is
invalid in the mask. Every scale of a unit is centred on the same pixel; the
largest window is read once and the smaller ones are cropped from it.

Resampling to ``out_px``
------------------------
Separable, per axis: exact area averaging when shrinking (output pixel ``i``
averages input pixels over ``[i s, (i + 1) s)``, ``s = n_in / n_out``,
partial pixels weighted by overlap), bilinear interpolation with
half-pixel centres when enlarging (``x = (i + 0.5) / s' - 0.5`` clamped to
the edge; equal to ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)``). Invalid pixels get no weight: each output is the
weighted mean of valid inputs, and is valid when valid inputs carry at least
half of its weight.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import KW_ONLY, asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from affine import Affine

from eocausal.errors import ChipReadError, ConfigError, ExclusionWarning, UnitsError
from eocausal.imagery.bands import (
    RECIPES,
    apply_recipe,
    find_qa_band,
    qa_pixel_invalid,
    resolve_bands,
)
from eocausal.imagery.sources import GeoSource, KeyedSource, pad_window
from eocausal.units import StudyUnits

__all__ = ["ChipDataset", "ChipSpec", "Scale", "resample", "resample_weights"]


@dataclass(frozen=True)
class Scale:
    """One chip scale.

    Parameters
    ----------
    name : str
        Scale name (keys of the item dictionaries and of the embeddings).
    size_px : int, optional
        Window size in source pixels.
    size_km : float, optional
        Window size in kilometres (exactly one of ``size_px``/``size_km``).
    out_px : int
        Output chip size in pixels (square).
    """

    name: str
    _: KW_ONLY
    size_px: int | None = None
    size_km: float | None = None
    out_px: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"Scale name must be a non-empty string, got {self.name!r}.")
        if (self.size_px is None) == (self.size_km is None):
            raise ConfigError(
                f"Scale {self.name!r}: give exactly one of size_px or size_km "
                f"(got size_px={self.size_px!r}, size_km={self.size_km!r})."
            )
        if self.size_px is not None and (int(self.size_px) != self.size_px or self.size_px < 1):
            raise ConfigError(
                f"Scale {self.name!r}: size_px must be a positive integer, got {self.size_px!r}."
            )
        if self.size_km is not None and not (math.isfinite(self.size_km) and self.size_km > 0):
            raise ConfigError(
                f"Scale {self.name!r}: size_km must be positive, got {self.size_km!r}."
            )
        if int(self.out_px) != self.out_px or self.out_px < 1:
            raise ConfigError(
                f"Scale {self.name!r}: out_px must be a positive integer, got {self.out_px!r}."
            )


@dataclass(frozen=True)
class ChipSpec:
    """What to cut around each unit.

    Parameters
    ----------
    scales : list of Scale
        Distinct names.
    bands : list of str, optional
        Band names to keep, in order (default: every band but a QA band).
    recipe : str, default="none"
        Scaling recipe of :mod:`eocausal.imagery.bands` ("none", "c2_sr",
        "ssl4eo_l_sr_uint8", "ssl4eo_l_toa_uint8").
    dates : list of str or "all", optional
        ISO dates of a time series (chips of shape (T, C, H, W)); "all" takes
        every date of the source. None mosaics all layers without a time axis.
    min_valid_fraction : float, default=0.5
        Units with a smaller fraction of valid pixels at any scale (averaged
        over dates) are excluded, with the reason recorded.
    qa_mask : bool, default=False
        Mask Landsat QA_PIXEL fill, dilated cloud, cloud and cloud shadow.
    """

    scales: list[Scale]
    _: KW_ONLY
    bands: list[str] | None = None
    recipe: str = "none"
    dates: list[str] | str | None = None
    min_valid_fraction: float = 0.5
    qa_mask: bool = False

    def __post_init__(self) -> None:
        scales = list(self.scales)
        if not scales or not all(isinstance(s, Scale) for s in scales):
            raise ConfigError("ChipSpec.scales must be a non-empty list of Scale objects.")
        names = [s.name for s in scales]
        if len(set(names)) != len(names):
            raise ConfigError(f"ChipSpec.scales has duplicate names: {names}.")
        object.__setattr__(self, "scales", scales)
        if self.recipe not in RECIPES:
            raise ConfigError(f"Unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}.")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ConfigError(
                f"min_valid_fraction must lie in [0, 1], got {self.min_valid_fraction!r}."
            )
        if isinstance(self.dates, str) and self.dates != "all":
            raise ConfigError(
                f"ChipSpec.dates must be a list of ISO dates or 'all', got {self.dates!r}."
            )
        if self.dates is not None and not isinstance(self.dates, str):
            object.__setattr__(self, "dates", [str(d) for d in self.dates])
        if self.bands is not None:
            object.__setattr__(self, "bands", [str(b) for b in self.bands])

    @property
    def scale_names(self) -> list[str]:
        return [s.name for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (recorded in embeddings metadata)."""
        d = asdict(self)
        d.pop("_", None)
        for s in d["scales"]:
            s.pop("_", None)
        return d


# ---------------------------------------------------------------- resampling
def resample_weights(n_in: int, n_out: int) -> np.ndarray:
    """Per-axis resampling matrix.

    Parameters
    ----------
    n_in, n_out : int

    Returns
    -------
    ndarray of float64, shape (n_out, n_in)
        Rows sum to 1. Area weights when ``n_out < n_in``, bilinear
        (half-pixel centres, edge-clamped) when ``n_out > n_in``, identity
        when equal.
    """
    if n_in == n_out:
        return np.eye(n_in)
    M = np.zeros((n_out, n_in))
    if n_out < n_in:
        s = n_in / n_out
        for i in range(n_out):
            a, b = i * s, (i + 1) * s
            j0, j1 = math.floor(a), min(math.ceil(b), n_in)
            for j in range(j0, j1):
                M[i, j] = max(0.0, min(b, j + 1) - max(a, j))
            M[i] /= s
        return M
    scale = n_in / n_out
    for i in range(n_out):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        j0 = min(math.floor(x), n_in - 1)
        j1 = min(j0 + 1, n_in - 1)
        f = x - j0
        M[i, j0] += 1.0 - f
        M[i, j1] += f
    return M


@functools.lru_cache(maxsize=256)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse form of :func:`resample_weights`: indices and weights, each of shape (n_out, K)."""
    M = resample_weights(n_in, n_out)
    K = int(max(1, (M > 0).sum(axis=1).max()))
    idx = np.zeros((n_out, K), dtype=np.int64)
    wts = np.zeros((n_out, K))
    for i in range(n_out):
        nz = np.flatnonzero(M[i])
        idx[i, : nz.size], wts[i, : nz.size] = nz, M[i, nz]
    return idx, wts


def _along_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, wts = _taps(x.shape[-2], n_out)
    return np.einsum("...okw,ok->...ow", x[..., idx, :], wts.astype(x.dtype))


def _along_cols(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, wts = _taps(x.shape[-1], n_out)
    return np.einsum("...hok,ok->...ho", x[..., idx], wts.astype(x.dtype))


def resample(
    values: np.ndarray, valid: np.ndarray, out_h: int, out_w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample chips with a validity mask (see the module notes).

    Parameters
    ----------
    values : ndarray of shape (..., C, h, w)
    valid : ndarray of bool, shape (..., h, w)
    out_h, out_w : int

    Returns
    -------
    values : ndarray of float32, shape (..., C, out_h, out_w)
        Zero where invalid.
    valid : ndarray of bool, shape (..., out_h, out_w)

    Notes
    -----
    With per-axis weight matrices :math:`M_y, M_x` (:func:`resample_weights`)
    and mask :math:`m`, the output is
    :math:`(M_y (x m) M_x^T) / (M_y m M_x^T)`, valid where the denominator
    is at least 0.5. The matrices are applied as sparse taps (no BLAS call,
    which oversubscribes threads inside data-loader workers).
    """
    h, w = values.shape[-2:]
    if (h, w) == (out_h, out_w):
        out = np.where(valid[..., None, :, :], values, 0).astype(np.float32)
        return out, valid.copy()
    if valid.all():  # the common case: no weights to renormalise
        out = _along_cols(_along_rows(values.astype(np.float32, copy=False), out_h), out_w)
        return out.astype(np.float32, copy=False), np.ones(valid.shape[:-2] + (out_h, out_w), bool)
    m = valid.astype(np.float32)
    x = np.where(valid[..., None, :, :], values, 0).astype(np.float32)
    num = _along_cols(_along_rows(x, out_h), out_w)
    den = _along_cols(_along_rows(m, out_h), out_w)
    out_valid = den >= 0.5 - 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(
            out_valid[..., None, :, :], num / np.where(den > 0, den, 1.0)[..., None, :, :], 0.0
        )
    return out.astype(np.float32, copy=False), out_valid


def _centre_crop(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """The ``h x w`` window of ``array`` (..., H, W) that shares its centre pixel ``(H // 2, W // 2)``."""
    H, W = array.shape[-2:]
    r0, c0 = H // 2 - h // 2, W // 2 - w // 2
    return array[..., r0 : r0 + h, c0 : c0 + w]


def _morton(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Interleave the bits of non-negative block rows and columns (Z-order key)."""
    key = np.zeros(len(r), dtype=np.int64)
    r = np.clip(r, 0, 2**20 - 1).astype(np.int64)
    c = np.clip(c, 0, 2**20 - 1).astype(np.int64)
    for bit in range(20):
        key |= ((r >> bit) & 1) << (2 * bit + 1)
        key |= ((c >> bit) & 1) << (2 * bit)
    return key


def _status_only(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Collate to (unit_id, reason) pairs; reason is empty for kept units."""
    return [(it["unit_id"], it["reason"] if it["excluded"] else "") for it in items]


@dataclass
class _Candidate:
    layer: int
    row: int
    col: int
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (h, w) per scale


class ChipDataset(torch.utils.data.Dataset):
    """Point-centred multi-scale chips of study units, streamed item by item.

    Parameters
    ----------
    units : StudyUnits
        Points (for georeferenced sources) or ``image_key`` (for keyed sources).
    source : GeoSource or KeyedSource
        :class:`~eocausal.imagery.sources.RasterSource`,
        :class:`~eocausal.imagery.sources.StacSource`,
        :class:`~eocausal.imagery.sources.PrecutChipSource` or
        :class:`~eocausal.imagery.sources.CallableSource`.
    spec : ChipSpec
    cache : ChipCache, optional
        On-disk cache of finished items (:mod:`eocausal.imagery.cache`).

    Attributes
    ----------
    unit_ids : ndarray of str, shape (len(dataset),)
        Units in item order (grouped by file and block).
    exclusions : DataFrame with columns unit_id, reason
        Units excluded before any read (outside all imagery, unknown image
        key). Read-time exclusions arrive as items with ``excluded=True``.
    band_names : list of str
    spec, units, source

    Notes
    -----
    ``dataset[i]`` is a dict ``{"unit_id": str, "index": int (row in units),
    "chips": {scale: float32 tensor (C, out, out) or (T, C, out, out)},
    "masks": {scale: bool tensor (out, out) or (T, out, out)},
    "valid_fraction": {scale: float32 scalar tensor}, "excluded": bool,
    "reason": str}``. Excluded items carry zero chips of the right shape.
    :meth:`chip_info` gives each chip's source, window and transform.
    """

    def __init__(
        self,
        units: StudyUnits,
        source: GeoSource | KeyedSource,
        spec: ChipSpec,
        *,
        cache: Any = None,
    ):
        if not isinstance(units, StudyUnits):
            raise UnitsError(
                f"ChipDataset needs StudyUnits, got {type(units).__name__}; use StudyUnits.from_frame."
            )
        if not isinstance(spec, ChipSpec):
            raise ConfigError(f"ChipDataset needs a ChipSpec, got {type(spec).__name__}.")
        self.units = units
        self.source = source
        self.spec = spec
        self.cache = cache
        excluded: dict[int, str] = {}
        if isinstance(source, GeoSource):
            self._keyed = False
            self.band_names = resolve_bands(spec.bands, source.band_names, where=source.description)
            if spec.qa_mask and source.qa_band is None:
                raise ConfigError(
                    f"qa_mask=True but {source.description} has no QA_PIXEL band (bands: {source.band_names}). "
                    "Add the QA_PIXEL band or set ChipSpec(qa_mask=False)."
                )
            self._dates = self._select_dates(source)
            self._plan, order_key = self._plan_geo(excluded)
        elif isinstance(source, KeyedSource):
            self._keyed = True
            self._dates = [None]
            if spec.dates is not None:
                raise ConfigError(
                    "ChipSpec.dates needs a georeferenced source (RasterSource, StacSource)."
                )
            self._plan, order_key = self._plan_keyed(excluded)
        else:
            raise ConfigError(f"Unknown imagery source type {type(source).__name__}.")
        keep = np.array([i for i in range(units.n_units) if i not in excluded], dtype=np.int64)
        self._order = keep[np.argsort(order_key[keep], kind="stable")] if keep.size else keep
        self.unit_ids = units.unit_id[self._order]
        ex_idx = sorted(excluded)
        self.exclusions = pd.DataFrame(
            {"unit_id": units.unit_id[ex_idx].astype(str), "reason": [excluded[i] for i in ex_idx]},
            columns=["unit_id", "reason"],
        )
        if ex_idx:
            import warnings

            warnings.warn(
                f"{len(ex_idx)} of {units.n_units} units excluded before reading (see dataset.exclusions), "
                f"e.g. {self.exclusions.unit_id.iloc[0]!r}: {self.exclusions.reason.iloc[0]}",
                ExclusionWarning,
                stacklevel=2,
            )
        if not self._order.size:
            raise UnitsError(
                f"No unit can be cut from {source.description}: all {units.n_units} units were excluded, e.g. "
                f"{self.exclusions.unit_id.iloc[0]!r}: {self.exclusions.reason.iloc[0]}"
            )

    # ------------------------------------------------------------ planning
    def _select_dates(self, source: GeoSource) -> list[str | None]:
        if self.spec.dates is None:
            return [None]
        available = [d for d in source.dates if d is not None]
        if not available:
            raise ConfigError(
                f"ChipSpec.dates is set but {source.description} has no dated layers."
            )
        if self.spec.dates == "all":
            return list(available)
        missing = [d for d in self.spec.dates if d not in available]
        if missing:
            raise ConfigError(
                f"Dates {missing} not in {source.description}; available dates: {available}."
            )
        return list(self.spec.dates)

    def _plan_geo(
        self, excluded: dict[int, str]
    ) -> tuple[list[list[list[_Candidate]]], np.ndarray]:
        src: GeoSource = self.source  # type: ignore[assignment]
        units = self.units
        if units.gdf is None:
            raise UnitsError(
                f"{src.description} is georeferenced but the units have no coordinates; give lon/lat "
                "(or geometry) or use a PrecutChipSource with image_key."
            )
        n = units.n_units
        ucrs = units.crs
        ux, uy = units.coordinates(ucrs)
        plan: list[list[list[_Candidate]]] = [[[] for _ in self._dates] for _ in range(n)]
        coverage: dict[tuple[int, int], float] = {}
        for li, lyr in enumerate(src.layers):
            slots = [t for t, d in enumerate(self._dates) if d is None or d == lyr.date]
            if not slots:
                continue
            row, col = src.pixel_coords(li, ux, uy, ucrs)
            inside = (row >= 0) & (row < lyr.height) & (col >= 0) & (col < lyr.width)
            idx = np.flatnonzero(inside)
            if not idx.size:
                continue
            r = np.floor(row[idx]).astype(np.int64)
            c = np.floor(col[idx]).astype(np.int64)
            sizes = []
            for s in self.spec.scales:
                if s.size_px is not None:
                    sizes.append((np.full(idx.size, s.size_px), np.full(idx.size, s.size_px)))
                else:
                    sizes.append(src.window_px_for_km(li, row[idx], col[idx], s.size_km))
            H = np.max([h for h, _ in sizes], axis=0)
            W = np.max([w for _, w in sizes], axis=0)
            r0, c0 = r - H // 2, c - W // 2
            cov_r = np.clip(np.minimum(r0 + H, lyr.height) - np.maximum(r0, 0), 0, None)
            cov_c = np.clip(np.minimum(c0 + W, lyr.width) - np.maximum(c0, 0), 0, None)
            cov = cov_r * cov_c / (H * W)
            for k, u in enumerate(idx):
                cand = _Candidate(
                    li, int(r[k]), int(c[k]), [(int(h[k]), int(w[k])) for h, w in sizes]
                )
                coverage[(int(u), li)] = float(cov[k])
                for t in slots:
                    plan[u][t].append(cand)
        first_layer = np.full(n, -1, dtype=np.int64)
        block_rc = np.zeros((2, n), dtype=np.int64)
        for u in range(n):
            for t in range(len(self._dates)):
                plan[u][t].sort(key=lambda cd, u=u: -coverage[(u, cd.layer)])
            first = next((cands[0] for cands in plan[u] if cands), None)
            if first is not None:
                bh, bw = src.layers[first.layer].block
                first_layer[u] = first.layer
                block_rc[:, u] = first.row // bh, first.col // bw
        # item order: by file, then Z-order of the block holding the unit's pixel
        order_key = (first_layer << 42) | _morton(block_rc[0], block_rc[1])
        outside = np.flatnonzero(first_layer < 0)
        excluded.update(
            zip(
                outside.tolist(), self._outside_reasons(ux[outside], uy[outside], ucrs), strict=True
            )
        )
        if len(excluded) == n and ucrs.is_geographic:
            swapped = sum("lon/lat look swapped" in r for r in excluded.values())
            if swapped >= max(1, n // 2):
                raise UnitsError(
                    f"None of the {n} units lies on {src.description}, but {swapped} would with "
                    "longitude and latitude exchanged: the lon/lat columns look swapped. "
                    "Fix lon_col/lat_col."
                )
        return plan, order_key

    def _outside_reasons(self, x: np.ndarray, y: np.ndarray, crs: Any) -> list[str]:
        """Why each point is outside; says so when exchanging lon and lat would put it inside."""
        src: GeoSource = self.source  # type: ignore[assignment]
        on_dates = f" on dates {self._dates}" if self._dates != [None] else ""
        reasons = [
            f"outside all imagery: point ({a:.6g}, {b:.6g}) in {crs.to_string()} is not covered "
            f"by {src.description}{on_dates}"
            for a, b in zip(x, y, strict=True)
        ]
        if not crs.is_geographic or not len(x):
            return reasons
        hint = np.full(len(x), "", dtype=object)
        can_swap = np.abs(x) <= 90
        for li, lyr in enumerate(src.layers):
            row, col = src.pixel_coords(li, y, np.where(can_swap, x, 0.0), crs)
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

    def _plan_keyed(self, excluded: dict[int, str]) -> tuple[list[Any], np.ndarray]:
        src: KeyedSource = self.source  # type: ignore[assignment]
        units = self.units
        if units.image_key is None:
            raise UnitsError(
                f"{src.description} serves chips by image key but the units have none; pass image_key_col= "
                "to StudyUnits.from_frame/read."
            )
        has = src.has(units.image_key)
        for u in np.flatnonzero(~has):
            excluded[int(u)] = (
                f"image key {str(units.image_key[u])!r} not found in {src.description}"
            )
        if not src.band_names and has.any():  # a callable: learn the bands from one call
            src.get(units.image_key[np.flatnonzero(has)[:1]])
        self.band_names = resolve_bands(self.spec.bands, src.band_names, where=src.description)
        if self.spec.qa_mask and find_qa_band(src.band_names) is None:
            raise ConfigError(
                f"qa_mask=True but {src.description} has no QA_PIXEL band (bands: {src.band_names})."
            )
        sizes = []
        for s in self.spec.scales:
            if s.size_px is not None:
                sizes.append((s.size_px, s.size_px))
            else:
                if not src.pixel_size_m:
                    raise ConfigError(
                        f"Scale {s.name!r} is given in km but {src.description} has no pixel size; "
                        "pass pixel_size_m= to the source or give size_px."
                    )
                px = max(1, round(s.size_km * 1000.0 / src.pixel_size_m))
                sizes.append((px, px))
        self._keyed_sizes = sizes
        return [], np.arange(units.n_units, dtype=np.int64)

    # ------------------------------------------------------------ items
    def __len__(self) -> int:
        return int(self._order.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.cache is not None:
            hit = self.cache.get(self, i)
            if hit is not None:
                return hit
        item, _ = self._load(i, with_info=False)
        if self.cache is not None:
            self.cache.put(self, i, item)
        return item

    def chip_info(self, i: int) -> dict[str, Any]:
        """Where item ``i``'s chips come from (reads the item to be exact).

        Returns
        -------
        dict
            ``{"unit_id", "index", "excluded", "reason", "scales": {scale:
            [{"source", "date", "crs", "window": (row_off, col_off, h, w),
            "transform": 6 affine coefficients of the output chip,
            "valid_fraction"} per date]}}``.
        """
        item, info = self._load(i, with_info=True)
        return {
            "unit_id": item["unit_id"],
            "index": item["index"],
            "excluded": item["excluded"],
            "reason": item["reason"],
            "scales": info,
        }

    def _empty(self, u: int, reason: str) -> dict[str, Any]:
        T = len(self._dates)
        C = len(self.band_names)
        chips, masks, vf = {}, {}, {}
        for s in self.spec.scales:
            shape = (
                (C, s.out_px, s.out_px) if self.spec.dates is None else (T, C, s.out_px, s.out_px)
            )
            chips[s.name] = torch.zeros(shape, dtype=torch.float32)
            masks[s.name] = torch.zeros(shape[:-3] + shape[-2:], dtype=torch.bool)
            vf[s.name] = torch.tensor(0.0, dtype=torch.float32)
        return {
            "unit_id": str(self.units.unit_id[u]),
            "index": int(u),
            "chips": chips,
            "masks": masks,
            "valid_fraction": vf,
            "excluded": True,
            "reason": reason,
        }

    def _load(
        self, i: int, *, with_info: bool
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a ChipDataset of {len(self)} units")
        u = int(self._order[i])
        if self._keyed:
            return self._load_keyed(u)
        return self._load_geo(u, with_info=with_info)

    def _finish(
        self,
        u: int,
        per_date: list[tuple[np.ndarray, np.ndarray] | None],
        sizes: list[list[tuple[int, int]] | None],
    ) -> dict[str, Any]:
        """Scale, crop and resample the big windows of each date; decide exclusion."""
        spec = self.spec
        T = len(per_date)
        C = len(self.band_names)
        chips, masks, vf = {}, {}, {}
        reasons = []
        for k, s in enumerate(spec.scales):
            vals = np.zeros((T, C, s.out_px, s.out_px), dtype=np.float32)
            msk = np.zeros((T, s.out_px, s.out_px), dtype=bool)
            fracs = []
            for t, got in enumerate(per_date):
                if got is None:
                    fracs.append(0.0)
                    continue
                big, big_valid = got
                h, w = sizes[t][k]
                crop, cv = _centre_crop(big, h, w), _centre_crop(big_valid, h, w)
                fracs.append(float(cv.mean()))
                vals[t], msk[t] = resample(crop, cv, s.out_px, s.out_px)
            frac = float(np.mean(fracs))
            if frac < spec.min_valid_fraction:
                reasons.append(
                    f"valid fraction {frac:.3f} < min_valid_fraction {spec.min_valid_fraction} at scale {s.name!r}"
                )
            if spec.dates is None:
                vals, msk = vals[0], msk[0]
            chips[s.name] = torch.from_numpy(vals)
            masks[s.name] = torch.from_numpy(msk)
            vf[s.name] = torch.tensor(frac, dtype=torch.float32)
        excluded = bool(reasons)
        if excluded:
            for s in spec.scales:
                chips[s.name].zero_()
                masks[s.name].zero_()
        item = {
            "unit_id": str(self.units.unit_id[u]),
            "index": int(u),
            "chips": chips,
            "masks": masks,
            "valid_fraction": vf,
            "excluded": excluded,
            "reason": "; ".join(reasons),
        }
        return item

    def _scaled(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = apply_recipe(values, self.spec.recipe, self.band_names)
        out[:, ~valid] = 0.0
        return out

    def _load_geo(
        self, u: int, *, with_info: bool
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        src: GeoSource = self.source  # type: ignore[assignment]
        spec = self.spec
        per_date: list[tuple[np.ndarray, np.ndarray] | None] = []
        used: list[_Candidate | None] = []
        errors: list[str] = []
        for t, cands in enumerate(self._plan[u]):
            best, best_score, best_cand = None, -1.0, None
            for cand in cands:
                H = max(h for h, _ in cand.sizes)
                W = max(w for _, w in cand.sizes)
                try:
                    values, valid = src.read(
                        cand.layer,
                        self.band_names,
                        cand.row - H // 2,
                        cand.col - W // 2,
                        H,
                        W,
                        qa_mask=spec.qa_mask,
                    )
                except ChipReadError as exc:
                    errors.append(str(exc))
                    continue
                score = min(float(_centre_crop(valid, h, w).mean()) for h, w in cand.sizes)
                if score > best_score:
                    best, best_score, best_cand = (self._scaled(values, valid), valid), score, cand
                if score >= spec.min_valid_fraction:
                    break
            per_date.append(best)
            used.append(best_cand)
        if all(p is None for p in per_date) and errors:
            return self._empty(u, "unreadable imagery: " + errors[0]), {}
        sizes = [None if c is None else c.sizes for c in used]
        item = self._finish(u, per_date, sizes)
        if errors and item["excluded"]:
            item["reason"] += "; unreadable imagery: " + errors[0]
        info: dict[str, list[dict[str, Any]]] = {}
        for k, s in enumerate(spec.scales if with_info else []):
            entries = []
            for t, cand in enumerate(used):
                if cand is None:
                    entries.append(
                        {
                            "source": None,
                            "date": self._dates[t],
                            "crs": None,
                            "window": None,
                            "transform": None,
                            "valid_fraction": 0.0,
                        }
                    )
                    continue
                lyr = src.layers[cand.layer]
                h, w = cand.sizes[k]
                r0, c0 = cand.row - h // 2, cand.col - w // 2
                tr = (
                    lyr.affine
                    @ Affine.translation(c0, r0)
                    @ Affine.scale(w / s.out_px, h / s.out_px)
                )
                entries.append(
                    {
                        "source": lyr.name,
                        "date": lyr.date,
                        "crs": lyr.crs.to_string(),
                        "window": (int(r0), int(c0), int(h), int(w)),
                        "transform": tuple(tr)[:6],
                        "valid_fraction": float(_centre_crop(per_date[t][1], h, w).mean()),
                    }
                )
            info[s.name] = entries
        return item, info

    def _load_keyed(self, u: int) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        src: KeyedSource = self.source  # type: ignore[assignment]
        key = self.units.image_key[u]
        try:
            values, valid = src.get(np.asarray([key]))
        except (OSError, KeyError, ValueError) as exc:
            return self._empty(
                u, f"unreadable chip for image key {str(key)!r} from {src.description}: {exc}"
            ), {}
        values, valid = values[0], valid[0]
        pos = [src.band_names.index(b) for b in self.band_names]
        if self.spec.qa_mask:
            qa = find_qa_band(src.band_names)
            valid = valid & ~qa_pixel_invalid(values[src.band_names.index(qa)])
        values = values[pos].astype(np.float32)
        Hc, Wc = valid.shape
        H = max(max(h for h, _ in self._keyed_sizes), Hc)
        W = max(max(w for _, w in self._keyed_sizes), Wc)
        r0, c0 = Hc // 2 - H // 2, Wc // 2 - W // 2
        big, inside = pad_window(values, r0, c0, H, W)
        big_valid, _ = pad_window(valid, r0, c0, H, W)
        big_valid &= inside
        item = self._finish(u, [(self._scaled(big, big_valid), big_valid)], [self._keyed_sizes])
        info = {
            s.name: [
                {
                    "source": f"image key {str(key)!r}",
                    "date": None,
                    "crs": None,
                    "window": (Hc // 2 - h // 2, Wc // 2 - w // 2, h, w),
                    "transform": None,
                    "valid_fraction": float(item["valid_fraction"][s.name]),
                }
            ]
            for s, (h, w) in zip(self.spec.scales, self._keyed_sizes, strict=True)
        }
        return item, info

    def scan_exclusions(self, *, num_workers: int = 0, batch_size: int = 64) -> pd.DataFrame:
        """Read every unit once and return all exclusions, before and at read time.

        Parameters
        ----------
        num_workers : int, default=0
            DataLoader worker processes.
        batch_size : int, default=64

        Returns
        -------
        DataFrame with columns unit_id, reason
            :attr:`exclusions` followed by the units excluded at read time
            (valid fraction below the threshold, unreadable files), in item order.
        """
        loader = torch.utils.data.DataLoader(
            self, batch_size=batch_size, num_workers=num_workers, collate_fn=_status_only
        )
        rows = [r for batch in loader for r in batch if r[1]]
        read_time = pd.DataFrame(rows, columns=["unit_id", "reason"])
        return pd.concat([self.exclusions, read_time], ignore_index=True)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary: spec, bands, counts, source."""
        return json.loads(
            json.dumps(
                {
                    "spec": self.spec.to_dict(),
                    "band_names": self.band_names,
                    "n_units": self.units.n_units,
                    "n_items": len(self),
                    "n_excluded_before_read": len(self.exclusions),
                    "source": repr(self.source),
                    "dates": self._dates,
                }
            )
        )
