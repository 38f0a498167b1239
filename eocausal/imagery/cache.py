"""Optional on-disk cache of finished chip items, written atomically.

Each item is one ``.npz`` file (no pickle) under a folder named by a
fingerprint of everything that decides its content: the chip spec, the
selected bands, and the source (file paths with sizes and modification
times; pre-cut image bytes; or a user-given namespace for a callable source).
Change any of them and the cache misses instead of serving stale chips.
Writes go to a temporary file in the same folder and are renamed into place,
so a killed worker never leaves a half-written chip behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eocausal.atomic import atomic_path

from eocausal.errors import ConfigError
from eocausal.imagery.callable import CallableSource
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.precut import PrecutChipSource

__all__ = ["ChipCache"]


def _source_fingerprint(source: Any, namespace: str | None) -> Any:
    if namespace is not None:
        return {"namespace": namespace}
    if isinstance(source, GeoSource):
        files = []
        for lyr in source.layers:
            for path in lyr.paths:
                st = os.stat(path) if os.path.exists(path) else None
                files.append([lyr.name, path, None if st is None else [st.st_size, st.st_mtime_ns]])
        return {"layers": files, "bands": source.band_names}
    if isinstance(source, PrecutChipSource):
        h = hashlib.sha256(np.ascontiguousarray(source.images).tobytes())
        h.update("\0".join(source.keys.tolist()).encode())
        return {
            "precut": h.hexdigest(),
            "nodata": source.nodata,
            "pixel_size_m": source.pixel_size_m,
        }
    if isinstance(source, CallableSource):
        raise ConfigError(
            "A ChipCache over a CallableSource needs ChipCache(directory, namespace=...) naming the function's "
            "data and version: its output cannot be fingerprinted."
        )
    raise ConfigError(f"ChipCache cannot fingerprint a {type(source).__name__}; pass namespace=.")


class ChipCache:
    """On-disk cache of :class:`~eocausal.imagery.ChipDataset` items.

    Parameters
    ----------
    directory : path-like
        Root folder (created on first write).
    namespace : str, optional
        Replaces the source fingerprint (required for a CallableSource).

    Examples
    --------
    >>> ds = ChipDataset(units, source, spec, cache=ChipCache("chip_cache"))  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, *, namespace: str | None = None) -> None:
        self.directory = Path(directory)
        self.namespace = namespace
        self._fingerprints: dict[int, Path] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory, "namespace": self.namespace, "_fingerprints": {}}

    def folder(self, dataset: Any) -> Path:
        """The cache folder of ``dataset`` (spec, bands and source fingerprint)."""
        key = id(dataset)
        if key not in self._fingerprints:
            blob = json.dumps(
                {
                    "spec": dataset.spec.to_dict(),
                    "bands": dataset.band_names,
                    "source": _source_fingerprint(dataset.source, self.namespace),
                },
                sort_keys=True,
                default=str,
            )
            self._fingerprints[key] = (
                self.directory / hashlib.sha256(blob.encode()).hexdigest()[:24]
            )
        return self._fingerprints[key]

    def _path(self, dataset: Any, unit: int) -> Path:
        """Cache file of a unit: named by its id AND its location (point or image key), so a
        moved unit never gets its old chips back."""
        units = dataset.units
        where = (
            units.gdf.geometry.iloc[unit].wkb_hex
            if units.gdf is not None
            else str(units.image_key[unit])
        )
        name = hashlib.sha256(f"{units.unit_id[unit]}\0{where}".encode()).hexdigest()
        return self.folder(dataset) / name[:2] / f"{name}.npz"

    def get(self, dataset: Any, i: int) -> dict[str, Any] | None:
        """Item ``i`` of ``dataset`` from the cache, or None on a miss."""
        unit = int(dataset._order[i])
        unit_id = str(dataset.units.unit_id[unit])
        path = self._path(dataset, unit)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            item = {
                "unit_id": unit_id,
                "index": unit,
                "chips": {},
                "masks": {},
                "valid_fraction": {},
                "excluded": bool(data["excluded"]),
                "reason": str(data["reason"]),
            }
            for s in dataset.spec.scale_names:
                item["chips"][s] = torch.from_numpy(data[f"chips__{s}"])
                item["masks"][s] = torch.from_numpy(data[f"masks__{s}"])
                item["valid_fraction"][s] = torch.tensor(
                    float(data[f"vf__{s}"]), dtype=torch.float32
                )
        return item

    def put(self, dataset: Any, i: int, item: dict[str, Any]) -> Path:
        """Store item ``i`` atomically; returns its path."""
        path = self._path(dataset, int(item["index"]))
        arrays: dict[str, np.ndarray] = {
            "excluded": np.asarray(item["excluded"]),
            "reason": np.asarray(item["reason"]),
        }
        for s in dataset.spec.scale_names:
            arrays[f"chips__{s}"] = item["chips"][s].numpy()
            arrays[f"masks__{s}"] = item["masks"][s].numpy()
            arrays[f"vf__{s}"] = np.asarray(float(item["valid_fraction"][s]))
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path
