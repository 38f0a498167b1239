"""The Embeddings artifact: one vector per (unit, scale), with provenance and location.

On disk it is one GeoParquet file (spec 1.1) with one row per (unit, scale)
and columns ``unit_id`` (string), ``scale`` (string), ``embedding`` (list of
float32) and ``geometry`` (the unit's point as WKB, in the CRS of the study
units; null for a unit without one). The file-level ``geo`` key holds the
GeoParquet metadata (``primary_column``, WKB encoding, ``["Point"]``, the CRS
as PROJJSON, the bounding box), so ``geopandas.read_parquet`` opens it. When
no unit has a point (pre-cut chips keyed by ``image_key``) the file is plain
Parquet without ``geometry`` column nor ``geo`` key. Either way the key
``eocausal`` holds JSON::

    {"format": "eocausal.embeddings", "format_version": 2,
     "geometry": "points" | "none", "metadata": {provenance}}

where the provenance records the encoder, weights sha256, chip spec, package
versions, input fingerprints, ... Files written before version 2 (plain
Parquet whose ``eocausal`` key is the provenance itself) are still read.
Writes are atomic (:mod:`eocausal.atomic`: temporary file, then rename), so a
crashed job never leaves a half-written artifact behind.

In memory, :class:`Embeddings` keeps one ``(n_units, D)`` float32 block per
scale, rows aligned with ``unit_ids``, and optionally the units' points
(``coords``, ``crs``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyproj import CRS
from pyproj.exceptions import CRSError

from eocausal.atomic import write_parquet
from eocausal.errors import EmbeddingsError

__all__ = ["Embeddings"]

_META_KEY = b"eocausal"
_GEO_KEY = b"geo"
_FORMAT = "eocausal.embeddings"
_FORMAT_VERSION = 2
_GEOPARQUET_VERSION = "1.1.0"
_REGENERATE = "regenerate it with `eocausal embed` (or eocausal.encode.embed)"


def _clean_coords(coords: Any, crs: Any, n: int) -> tuple[np.ndarray | None, CRS | None]:
    """Validate the units' points; all-missing points mean no geometry."""
    if coords is None:
        return None, None
    xy = np.asarray(coords, dtype=np.float64)
    if xy.shape != (n, 2):
        raise EmbeddingsError(
            f"`coords` must have shape ({n}, 2) (x, y per unit); got {xy.shape}."
        )
    has = np.isfinite(xy)
    if (has[:, 0] != has[:, 1]).any() or np.isinf(xy).any():
        raise EmbeddingsError(
            "`coords` rows must be two finite numbers or two NaN (no geometry); "
            f"got {xy[(has[:, 0] != has[:, 1]) | np.isinf(xy).any(axis=1)][:3].tolist()}."
        )
    if not has.any():
        return None, None
    if crs is None:
        raise EmbeddingsError("`coords` need a `crs` (e.g. 'EPSG:4326'); got crs=None.")
    try:
        crs = CRS.from_user_input(crs)
    except CRSError as exc:
        raise EmbeddingsError(
            f"`crs` {crs!r} is not a valid CRS ({exc}); give e.g. 'EPSG:4326'."
        ) from exc
    return xy, crs


@dataclass
class Embeddings:
    """Embeddings of study units at one or more scales.

    Parameters
    ----------
    unit_ids : ndarray of shape (n_units,)
        Unit identifiers (stored as strings), unique.
    vectors : dict of str -> ndarray of shape (n_units, D_scale)
        One block per scale name, rows aligned with ``unit_ids``.
    metadata : dict, default={}
        Provenance: encoder, weights sha256, chip spec, package version, ...
    coords : ndarray of shape (n_units, 2), default=None
        Each unit's point ``(x, y)`` in ``crs`` (longitude, latitude for a
        geographic CRS); a row of NaN for a unit without a point. None (or all
        NaN) when no unit has one.
    crs : CRS-like, default=None
        CRS of ``coords`` (required with them); stored as a ``pyproj.CRS``.
    """

    unit_ids: np.ndarray
    vectors: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    coords: np.ndarray | None = None
    crs: CRS | None = None

    def __post_init__(self) -> None:
        self.unit_ids = np.asarray(self.unit_ids).astype(str)
        if self.unit_ids.ndim != 1:
            raise EmbeddingsError("`unit_ids` must be one-dimensional.")
        uniq, counts = np.unique(self.unit_ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1][:5].tolist()
            raise EmbeddingsError(f"`unit_ids` must be unique; duplicated: {dup}.")
        if not self.vectors:
            raise EmbeddingsError("Embeddings need at least one scale.")
        n = len(self.unit_ids)
        clean = {}
        for scale, block in self.vectors.items():
            block = np.asarray(block, dtype=np.float32)
            if block.ndim != 2 or block.shape[0] != n:
                raise EmbeddingsError(
                    f"Block for scale {scale!r} has shape {block.shape}; expected ({n}, D)."
                )
            if not np.isfinite(block).all():
                bad = self.unit_ids[~np.isfinite(block).all(axis=1)][:5].tolist()
                raise EmbeddingsError(
                    f"Block for scale {scale!r} has non-finite values for units {bad}."
                )
            clean[str(scale)] = block
        self.vectors = clean
        self.coords, self.crs = _clean_coords(self.coords, self.crs, n)

    @property
    def scales(self) -> list[str]:
        """Scale names, in insertion order."""
        return list(self.vectors)

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

    @property
    def geometry(self) -> Any:
        """The units' points as a GeoSeries indexed by unit id (None without points)."""
        if self.coords is None:
            return None
        import geopandas as gpd

        points = gpd.points_from_xy(self.coords[:, 0], self.coords[:, 1])
        points[~np.isfinite(self.coords[:, 0])] = None
        return gpd.GeoSeries(points, index=self.unit_ids, crs=self.crs)

    def block(self, scale: str) -> np.ndarray:
        """The ``(n_units, D)`` block of one scale."""
        try:
            return self.vectors[scale]
        except KeyError:
            raise EmbeddingsError(
                f"Scale {scale!r} is not in these embeddings; available: {self.scales}."
            ) from None

    def subset(self, unit_ids: Sequence) -> Embeddings:
        """Rows for ``unit_ids``, in that order; every id must be present."""
        wanted = np.asarray(unit_ids).astype(str)
        index = {u: i for i, u in enumerate(self.unit_ids)}
        missing = [str(u) for u in wanted if u not in index]
        if missing:
            raise EmbeddingsError(
                f"{len(missing)} units have no embedding (first: {missing[:5]}); "
                "embed them or drop them from the analysis."
            )
        rows = np.fromiter((index[u] for u in wanted), dtype=np.int64, count=len(wanted))
        return Embeddings(
            wanted,
            {s: b[rows] for s, b in self.vectors.items()},
            dict(self.metadata),
            None if self.coords is None else self.coords[rows],
            self.crs,
        )

    @classmethod
    def from_records(
        cls,
        unit_ids: Iterable,
        scales: Iterable,
        vectors: np.ndarray | Sequence[np.ndarray],
        metadata: Mapping[str, Any] | None = None,
    ) -> Embeddings:
        """Assemble from long records, checking exactly one vector per (unit, scale).

        Raises
        ------
        EmbeddingsError
            If a (unit, scale) pair appears twice, or a unit lacks a scale that others have.
        """
        unit_ids = np.asarray(list(unit_ids)).astype(str)
        scales = np.asarray(list(scales)).astype(str)
        vectors = [np.asarray(v, dtype=np.float32) for v in vectors]
        if not (len(unit_ids) == len(scales) == len(vectors)):
            raise EmbeddingsError("unit_ids, scales and vectors must have the same length.")
        keys = np.char.add(np.char.add(unit_ids, "\x1f"), scales)
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            dup = [k.replace("\x1f", " @ ") for k in uniq[counts > 1][:5]]
            raise EmbeddingsError(
                f"{int((counts > 1).sum())} (unit, scale) pairs have more than one embedding "
                f"(first: {dup}); shards from different runs were mixed."
            )
        scale_names = list(dict.fromkeys(scales.tolist()))
        units = np.asarray(list(dict.fromkeys(unit_ids.tolist())), dtype=str)
        index = {u: i for i, u in enumerate(units)}
        blocks = {}
        for s in scale_names:
            sel = np.flatnonzero(scales == s)
            present = unit_ids[sel]
            if len(sel) != len(units):
                missing = sorted(set(units.tolist()) - set(present.tolist()))
                raise EmbeddingsError(
                    f"Scale {s!r} lacks embeddings for {len(missing)} units "
                    f"(first: {missing[:5]}); rerun the job to complete it."
                )
            dims = {vectors[i].shape for i in sel}
            if len(dims) != 1:
                raise EmbeddingsError(f"Scale {s!r} mixes embedding shapes {sorted(dims)}.")
            block = np.empty((len(units), vectors[sel[0]].size), dtype=np.float32)
            for i in sel:
                block[index[unit_ids[i]]] = vectors[i].ravel()
            blocks[s] = block
        return cls(units, blocks, dict(metadata or {}))

    def to_table(self) -> pa.Table:
        """Long Arrow table, one row per (unit, scale), with the file-level metadata.

        Columns ``unit_id``, ``scale``, ``embedding`` and, when units have
        points, ``geometry`` (WKB) with the GeoParquet ``geo`` key.
        """
        n = self.n_units
        wkb = None
        if self.coords is not None:
            import shapely

            has = np.isfinite(self.coords[:, 0])
            geoms = np.full(n, None, dtype=object)
            geoms[has] = shapely.points(self.coords[has])
            wkb = pa.array(shapely.to_wkb(geoms, byte_order=1), type=pa.binary())
        parts = []
        for s, block in self.vectors.items():
            d = block.shape[1]
            flat = pa.array(block.ravel(), type=pa.float32())
            offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
            cols = {
                "unit_id": pa.array(self.unit_ids, type=pa.string()),
                "scale": pa.array([s] * n, type=pa.string()),
                "embedding": pa.ListArray.from_arrays(offsets, flat),
            }
            if wkb is not None:
                cols["geometry"] = wkb
            parts.append(pa.table(cols))
        table = pa.concat_tables(parts)
        header = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "geometry": "none" if wkb is None else "points",
            "metadata": self.metadata,
        }
        meta = {_META_KEY: json.dumps(header, default=str).encode()}
        if wkb is not None:
            xy = self.coords[np.isfinite(self.coords[:, 0])]
            geo = {
                "version": _GEOPARQUET_VERSION,
                "primary_column": "geometry",
                "columns": {
                    "geometry": {
                        "encoding": "WKB",
                        "geometry_types": ["Point"],
                        "crs": self.crs.to_json_dict(),
                        "bbox": [*xy.min(axis=0).tolist(), *xy.max(axis=0).tolist()],
                    }
                },
            }
            meta[_GEO_KEY] = json.dumps(geo).encode()
        return table.replace_schema_metadata(meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to a GeoParquet file (plain Parquet when no unit has a point)."""
        return write_parquet(self.to_table(), path)

    @classmethod
    def from_table(cls, table: pa.Table, *, source: str = "the embeddings table") -> Embeddings:
        """Read a table written by :meth:`to_table` (any format version up to the current one).

        Parameters
        ----------
        table : pyarrow.Table
        source : str, default="the embeddings table"
            How to name the table in error messages (e.g. its file).

        Raises
        ------
        EmbeddingsError
            If columns are missing, the format is newer than this eocausal,
            or the geometry is not one point per unit.
        """
        missing = {"unit_id", "scale", "embedding"} - set(table.column_names)
        if missing:
            raise EmbeddingsError(
                f"{source} lacks columns {sorted(missing)}: it is not an eocausal Embeddings "
                f"artifact; {_REGENERATE}."
            )
        schema_meta = table.schema.metadata or {}
        header = json.loads(schema_meta.get(_META_KEY, b"{}"))
        if header.get("format") == _FORMAT:
            version = header.get("format_version")
            if not isinstance(version, int) or version > _FORMAT_VERSION:
                raise EmbeddingsError(
                    f"{source} has Embeddings format_version {version!r}, newer than this eocausal "
                    f"reads ({_FORMAT_VERSION}); upgrade eocausal or {_REGENERATE}."
                )
            metadata = header.get("metadata") or {}
        else:  # version 1: the key holds the provenance itself
            metadata = header
        unit_ids = np.asarray(table.column("unit_id").to_pylist(), dtype=str)
        scales = np.asarray(table.column("scale").to_pylist(), dtype=str)
        emb = table.column("embedding").combine_chunks()
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        vectors = [flat[a : a + k] for a, k in zip(starts, lengths, strict=True)]
        out = cls.from_records(unit_ids, scales, vectors, metadata)
        if _GEO_KEY not in schema_meta:
            return out
        coords, crs = _read_points(table, json.loads(schema_meta[_GEO_KEY]), unit_ids, source)
        index = {u: i for i, u in enumerate(out.unit_ids)}
        rows = np.fromiter((index[u] for u in unit_ids), dtype=np.int64, count=len(unit_ids))
        per_unit = np.full((out.n_units, 2), np.nan)
        per_unit[rows] = coords
        if not np.array_equal(per_unit[rows], coords, equal_nan=True):
            raise EmbeddingsError(
                f"{source} gives different points to the scales of one unit; {_REGENERATE}."
            )
        return cls(out.unit_ids, out.vectors, out.metadata, per_unit, crs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read an artifact written by :meth:`save`, or by versions before GeoParquet."""
        path = Path(path)
        if not path.exists():
            raise EmbeddingsError(
                f"Embeddings file {str(path)!r} does not exist; run `eocausal embed` first."
            )
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise EmbeddingsError(
                f"Embeddings file {str(path)!r} is not readable Parquet ({exc}); {_REGENERATE}."
            ) from exc
        return cls.from_table(table, source=f"Embeddings file {str(path)!r}")


def _read_points(
    table: pa.Table, geo: dict[str, Any], unit_ids: np.ndarray, source: str
) -> tuple[np.ndarray, CRS | None]:
    """Row points ``(x, y)`` (NaN for null geometry) and CRS from a GeoParquet table."""
    import shapely

    column = geo.get("primary_column", "geometry")
    spec = geo.get("columns", {}).get(column, {})
    if column not in table.column_names or spec.get("encoding", "WKB") != "WKB":
        raise EmbeddingsError(
            f"{source} declares geometry column {column!r} with encoding "
            f"{spec.get('encoding')!r}; only a WKB point column is read; {_REGENERATE}."
        )
    geoms = shapely.from_wkb(np.asarray(table.column(column).to_pylist(), dtype=object))
    present = ~shapely.is_missing(geoms)
    kinds = set(shapely.get_type_id(geoms[present]).tolist())
    if kinds - {0}:
        raise EmbeddingsError(
            f"{source} holds non-point geometries (type ids {sorted(kinds)}); each unit needs one "
            f"point; {_REGENERATE}."
        )
    coords = np.full((len(unit_ids), 2), np.nan)
    coords[present, 0] = shapely.get_x(geoms[present])
    coords[present, 1] = shapely.get_y(geoms[present])
    if "crs" not in spec:  # GeoParquet default
        crs = CRS.from_user_input("OGC:CRS84")
    elif spec["crs"] is None:
        crs = None
    else:
        crs = CRS.from_json_dict(spec["crs"])
    if crs is None and present.any():
        raise EmbeddingsError(
            f"{source} has points with an unknown CRS (crs: null); {_REGENERATE}."
        )
    return coords, crs
