"""Embedding shards: one Parquet file per rank per N batches, written atomically, and their merge.

Each row holds a unit, a scale, its vector (or its exclusion reason) and the fingerprint of
the inputs that determined it (:mod:`eocausal.encode.fingerprint`); the merge keeps the rows
whose fingerprint is current and checks exactly one row per (unit, scale).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lightning.pytorch.callbacks import BasePredictionWriter

from eocausal.atomic import write_parquet
from eocausal.embeddings import Embeddings
from eocausal.errors import EmbeddingsError, NothingEmbeddedError

__all__ = ["ShardWriter", "fresh_rows", "merge_shards", "prune_stale_rows", "read_shards"]

_SHARD_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("unit_id", pa.string()),
        ("scale", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("excluded", pa.bool_()),
        ("reason", pa.string()),
        ("fingerprint", pa.string()),
    ]
)

class ShardWriter(BasePredictionWriter):
    """Writes predictions of each rank to Parquet shards, atomically.

    Parameters
    ----------
    shard_dir : path
        Directory of the shards.
    shard_batches : int, default=16
        Batches per shard; smaller means less work lost when a job is killed.
    fingerprints : sequence of str, optional
        Input fingerprint of each dataset position, stored with its rows
        (:func:`~eocausal.encode.fingerprint.input_fingerprints`); rows
        without one are never reused on resume.
    """

    def __init__(
        self,
        shard_dir: str | os.PathLike,
        shard_batches: int = 16,
        *,
        fingerprints: Sequence[str] | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)
        self.shard_batches = int(shard_batches)
        self.fingerprints = None if fingerprints is None else np.asarray(fingerprints, dtype=str)
        self._run = uuid.uuid4().hex[:8]
        self._buffer: list[pa.Table] = []
        self._n_buffered = 0
        self._counter = 0
        self._rank = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._rank = trainer.global_rank
        self.shard_dir.mkdir(parents=True, exist_ok=True)

    def _to_table(self, pred: dict[str, Any]) -> pa.Table:
        pos, uids, excl, reasons = (
            pred["position"],
            pred["unit_id"],
            pred["excluded"],
            pred["reason"],
        )
        cols: dict[str, list] = {n: [] for n in _SHARD_SCHEMA.names}
        kept = np.flatnonzero(~excl)
        for scale, block in pred["vectors"].items():
            for row, i in enumerate(kept):
                cols["position"].append(int(pos[i]))
                cols["unit_id"].append(uids[i])
                cols["scale"].append(scale)
                cols["embedding"].append(block[row])
                cols["excluded"].append(False)
                cols["reason"].append("")
        for i in np.flatnonzero(excl):
            cols["position"].append(int(pos[i]))
            cols["unit_id"].append(uids[i])
            cols["scale"].append(None)
            cols["embedding"].append(None)
            cols["excluded"].append(True)
            cols["reason"].append(reasons[i] or "excluded by the chip reader")
        fp = self.fingerprints
        cols["fingerprint"] = [None if fp is None else str(fp[p]) for p in cols["position"]]
        return pa.table(cols, schema=_SHARD_SCHEMA)

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._buffer.append(self._to_table(prediction))
        self._n_buffered += 1
        if self._n_buffered >= self.shard_batches:
            self.flush()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the buffered batches as one shard (no-op when empty)."""
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        name = f"rank{self._rank:04d}-{self._run}-{self._counter:06d}.parquet"
        write_parquet(table, self.shard_dir / name)
        self._counter += 1
        self._buffer, self._n_buffered = [], 0


def read_shards(shard_dir: Path, columns: list[str] | None = None) -> pa.Table:
    files = sorted(shard_dir.glob("rank*.parquet")) if shard_dir.is_dir() else []
    if not files:
        empty = _SHARD_SCHEMA.empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(
        [pq.read_table(f, schema=_SHARD_SCHEMA, columns=columns) for f in files]
    )


def fresh_rows(table: pa.Table, fingerprints: np.ndarray) -> np.ndarray:
    """Mask of the shard rows whose fingerprint is one of the current ``fingerprints``."""
    stored = table.column("fingerprint")
    return pc.fill_null(pc.is_in(stored, value_set=pa.array(fingerprints)), False).to_numpy(
        zero_copy_only=False
    )


def merge_shards(
    out_dir: str | os.PathLike,
    metadata: dict[str, Any] | None = None,
    *,
    fingerprints: Sequence[str] | None = None,
) -> tuple[Embeddings, pd.DataFrame]:
    """Merge all shards under ``out_dir/shards`` into Embeddings and read-time exclusions.

    Parameters
    ----------
    out_dir : path
        The job's output directory.
    metadata : dict, optional
        Provenance stored in the Embeddings.
    fingerprints : sequence of str, optional
        Current input fingerprint of each dataset position. When given, only
        rows with one of them are merged (stale rows are ignored) and rows
        are ordered by the current positions; otherwise every row is merged,
        in the order of the positions stored with it.

    Raises
    ------
    EmbeddingsError
        If a (unit, scale) pair appears more than once (shards of different
        runs mixed), a unit is both embedded and excluded, or a unit lacks a scale.
    """
    shard_dir = Path(out_dir) / "shards"
    table = read_shards(shard_dir)
    if fingerprints is not None:
        fingerprints = np.asarray(fingerprints, dtype=str)
        table = table.filter(pa.array(fresh_rows(table, fingerprints)))
        position_of = pd.Series(np.arange(len(fingerprints), dtype=np.int64), index=fingerprints)
        current = position_of.loc[table.column("fingerprint").to_numpy(zero_copy_only=False)]
        table = table.set_column(0, "position", pa.array(current.to_numpy(), type=pa.int64()))
    # Dataset order, whatever the number of ranks (stable: scales keep their order).
    table = table.take(pc.sort_indices(table, sort_keys=[("position", "ascending")]))
    excluded = table.column("excluded").to_numpy(zero_copy_only=False).astype(bool)
    uid = np.asarray(table.column("unit_id").to_pylist(), dtype=object)
    exclusions = pd.DataFrame(
        {
            "unit_id": uid[excluded].astype(str),
            "reason": np.asarray(table.column("reason").to_pylist(), dtype=object)[excluded],
        }
    )
    dup = exclusions["unit_id"][exclusions["unit_id"].duplicated()]
    if len(dup):
        raise EmbeddingsError(
            f"Units excluded twice in the shards (first: {dup.head(5).tolist()}); "
            f"shards from different runs were mixed in {str(shard_dir)!r}; delete that folder and "
            "embed again (`eocausal embed CONFIG`, or `embed(..., resume=False)` from Python)."
        )
    both = sorted(set(exclusions["unit_id"]) & set(uid[~excluded].astype(str)))
    if both:
        raise EmbeddingsError(
            f"Units both embedded and excluded in the shards (first: {both[:5]}); delete "
            f"{str(shard_dir)!r} and embed again (`eocausal embed CONFIG`, or `embed(..., resume=False)`)."
        )
    emb = table.filter(pa.array(~excluded))
    if emb.num_rows == 0:
        raise NothingEmbeddedError(
            f"No unit was embedded ({len(exclusions)} excluded); see the exclusions for why."
        )
    # the streaming reader of the artifact: blocks filled batch by batch, no object per row
    long = emb.select(["unit_id", "scale", "embedding"]).replace_schema_metadata(None)
    read = Embeddings.from_table(long, source=f"the shards in {str(shard_dir)!r}")
    return Embeddings(read.unit_ids, read.vectors, metadata), exclusions


def prune_stale_rows(shard_dir: Path, fingerprints: np.ndarray) -> None:
    """Rewrite (atomically) or delete the shards that hold rows of stale fingerprints."""
    files = sorted(shard_dir.glob("rank*.parquet")) if shard_dir.is_dir() else []
    for f in files:
        table = pq.read_table(f, schema=_SHARD_SCHEMA)
        keep = fresh_rows(table, fingerprints)
        if keep.all():
            continue
        if keep.any():
            write_parquet(table.filter(pa.array(keep)), f)
        else:
            f.unlink(missing_ok=True)
