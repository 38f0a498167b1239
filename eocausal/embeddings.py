"""The Embeddings artifact: one vector per (unit, scale), with provenance.

On disk it is a single Parquet file with one row per (unit, scale) and columns
``unit_id`` (string), ``scale`` (string) and ``embedding`` (list of float32);
the provenance (encoder name, weights sha256, chip spec, package version, ...)
is stored as JSON under the schema metadata key ``eocausal``. Writes are
atomic (temporary file, then rename), so a crashed job never leaves a
half-written artifact behind.

In memory, :class:`Embeddings` keeps one ``(n_units, D)`` float32 block per
scale, rows aligned with ``unit_ids``.
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

from eocausal.errors import EmbeddingsError

__all__ = ["Embeddings", "atomic_write_table"]

_META_KEY = b"eocausal"


def atomic_write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` as Parquet through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


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
    """

    unit_ids: np.ndarray
    vectors: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

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

    @property
    def scales(self) -> list[str]:
        """Scale names, in insertion order."""
        return list(self.vectors)

    @property
    def n_units(self) -> int:
        return len(self.unit_ids)

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
            wanted, {s: b[rows] for s, b in self.vectors.items()}, dict(self.metadata)
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
        """Long Arrow table (unit_id, scale, embedding) with metadata in the schema."""
        parts = []
        for s, block in self.vectors.items():
            n, d = block.shape
            flat = pa.array(block.ravel(), type=pa.float32())
            offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
            parts.append(
                pa.table(
                    {
                        "unit_id": pa.array(self.unit_ids, type=pa.string()),
                        "scale": pa.array([s] * n, type=pa.string()),
                        "embedding": pa.ListArray.from_arrays(offsets, flat),
                    }
                )
            )
        table = pa.concat_tables(parts)
        meta = {_META_KEY: json.dumps(self.metadata, default=str).encode()}
        return table.replace_schema_metadata(meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to a Parquet file."""
        return atomic_write_table(self.to_table(), path)

    @classmethod
    def from_table(cls, table: pa.Table) -> Embeddings:
        missing = {"unit_id", "scale", "embedding"} - set(table.column_names)
        if missing:
            raise EmbeddingsError(f"Embeddings table lacks columns {sorted(missing)}.")
        raw = (table.schema.metadata or {}).get(_META_KEY, b"{}")
        metadata = json.loads(raw)
        unit_ids = np.asarray(table.column("unit_id").to_pylist(), dtype=str)
        scales = np.asarray(table.column("scale").to_pylist(), dtype=str)
        emb = table.column("embedding").combine_chunks()
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        vectors = [flat[a : a + k] for a, k in zip(starts, lengths, strict=True)]
        return cls.from_records(unit_ids, scales, vectors, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embeddings:
        """Read an artifact written by :meth:`save` (or merged shards)."""
        path = Path(path)
        if not path.exists():
            raise EmbeddingsError(f"Embeddings file {str(path)!r} does not exist; run `eocausal embed` first.")
        return cls.from_table(pq.read_table(path))
