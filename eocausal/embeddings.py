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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyproj import CRS
from pyproj.exceptions import CRSError

from eocausal.atomic import atomic_path
from eocausal.errors import EmbeddingsError

__all__ = ["Embeddings"]

_META_KEY = b"eocausal"
_GEO_KEY = b"geo"
_FORMAT = "eocausal.embeddings"
_FORMAT_VERSION = 2
_GEOPARQUET_VERSION = "1.1.0"
_BATCH_ROWS = 16_384  # rows of the embedding column read at a time (24 MiB at 384 float32)
_CHECK_ROWS = 65_536  # rows scanned at a time for non-finite values or parsed as WKB
_ROW_GROUP_ROWS = 16_384  # rows per Parquet row group written by save
_READ_BUFFER = 1 << 22  # bytes: stream column chunks page by page rather than whole
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


def _nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Rows of a 2-D block with a NaN or infinite value, scanned in slices (no full mask)."""
    return np.concatenate(
        [
            start + np.flatnonzero(~np.isfinite(block[start : start + _CHECK_ROWS]).all(axis=1))
            for start in range(0, len(block), _CHECK_ROWS)
        ]
        or [np.empty(0, dtype=np.int64)]
    )


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
            bad_rows = _nonfinite_rows(block)
            if bad_rows.size:
                bad = self.unit_ids[bad_rows][:5].tolist()
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
        rows = pd.Index(self.unit_ids).get_indexer(wanted)  # hash lookup, linear in n
        if (rows < 0).any():
            missing = wanted[rows < 0].tolist()
            raise EmbeddingsError(
                f"{len(missing)} units have no embedding (first: {missing[:5]}); "
                "embed them or drop them from the analysis."
            )
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
        unit_ids = pa.array(self.unit_ids, type=pa.string())
        parts = []
        for s, block in self.vectors.items():
            d = block.shape[1]
            # no copy: the list values are a view of the block
            flat = pa.array(block.ravel(), type=pa.float32())
            offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
            cols = {
                "unit_id": unit_ids,
                "scale": pa.repeat(pa.scalar(s, type=pa.string()), n),
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
        """Write atomically to a GeoParquet file (plain Parquet when no unit has a point).

        Row groups hold 16,384 rows, so the writer buffers one row group (about
        25 MB at 384 float32 dimensions), not the whole file.
        """
        with atomic_path(path) as tmp:
            pq.write_table(self.to_table(), tmp, row_group_size=_ROW_GROUP_ROWS)
        return Path(path)

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
            If columns are missing, the format is newer than this eocausal, a
            (unit, scale) pair is missing or repeated, a scale mixes widths, or
            the geometry is not one point per unit.
        """
        return cls._read(table.schema, table.select, _table_batches(table), source)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read an artifact written by :meth:`save`, or by versions before GeoParquet.

        The file is read in two passes, so that peak memory is about the final
        blocks plus one batch of rows: first the ``unit_id``, ``scale`` (and
        geometry) columns, which fix the units, the scales and each row's place;
        then the ``embedding`` column, 16,384 rows at a time, each batch copied
        straight into its rows of the preallocated float32 blocks. The result is
        the same, bit for bit, as assembling the rows with :meth:`from_records`.
        """
        path = Path(path)
        if not path.exists():
            raise EmbeddingsError(
                f"Embeddings file {str(path)!r} does not exist; run `eocausal embed` first."
            )
        try:
            with pq.ParquetFile(path, buffer_size=_READ_BUFFER, pre_buffer=False) as parquet:
                batches = (
                    batch.column(0)
                    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=["embedding"])
                )
                return cls._read(
                    parquet.schema_arrow,
                    lambda names: parquet.read(columns=names),
                    batches,
                    f"Embeddings file {str(path)!r}",
                )
        except (OSError, pa.ArrowException) as exc:
            raise EmbeddingsError(
                f"Embeddings file {str(path)!r} is not readable Parquet ({exc}); {_REGENERATE}."
            ) from exc

    @classmethod
    def _read(
        cls,
        schema: pa.Schema,
        read_columns: Callable[[list[str]], pa.Table],
        embeddings: Iterable[pa.Array],
        source: str,
    ) -> Embeddings:
        """Assemble from the long rows: ``read_columns`` gives the key columns, then
        ``embeddings`` the embedding column in row order, in batches."""
        metadata = _header_metadata(schema, source)
        schema_meta = schema.metadata or {}
        geo = json.loads(schema_meta[_GEO_KEY]) if _GEO_KEY in schema_meta else None
        geo_column = None if geo is None else geo.get("primary_column", "geometry")
        names = ["unit_id", "scale"]
        if geo_column is not None and geo_column in schema.names:
            names.append(geo_column)
        keys = read_columns(names)
        units, blocks, rows = _assemble(keys, embeddings, source)
        out = cls(units, blocks, dict(metadata))
        if geo is None:
            return out
        column = keys.column(geo_column) if geo_column in keys.column_names else None
        coords, crs = _read_points(column, geo, keys.num_rows, source)
        per_unit = np.full((out.n_units, 2), np.nan)
        per_unit[rows] = coords
        if not np.array_equal(per_unit[rows], coords, equal_nan=True):
            raise EmbeddingsError(
                f"{source} gives different points to the scales of one unit; {_REGENERATE}."
            )
        out.coords, out.crs = _clean_coords(per_unit, crs, out.n_units)
        return out


def _header_metadata(schema: pa.Schema, source: str) -> dict[str, Any]:
    """The provenance from the ``eocausal`` key, after checking the columns and the version."""
    missing = {"unit_id", "scale", "embedding"} - set(schema.names)
    if missing:
        raise EmbeddingsError(
            f"{source} lacks columns {sorted(missing)}: it is not an eocausal Embeddings "
            f"artifact; {_REGENERATE}."
        )
    header = json.loads((schema.metadata or {}).get(_META_KEY, b"{}"))
    if header.get("format") != _FORMAT:  # version 1: the key holds the provenance itself
        return header
    version = header.get("format_version")
    if not isinstance(version, int) or version > _FORMAT_VERSION:
        raise EmbeddingsError(
            f"{source} has Embeddings format_version {version!r}, newer than this eocausal "
            f"reads ({_FORMAT_VERSION}); upgrade eocausal or {_REGENERATE}."
        )
    return header.get("metadata") or {}


def _table_batches(table: pa.Table) -> Iterator[pa.Array]:
    """The ``embedding`` column of an in-memory table in slices of :data:`_BATCH_ROWS` rows."""
    for chunk in table.column("embedding").chunks:
        for start in range(0, len(chunk), _BATCH_ROWS):
            yield chunk.slice(start, _BATCH_ROWS)


def _codes(column: pa.ChunkedArray, name: str, source: str) -> tuple[np.ndarray, list]:
    """Per-row codes of a key column and its distinct values, in order of first appearance."""
    values = column.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.null_count:
        raise EmbeddingsError(
            f"{source} has {values.null_count} rows with a null `{name}`; {_REGENERATE}."
        )
    encoded = pc.dictionary_encode(values)
    return encoded.indices.to_numpy().astype(np.int64), encoded.dictionary.to_pylist()


def _assemble(
    keys: pa.Table, embeddings: Iterable[pa.Array], source: str
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Per-scale blocks from long rows, with the checks of :meth:`Embeddings.from_records`.

    Units and scales are numbered in order of first appearance (a hash lookup
    of the key columns), so each row's place in its block is known before any
    vector is read. Each batch of ``embeddings`` is then flattened, reshaped to
    ``(rows, D)`` and copied into the preallocated float32 blocks: no Python
    object per row.

    Returns
    -------
    unit_ids : ndarray of shape (n_units,), str
    blocks : dict of str -> ndarray of shape (n_units, D_scale), float32
    rows : ndarray of shape (n_rows,)
        The unit (row of the blocks) of each input row.
    """
    unit_codes, unit_values = _codes(keys.column("unit_id"), "unit_id", source)
    scale_codes, scale_values = _codes(keys.column("scale"), "scale", source)
    units = np.asarray(unit_values, dtype=str)
    scales = [str(s) for s in np.asarray(scale_values, dtype=str)]
    n_units, n_scales = len(units), len(scales)
    counts = np.bincount(unit_codes * n_scales + scale_codes, minlength=n_units * n_scales)
    counts = counts.reshape(n_units, n_scales)
    if (counts > 1).any():
        unit_at, scale_at = np.nonzero(counts > 1)
        keys_twice = sorted(
            f"{units[u]}\x1f{scales[s]}" for u, s in zip(unit_at, scale_at, strict=True)
        )
        dup = [k.replace("\x1f", " @ ") for k in keys_twice[:5]]
        raise EmbeddingsError(
            f"{len(keys_twice)} (unit, scale) pairs have more than one embedding "
            f"(first: {dup}); shards from different runs were mixed."
        )
    blocks: list[np.ndarray | None] = [None] * n_scales
    widths: list[set[int]] = [set() for _ in scales]
    start = 0
    for batch in embeddings:
        stop = start + len(batch)
        if batch.null_count:
            at = start + np.flatnonzero(batch.is_null().to_numpy(zero_copy_only=False))[:5]
            first = [f"{units[unit_codes[i]]} @ {scales[scale_codes[i]]}" for i in at]
            raise EmbeddingsError(
                f"{source} has rows with a null embedding (first: {first}); {_REGENERATE}."
            )
        _fill(batch, unit_codes[start:stop], scale_codes[start:stop], blocks, widths, n_units)
        start = stop
    for c, scale in enumerate(scales):
        absent = counts[:, c] == 0
        if absent.any():
            missing = sorted(units[absent].tolist())
            raise EmbeddingsError(
                f"Scale {scale!r} lacks embeddings for {len(missing)} units "
                f"(first: {missing[:5]}); rerun the job to complete it."
            )
        if len(widths[c]) != 1:
            raise EmbeddingsError(
                f"Scale {scale!r} mixes embedding shapes {sorted((w,) for w in widths[c])}."
            )
    return units, dict(zip(scales, blocks, strict=True)), unit_codes


def _fill(
    batch: pa.Array,
    unit_codes: np.ndarray,
    scale_codes: np.ndarray,
    blocks: list[np.ndarray | None],
    widths: list[set[int]],
    n_units: int,
) -> None:
    """Copy one batch of list-valued rows into the blocks; record each scale's widths.

    A scale's width is that of its first row; its block is allocated then. Rows
    of a scale with mixed widths are not copied (the caller raises).
    """
    lengths = pc.list_value_length(batch).to_numpy().astype(np.int64)
    values = pc.list_flatten(batch).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    starts = np.cumsum(lengths) - lengths
    for c in np.unique(scale_codes):
        sel = np.flatnonzero(scale_codes == c)
        widths[c].update(np.unique(lengths[sel]).tolist())
        if blocks[c] is None:
            blocks[c] = np.empty((n_units, int(lengths[sel[0]])), dtype=np.float32)
        d = blocks[c].shape[1]
        if widths[c] != {d}:
            continue
        if sel[-1] - sel[0] + 1 == len(sel):  # consecutive rows: their values are one slice
            first = starts[sel[0]]
            rows = values[first : first + len(sel) * d].reshape(len(sel), d)
        else:
            rows = values[starts[sel][:, None] + np.arange(d)]
        blocks[c][unit_codes[sel]] = rows


def _read_points(
    column: pa.ChunkedArray | None, geo: dict[str, Any], n_rows: int, source: str
) -> tuple[np.ndarray, CRS | None]:
    """Row points ``(x, y)`` (NaN for null geometry) and CRS from a GeoParquet WKB column.

    The WKB is parsed :data:`_CHECK_ROWS` rows at a time, so no geometry object
    outlives its slice.
    """
    import shapely

    name = geo.get("primary_column", "geometry")
    spec = geo.get("columns", {}).get(name, {})
    if column is None or spec.get("encoding", "WKB") != "WKB":
        raise EmbeddingsError(
            f"{source} declares geometry column {name!r} with encoding "
            f"{spec.get('encoding')!r}; only a WKB point column is read; {_REGENERATE}."
        )
    coords = np.full((n_rows, 2), np.nan)
    kinds: set[int] = set()
    any_present = False
    start = 0
    for chunk in column.chunks:
        for offset in range(0, len(chunk), _CHECK_ROWS):
            piece = chunk.slice(offset, _CHECK_ROWS)
            geoms = shapely.from_wkb(piece.to_numpy(zero_copy_only=False))
            present = ~shapely.is_missing(geoms)
            any_present = any_present or bool(present.any())
            kinds.update(np.unique(shapely.get_type_id(geoms[present])).tolist())
            if kinds <= {0}:
                rows = start + np.flatnonzero(present)
                coords[rows, 0] = shapely.get_x(geoms[present])
                coords[rows, 1] = shapely.get_y(geoms[present])
            start += len(piece)
    if kinds - {0}:
        raise EmbeddingsError(
            f"{source} holds non-point geometries (type ids {sorted(kinds)}); each unit needs one "
            f"point; {_REGENERATE}."
        )
    if "crs" not in spec:  # GeoParquet default
        crs = CRS.from_user_input("OGC:CRS84")
    elif spec["crs"] is None:
        crs = None
    else:
        crs = CRS.from_json_dict(spec["crs"])
    if crs is None and any_present:
        raise EmbeddingsError(
            f"{source} has points with an unknown CRS (crs: null); {_REGENERATE}."
        )
    return coords, crs
