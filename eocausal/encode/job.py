"""The embedding job: chips -> encoder -> sharded, resumable Parquet -> Embeddings.

:func:`embed` runs Lightning's ``Trainer.predict(..., return_predictions=False)``
over a map-style chip dataset (contract: :class:`eocausal.imagery.ChipDataset`
items). A :class:`ShardWriter` callback writes, per rank, one Parquet shard
every ``shard_batches`` batches with an atomic rename, so a killed job loses
at most the batches since its last shard. On restart the job reads the shards
already on disk and skips the dataset positions they cover; the final merge
checks that every (unit, scale) has exactly one embedding across all ranks and
runs (:meth:`Embeddings.from_records`).

Stale vectors are never served: every shard row carries the fingerprint of
what decided it (:mod:`eocausal.encode.fingerprint`: the unit's point or
image, the chip spec, the imagery's content, the encoder's weights and
state, the settings). On resume a row is reused only if its fingerprint is
the current one; a moved unit is embedded again on its own, a changed raster
or encoder makes every unit embedded again, with an
:class:`~eocausal.errors.EocausalWarning` saying what changed. Stale rows are
deleted from the shards once the new artifact is written, and temporary files
of killed writers are deleted when a job starts.

Layout of ``out_dir``::

    manifest.json          what the shards were computed with: fingerprint components, file digests
    shards/rank0000-<run>-000000.parquet ...
    embeddings.parquet     the merged Embeddings artifact (GeoParquet when units have points)
    exclusions.csv         unit_id, reason (before-read and read-time exclusions)
"""

from __future__ import annotations

import json
import os
import platform
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn
from torch.utils.data import DataLoader, Dataset

from eocausal.atomic import remove_stale_temporaries, write_csv, write_json, write_parquet
from eocausal.embeddings import Embeddings
from eocausal.encode.fingerprint import InputFingerprints, input_fingerprints, resolve_view
from eocausal.encode.temporal import aggregate_dates
from eocausal.errors import EmbeddingsError, EocausalWarning, InputDataError

__all__ = [
    "ChipDataModule",
    "EmbedModule",
    "EmbedResult",
    "ShardWriter",
    "embed",
    "merge_shards",
]

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
_MANIFEST_VERSION = 2
_TEMPORAL = ("mean", "concat")


@dataclass
class EmbedResult:
    """What :func:`embed` produced.

    Attributes
    ----------
    embeddings : Embeddings
        One vector per (unit, scale) for every unit that was not excluded.
    exclusions : DataFrame
        Columns ``unit_id, reason``: units without embeddings, and why.
    out_dir : Path
        Directory holding ``embeddings.parquet``, ``exclusions.csv`` and ``shards/``.
    """

    embeddings: Embeddings
    exclusions: pd.DataFrame
    out_dir: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "n_units": int(self.embeddings.n_units),
            "scales": self.embeddings.scales,
            "dims": {s: int(self.embeddings.block(s).shape[1]) for s in self.embeddings.scales},
            "n_excluded": len(self.exclusions),
            "exclusions": self.exclusions.to_dict(orient="records"),
            "out_dir": str(self.out_dir),
            "metadata": self.embeddings.metadata,
        }


class _PositionDataset(Dataset):
    """The items of ``base`` at ``positions``, each tagged with its position."""

    def __init__(self, base: Dataset, positions: np.ndarray) -> None:
        self.base = base
        self.positions = np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pos = int(self.positions[i])
        item = dict(self.base[pos])
        item["position"] = pos
        return item


class ChipDataModule(L.LightningDataModule):
    """Serves the not-yet-embedded positions of a chip dataset for prediction."""

    def __init__(
        self,
        dataset: Dataset,
        positions: np.ndarray,
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.positions = positions
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            _PositionDataset(self.dataset, self.positions),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class EmbedModule(L.LightningModule):
    """Applies a frozen encoder to every scale of a batch of chips.

    Parameters
    ----------
    encoder : nn.Module
        Maps (B, C, H, W) to (B, D); attributes ``input_size`` and ``embed_dim``.
    scales : list of str
        Scale names to embed (keys of ``batch["chips"]``).
    temporal : {"mean", "concat"}, default="mean"
        How per-date embeddings are combined when chips have a date axis.
    """

    def __init__(self, encoder: nn.Module, scales: Sequence[str], temporal: str = "mean") -> None:
        super().__init__()
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.scales = list(scales)
        self.temporal = temporal

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(_resize(x, getattr(self.encoder, "input_size", None)))

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict:
        excluded = batch["excluded"].bool().cpu().numpy()
        keep = torch.from_numpy(~excluded).to(self.device)
        out: dict[str, Any] = {
            "position": batch["position"].cpu().numpy().astype(np.int64),
            "unit_id": [str(u) for u in batch["unit_id"]],
            "excluded": excluded,
            "reason": [str(r) for r in batch["reason"]],
            "vectors": {},
        }
        if keep.any():
            for scale in self.scales:
                x = batch["chips"][scale][keep].float()
                if x.ndim == 5:  # (B, T, C, H, W): embed each date, then aggregate
                    b, t = x.shape[:2]
                    z = self._encode(x.flatten(0, 1)).float().view(b, t, -1)
                    mask = batch["masks"][scale][keep]
                    date_valid = mask.flatten(2).any(-1)
                    z = aggregate_dates(z, date_valid, self.temporal)
                else:
                    z = self._encode(x).float()
                out["vectors"][scale] = z.cpu().numpy()
        return out


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


def _read_shards(shard_dir: Path, columns: list[str] | None = None) -> pa.Table:
    files = sorted(shard_dir.glob("rank*.parquet")) if shard_dir.is_dir() else []
    if not files:
        empty = _SHARD_SCHEMA.empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(
        [pq.read_table(f, schema=_SHARD_SCHEMA, columns=columns) for f in files]
    )


def _fresh(table: pa.Table, fingerprints: np.ndarray) -> np.ndarray:
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
    table = _read_shards(Path(out_dir) / "shards")
    if fingerprints is not None:
        fingerprints = np.asarray(fingerprints, dtype=str)
        table = table.filter(pa.array(_fresh(table, fingerprints)))
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
            "shards from different runs were mixed; rerun with resume=False."
        )
    both = sorted(set(exclusions["unit_id"]) & set(uid[~excluded].astype(str)))
    if both:
        raise EmbeddingsError(
            f"Units both embedded and excluded in the shards (first: {both[:5]}); "
            "rerun with resume=False."
        )
    emb = table.filter(pa.array(~excluded))
    if emb.num_rows == 0:
        raise EmbeddingsError(
            f"No unit was embedded ({len(exclusions)} excluded); see the exclusions for why."
        )
    col = emb.column("embedding").combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    vectors = [flat[a : a + k] for a, k in zip(starts, lengths, strict=True)]
    embeddings = Embeddings.from_records(
        emb.column("unit_id").to_pylist(), emb.column("scale").to_pylist(), vectors, metadata
    )
    return embeddings, exclusions


def _package_versions() -> dict[str, str]:
    import eocausal

    out = {"python": platform.python_version()}
    if getattr(eocausal, "__version__", None):
        out["eocausal"] = str(eocausal.__version__)
    for pkg in ("eocausal", "torch", "timm", "lightning", "numpy"):
        if pkg in out:
            continue
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _spec_dict(spec: Any) -> Any:
    """The chip spec as plain data for the metadata."""
    if spec is None:
        return None
    if hasattr(spec, "to_dict"):
        return spec.to_dict()
    if is_dataclass(spec) and not isinstance(spec, type):
        return asdict(spec)
    return repr(spec)


def _scales_of(dataset: Dataset) -> list[str]:
    spec = getattr(dataset, "spec", None)
    scales = getattr(spec, "scales", None)
    if scales:
        return [getattr(s, "name", s) for s in scales]
    if len(dataset) == 0:
        raise InputDataError("The chip dataset is empty; nothing to embed.")
    return list(dataset[0]["chips"])


def _resolve_precision(precision: str | None, accelerator: str) -> str:
    if precision is not None:
        return precision
    if accelerator == "gpu" or (accelerator in ("auto", "cuda") and torch.cuda.is_available()):
        return "bf16-mixed"
    return "32-true"


def embed(
    dataset: Dataset,
    encoder: nn.Module,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    accelerator: str = "auto",
    devices: int | str | Sequence[int] = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    temporal: str = "mean",
    resume: bool = True,
    progress: bool = True,
    seed: int = 0,
    shard_batches: int = 16,
    callbacks: Sequence[L.Callback] = (),
) -> EmbedResult:
    """Embed every unit of a chip dataset at every scale, resumably.

    Parameters
    ----------
    dataset : Dataset
        Map-style dataset of chip items (``unit_id``, ``chips``, ``masks``,
        ``excluded``, ``reason``, ...), e.g. :class:`eocausal.imagery.ChipDataset`.
    encoder : nn.Module
        From :func:`~eocausal.encode.backbones.build_encoder`.
    out_dir : path
        Output directory (created).
    batch_size, num_workers : int
        DataLoader settings; workers overlap reading with encoding.
    accelerator, devices, num_nodes, strategy : Lightning Trainer settings
        ``"auto"`` uses a GPU when present. For several GPUs or nodes use
        ``strategy="ddp"`` (SLURM: ``--ntasks-per-node=devices``, ``srun``).
    precision : str, optional
        Lightning precision; default ``"bf16-mixed"`` on GPU, ``"32-true"`` on CPU.
    temporal : {"mean", "concat"}, default="mean"
        Aggregation of per-date embeddings when chips have a date axis.
    resume : bool, default=True
        Reuse the shard rows in ``out_dir`` whose input fingerprint is still
        current (same unit point or image, chip spec, imagery content,
        encoder state and settings) and embed the rest; stale rows are
        dropped (with an :class:`~eocausal.errors.EocausalWarning` naming what
        changed). With ``False`` existing shards are deleted first.
    progress : bool, default=True
        Show Lightning's progress bar.
    seed : int, default=0
        Seed for Lightning (recorded in the metadata).
    shard_batches : int, default=16
        Batches per shard.
    callbacks : sequence of Callback
        Extra Lightning callbacks (run after the shard writer).

    Returns
    -------
    EmbedResult
        Its embeddings carry the units' points and CRS when the dataset is a
        :class:`~eocausal.imagery.ChipDataset` (or a view of one) over units
        with points; ``embeddings.parquet`` is then GeoParquet.
    """
    if temporal not in _TEMPORAL:
        raise InputDataError(f"`temporal` must be one of {_TEMPORAL}; got {temporal!r}.")
    if int(batch_size) < 1 or int(shard_batches) < 1:
        raise InputDataError("`batch_size` and `shard_batches` must be >= 1.")
    out_dir = Path(out_dir)
    shard_dir = out_dir / "shards"
    for folder in (out_dir, shard_dir):
        remove_stale_temporaries(folder, recursive=False)
    scales = _scales_of(dataset)
    spec = _spec_dict(getattr(dataset, "spec", None))
    precision = _resolve_precision(precision, accelerator)
    manifest_path = out_dir / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    fps = input_fingerprints(
        dataset,
        encoder,
        settings={"scales": scales, "temporal": temporal, "precision": precision},
        known_files=old.get("files", []) if isinstance(old.get("files"), list) else [],
    )
    manifest = {
        "format_version": _MANIFEST_VERSION,
        "encoder": getattr(encoder, "name", type(encoder).__name__),
        "weights_sha256": getattr(encoder, "weights_sha256", None),
        "embed_dim": int(getattr(encoder, "embed_dim", -1)),
        "input_size": getattr(encoder, "input_size", None),
        "scales": scales,
        "temporal": temporal,
        "precision": precision,
        "n_items": len(dataset),
        "chip_spec": spec,
        "tracking": fps.tracking,
        "fingerprints": fps.components,
        "files": fps.files,
    }
    manifest = json.loads(json.dumps(manifest, default=str))
    if not resume and shard_dir.is_dir():
        for f in shard_dir.glob("rank*.parquet"):
            f.unlink(missing_ok=True)
    stored = _read_shards(shard_dir, ["unit_id", "fingerprint"])
    fresh = _fresh(stored, fps.items)
    if not fresh.all():
        _warn_stale(out_dir, old, manifest, stored, fresh, fps)
    write_json(manifest, manifest_path, indent=1)

    done = stored.column("fingerprint").filter(pa.array(fresh)).to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(~np.isin(fps.items, done.astype(str)))

    trainer = None
    if len(positions):
        L.seed_everything(seed, workers=True, verbose=False)
        on_gpu = precision.startswith("bf16") or torch.cuda.is_available()
        writer = ShardWriter(shard_dir, shard_batches, fingerprints=fps.items)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            precision=precision,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=[writer, *callbacks],
            inference_mode=True,
            default_root_dir=str(out_dir),
        )
        module = EmbedModule(encoder, scales, temporal)
        data = ChipDataModule(
            dataset, positions, batch_size=batch_size, num_workers=num_workers, pin_memory=on_gpu
        )
        trainer.predict(module, datamodule=data, return_predictions=False)
        trainer.strategy.barrier()

    metadata = {
        "encoder": manifest["encoder"],
        "weights_sha256": manifest["weights_sha256"],
        "embed_dim": manifest["embed_dim"],
        "input_size": manifest["input_size"],
        "chip_spec": spec,
        "temporal": temporal,
        "precision": precision,
        "seed": int(seed),
        "input_fingerprints": fps.components,
        "versions": _package_versions(),
    }
    embeddings, read_excl = merge_shards(out_dir, metadata, fingerprints=fps.items)
    coords, crs = _unit_points(dataset, embeddings.unit_ids)
    embeddings = Embeddings(embeddings.unit_ids, embeddings.vectors, metadata, coords, crs)
    before = getattr(dataset, "exclusions", None)
    parts = [read_excl]
    if isinstance(before, pd.DataFrame) and len(before):
        parts.insert(0, before[["unit_id", "reason"]].astype({"unit_id": str}))
    exclusions = pd.concat(parts, ignore_index=True) if len(parts) > 1 else read_excl
    if trainer is not None:
        trainer.strategy.barrier()  # every rank has merged before rank 0 prunes the shards
    if trainer is None or trainer.global_rank == 0:
        _prune_stale_rows(shard_dir, fps.items)
        embeddings.save(out_dir / "embeddings.parquet")
        write_csv(exclusions, out_dir / "exclusions.csv")
    return EmbedResult(embeddings, exclusions.reset_index(drop=True), out_dir)


def _warn_stale(
    out_dir: Path,
    old: dict[str, Any],
    manifest: dict[str, Any],
    stored: pa.Table,
    fresh: np.ndarray,
    fps: InputFingerprints,
) -> None:
    """Say which inputs changed since the shards were written, and how much is embedded again."""
    unit_ids = np.asarray(stored.column("unit_id").to_pylist(), dtype=str)
    stale_units = sorted(set(unit_ids[~fresh].tolist()))
    before, now = old.get("fingerprints") or {}, manifest["fingerprints"]
    if old.get("format_version") != _MANIFEST_VERSION:
        changed = "the shards predate input fingerprints"
    else:
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        changed = f"changed shared inputs: {keys}" if keys else (
            "no shared input changed; these units moved or their image changed"
        )
    warnings.warn(
        f"{len(stale_units)} units in {str(out_dir)!r} have stale embeddings "
        f"(first: {stale_units[:5]}; {changed}); they are embedded again and the stale rows "
        f"are dropped. {int(fresh.sum())} shard rows are still current and reused.",
        EocausalWarning,
        stacklevel=3,
    )


def _prune_stale_rows(shard_dir: Path, fingerprints: np.ndarray) -> None:
    """Rewrite (atomically) or delete the shards that hold rows of stale fingerprints."""
    files = sorted(shard_dir.glob("rank*.parquet")) if shard_dir.is_dir() else []
    for f in files:
        table = pq.read_table(f, schema=_SHARD_SCHEMA)
        keep = _fresh(table, fingerprints)
        if keep.all():
            continue
        if keep.any():
            write_parquet(table.filter(pa.array(keep)), f)
        else:
            f.unlink(missing_ok=True)


def _unit_points(dataset: Dataset, unit_ids: np.ndarray) -> tuple[np.ndarray | None, Any]:
    """Points ``(x, y)`` of ``unit_ids`` and their CRS, from the StudyUnits behind ``dataset``."""
    units = getattr(resolve_view(dataset)[0], "units", None)
    if getattr(units, "gdf", None) is None:
        return None, None
    row = {u: i for i, u in enumerate(units.unit_id.tolist())}
    idx = np.array([row[str(u)] for u in unit_ids], dtype=np.int64)
    geom = units.gdf.geometry
    xy = np.column_stack([geom.x.to_numpy(dtype=np.float64), geom.y.to_numpy(dtype=np.float64)])
    return xy[idx], units.crs
