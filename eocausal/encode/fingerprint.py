"""Fingerprints of what decides each embedding, so that a resumed job never serves a stale vector.

The vector of a unit at a scale is a function of

* the unit: its id and its point (exact coordinates in the units' CRS), or
  its image key and the bytes of that pre-cut image;
* the chip spec and the selected bands;
* the imagery: the content (sha256) of every local file of every layer, its
  grid and band map; a remote asset (URL, ``/vsi...``) by its address only;
* the encoder: its name, weights sha256, and the bytes of every parameter
  and buffer (MOSAIKS filters and whitening, fine-tuned weights);
* the settings that change the numbers: scales, temporal aggregation, precision.

:func:`input_fingerprints` hashes the shared inputs into named components
and combines their digest with each unit's own fingerprint into one
fingerprint per dataset item,

.. math::

    f_i = \\mathrm{sha256}\\big(\\mathrm{sha256}(\\text{components}) \\,\\|\\, u_i\\big),

where :math:`u_i` is the unit part. The embedding job stores :math:`f_i` in
every shard row and reuses a row only when it equals the current one: a moved
unit (or a changed pre-cut image) invalidates that unit's vectors only; a
changed raster, chip spec, encoder or setting invalidates all of them.

A dataset that is not a :class:`~eocausal.imagery.ChipDataset` (nor a view
of one through ``torch.utils.data.Subset`` or a ``base``/``positions``
wrapper), and a ChipDataset over a :class:`~eocausal.imagery.CallableSource`,
cannot be fingerprinted from its inputs: every item is read once per run and
its chips, masks and exclusion status are hashed instead.

Hashing a raster file reads it (about 1.7 GB/s here); the digests are
remembered with each file's size and ``mtime_ns`` (``known_files``) so an
untouched file is not read again. A touched file whose bytes did not change
keeps its digest, and its vectors are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from eocausal.atomic import file_sha256
from eocausal.imagery.chips import ChipDataset
from eocausal.imagery.sources import GeoSource, PrecutChipSource

__all__ = ["InputFingerprints", "encoder_fingerprint", "input_fingerprints", "resolve_view"]



@dataclass(frozen=True)
class InputFingerprints:
    """Fingerprints of a dataset's items under one encoder and settings.

    Attributes
    ----------
    items : ndarray of str, shape (n_items,)
        One fingerprint per dataset position (32 hex characters).
    components : dict of str -> str
        sha256 of each shared input: ``encoder``, ``imagery``, ``settings``
        and, for a ChipDataset, ``chip_spec`` and ``units_crs``.
    files : list of dict
        ``{"path", "size", "mtime_ns", "sha256"}`` of each local imagery file.
    tracking : {"inputs", "content"}
        Whether the unit parts come from the inputs (points, image keys) or
        from hashing each item's chips.
    """

    items: np.ndarray
    components: dict[str, str]
    files: list[dict[str, Any]]
    tracking: str


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _tensor_bytes(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def encoder_fingerprint(encoder: nn.Module) -> str:
    """sha256 of an encoder's identity and of the bytes of its parameters and buffers.

    Wrappers that only hold the encoder as a submodule (and copy its
    ``name``, ``weights_sha256``, ``embed_dim``, ``input_size``) get the same
    fingerprint: state-dict keys are not hashed, values in order are.
    """
    h = hashlib.sha256()
    keys = ("name", "weights_sha256", "embed_dim", "input_size")
    ident = [getattr(encoder, k, None) for k in keys]
    h.update(json.dumps(ident, default=str).encode())
    for tensor in encoder.state_dict().values():
        _tensor_bytes(h, tensor)
    return h.hexdigest()


def _file_sha256(path: str, known: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    st = os.stat(path)
    old = known.get(path)
    if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
        sha = old["sha256"]
    else:
        sha = file_sha256(path)
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _geo_imagery(source: GeoSource, known: Mapping[str, Mapping[str, Any]]) -> tuple[Any, list]:
    files, layers = [], []
    for lyr in source.layers:
        contents = []
        for path in lyr.paths:
            if os.path.isfile(path):
                entry = _file_sha256(path, known)
                files.append(entry)
                contents.append([path, entry["sha256"]])
            else:  # remote asset: identified by its address
                contents.append([path, None])
        layers.append(
            [lyr.name, lyr.date, lyr.crs_wkt, lyr.transform, lyr.width, lyr.height,
             lyr.bands, lyr.nodata, contents]
        )
    return {"type": type(source).__name__, "layers": layers}, files


def resolve_view(dataset: Dataset) -> tuple[Dataset, np.ndarray | None]:
    """The dataset that serves the items, and the view's positions in it (None: not a view).

    Views are ``torch.utils.data.Subset`` and wrappers with ``base`` and
    ``positions`` attributes (nested views compose).
    """
    if isinstance(dataset, Subset):
        base, pos = dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    elif getattr(dataset, "base", None) is not None and hasattr(dataset, "positions"):
        base, pos = dataset.base, np.asarray(dataset.positions, dtype=np.int64)
    else:
        return dataset, None
    inner, inner_pos = resolve_view(base)
    return inner, pos if inner_pos is None else inner_pos[pos]


def _unit_rows(ds: ChipDataset) -> np.ndarray:
    """Row of each item's unit in ``ds.units``."""
    row = {u: i for i, u in enumerate(ds.units.unit_id.tolist())}
    return np.array([row[str(u)] for u in ds.unit_ids], dtype=np.int64)


def _keyed_units(ds: ChipDataset) -> tuple[dict[str, Any], list[list[str]], list]:
    """Pre-cut chips: each unit part holds its image key and the sha256 of that image."""
    source: PrecutChipSource = ds.source  # type: ignore[assignment]
    keys = [str(k) for k in ds.units.image_key[_unit_rows(ds)]]
    image_sha: dict[str, str] = {}
    for key in dict.fromkeys(keys):
        values, valid = source.get(np.asarray([key]))
        h = hashlib.sha256(f"{values.dtype}{values.shape}".encode())
        h.update(np.ascontiguousarray(values).tobytes())
        h.update(np.ascontiguousarray(valid).tobytes())
        image_sha[key] = h.hexdigest()
    components = {
        "chip_spec": {"spec": ds.spec.to_dict(), "bands": list(ds.band_names)},
        "imagery": {
            "type": type(source).__name__,
            "nodata": source.nodata,
            "pixel_size_m": source.pixel_size_m,
            "band_names": source.band_names,
        },
        "units_crs": None,
    }
    ids = [str(u) for u in ds.unit_ids]
    return components, [[u, k, image_sha[k]] for u, k in zip(ids, keys, strict=True)], []


def _geo_units(ds: ChipDataset, known: Mapping[str, Mapping[str, Any]]) -> tuple[dict, list, list]:
    """Points: each unit part holds the exact coordinates of the unit's point."""
    units = ds.units
    idx = _unit_rows(ds)
    x = units.gdf.geometry.x.to_numpy(dtype=np.float64)[idx]
    y = units.gdf.geometry.y.to_numpy(dtype=np.float64)[idx]
    imagery, files = _geo_imagery(ds.source, known)
    components = {
        "chip_spec": {"spec": ds.spec.to_dict(), "bands": list(ds.band_names)},
        "imagery": imagery,
        "units_crs": units.crs.to_wkt(),
    }
    parts = [
        [str(u), float(a).hex(), float(b).hex()] for u, a, b in zip(ds.unit_ids, x, y, strict=True)
    ]
    return components, parts, files


def _item_content(item: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    status = [str(item["unit_id"]), bool(item["excluded"]), str(item.get("reason", ""))]
    h.update(json.dumps(status).encode())
    for name in sorted(item["chips"]):
        h.update(name.encode() + b"\0")
        _tensor_bytes(h, torch.as_tensor(item["chips"][name]))
        if name in item.get("masks", {}):
            _tensor_bytes(h, torch.as_tensor(item["masks"][name]))
    return h.hexdigest()


def input_fingerprints(
    dataset: Dataset,
    encoder: nn.Module,
    *,
    settings: Mapping[str, Any],
    known_files: Sequence[Mapping[str, Any]] = (),
) -> InputFingerprints:
    """Fingerprint every item of ``dataset`` as the embedding job would compute it.

    Parameters
    ----------
    dataset : Dataset
        The chip dataset handed to :func:`~eocausal.encode.embed`.
    encoder : nn.Module
    settings : mapping
        Job settings that change the numbers (scales, temporal, precision).
    known_files : sequence of dict, default=()
        ``files`` of an earlier call: digests reused for files whose size and
        ``mtime_ns`` did not change.

    Returns
    -------
    InputFingerprints
    """
    known = {str(f["path"]): f for f in known_files if "path" in f}
    base, positions = resolve_view(dataset)
    found = None
    if isinstance(base, ChipDataset) and isinstance(base.source, GeoSource):
        found = _geo_units(base, known)
    elif isinstance(base, ChipDataset) and isinstance(base.source, PrecutChipSource):
        found = _keyed_units(base)
    if found is not None:
        components, parts, files = found
        if positions is not None:
            parts = [parts[i] for i in positions]
        tracking = "inputs"
    else:
        items = (dataset[i] for i in range(len(dataset)))
        parts = [[str(it["unit_id"]), _item_content(it)] for it in items]
        components, files, tracking = {"imagery": "item content"}, [], "content"
    components = {k: _digest(v) for k, v in components.items()}
    components["settings"] = _digest(dict(settings))
    components["encoder"] = encoder_fingerprint(encoder)
    shared = _digest(components)
    items = np.asarray(
        [hashlib.sha256((shared + json.dumps(p)).encode()).hexdigest()[:32] for p in parts],
        dtype=str,
    )
    return InputFingerprints(items, components, files, tracking)
