"""The streaming chip reader: :class:`ChipDataset`.

A map-style ``torch.utils.data.Dataset`` whose items are dictionaries of
float32 tensors that the default collate batches. The reads are planned once
(:mod:`eocausal.imagery.plan`); each item reads the largest window of its
unit once per date, scales it (:mod:`eocausal.imagery.bands`), crops every
scale from it around the unit's pixel (:mod:`eocausal.imagery.geometry`) and
resamples it to ``out_px`` (:mod:`eocausal.imagery.resampling`).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from affine import Affine

from eocausal.errors import ChipReadError, ConfigError, ExclusionWarning, UnitsError
from eocausal.imagery.bands import apply_recipe, find_qa_band, qa_pixel_invalid
from eocausal.imagery.exclusions import all_excluded_error, status_only
from eocausal.imagery.geometry import centre_crop, pad_window
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.keyed import KeyedSource
from eocausal.imagery.plan import Candidate, plan_geo, plan_keyed
from eocausal.imagery.resampling import resample
from eocausal.imagery.spec import ChipSpec
from eocausal.units import StudyUnits

__all__ = ["ChipDataset"]


class ChipDataset(torch.utils.data.Dataset):
    """Point-centred multi-scale chips of study units, streamed item by item.

    Parameters
    ----------
    units : StudyUnits
        Points (for georeferenced sources) or ``image_key`` (for keyed sources).
    source : GeoSource or KeyedSource
        :class:`~eocausal.imagery.RasterSource`,
        :class:`~eocausal.imagery.StacSource`,
        :class:`~eocausal.imagery.PrecutChipSource` or
        :class:`~eocausal.imagery.CallableSource`.
    spec : ChipSpec
    cache : ChipCache, optional
        On-disk cache of finished items (:mod:`eocausal.imagery.cache`).

    Attributes
    ----------
    unit_ids : ndarray of str, shape (len(dataset),)
        Units in item order (grouped by file and block).
    exclusions : DataFrame with columns unit_id, reason
        Units excluded before any read (outside all imagery, unknown image
        key). Read-time exclusions arrive as items with ``excluded=True``;
        :meth:`scan_exclusions` reads every unit and returns both kinds.
    band_names : list of str
    spec, units, source

    Raises
    ------
    ConfigError
        A scale in kilometres narrower than one pixel of the imagery (named
        with its config field, its size in pixels and the smallest
        ``size_km``), bands, dates or ``qa_mask`` that the source cannot serve.
    ImageryError
        A raster holding units is 1 x 1 pixel, or smaller in both dimensions
        than the window of a scale (the file, its size and the scale are named).
    UnitsError
        Every unit is excluded before reading (counts by reason,
        :func:`~eocausal.imagery.exclusions.all_excluded_error`).

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
        if isinstance(source, GeoSource):
            self._keyed = False
            plan = plan_geo(units, source, spec)
            self._plan = plan.candidates
        elif isinstance(source, KeyedSource):
            self._keyed = True
            plan = plan_keyed(units, source, spec)
            self._plan = []
            self._keyed_sizes = plan.keyed_sizes
        else:
            raise ConfigError(f"Unknown imagery source type {type(source).__name__}.")
        self.band_names = plan.band_names
        self._dates = plan.dates
        excluded, order_key = plan.excluded, plan.order_key
        keep = np.array([i for i in range(units.n_units) if i not in excluded], dtype=np.int64)
        self._order = keep[np.argsort(order_key[keep], kind="stable")] if keep.size else keep
        self.unit_ids = units.unit_id[self._order]
        ex_idx = sorted(excluded)
        self.exclusions = pd.DataFrame(
            {"unit_id": units.unit_id[ex_idx].astype(str), "reason": [excluded[i] for i in ex_idx]},
            columns=["unit_id", "reason"],
        )
        if ex_idx:
            warnings.warn(
                f"{len(ex_idx)} of {units.n_units} units excluded before reading (see dataset.exclusions), "
                f"e.g. {self.exclusions.unit_id.iloc[0]!r}: {self.exclusions.reason.iloc[0]}",
                ExclusionWarning,
                stacklevel=2,
            )
        if not self._order.size:
            raise all_excluded_error(
                self.exclusions,
                units.n_units,
                consequence=f"no unit can be cut from {source.description}",
                error=UnitsError,
            )

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
                crop, cv = centre_crop(big, h, w), centre_crop(big_valid, h, w)
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
        used: list[Candidate | None] = []
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
                score = min(float(centre_crop(valid, h, w).mean()) for h, w in cand.sizes)
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
                        "valid_fraction": float(centre_crop(per_date[t][1], h, w).mean()),
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
            self, batch_size=batch_size, num_workers=num_workers, collate_fn=status_only
        )
        rows = [(uid, reason) for batch in loader for uid, excluded, reason in batch if excluded]
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
