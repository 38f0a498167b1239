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
import logging
import os
import platform
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
import numpy as np
import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from eocausal.atomic import remove_stale_temporaries, write_csv, write_json
from eocausal.embeddings import Embeddings
from eocausal.encode.shards import ShardWriter, fresh_rows, merge_shards, prune_stale_rows, read_shards
from eocausal.encode.fingerprint import InputFingerprints, input_fingerprints, resolve_view
from eocausal.encode.temporal import aggregate_dates
from eocausal.errors import EocausalWarning, InputDataError

__all__ = [
    "ChipDataModule",
    "DataPath",
    "EmbedModule",
    "EmbedResult",
    "ShardWriter",
    "data_path_for",
    "embed",
    "merge_shards",
]

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


@dataclass(frozen=True)
class DataPath:
    """How chip batches travel from the loader to the encoder.

    Attributes
    ----------
    pin_memory : bool
        Batches are collated into page-locked host memory, from which the
        copy to the device runs asynchronously.
    persistent_workers : bool
        The loader's workers are started once and kept for the whole job
        (Lightning shuts them down when ``predict`` ends).
    channels_last : bool
        The encoder's 4-D weights and every 4-D chip batch are held in
        ``torch.channels_last`` (NHWC) memory format, the layout of cuDNN's
        fastest bf16 convolutions (a ViT's patch embedding is a convolution).
    non_blocking : bool
        Chips and masks are copied to the device with ``non_blocking=True``.
    """

    pin_memory: bool
    persistent_workers: bool
    channels_last: bool
    non_blocking: bool


def data_path_for(device_type: str, num_workers: int) -> DataPath:
    """The data path for the device the job runs on: every GPU setting on CUDA, none elsewhere.

    Parameters
    ----------
    device_type : str
        ``torch.device.type`` of the Trainer's root device (``"cuda"``, ``"cpu"``, ``"mps"``, ...).
    num_workers : int
        DataLoader workers; workers persist only when there are some.

    Returns
    -------
    DataPath
        On ``"cuda"``: pinned memory, non-blocking copies, channels-last
        chips and weights, persistent workers when ``num_workers > 0``. On any
        other device all four are off, so CPU runs are unchanged (MPS copies
        block: Lightning's rule, pytorch/pytorch#83015).

    Examples
    --------
    >>> data_path_for("cuda", 8)
    DataPath(pin_memory=True, persistent_workers=True, channels_last=True, non_blocking=True)
    >>> data_path_for("cpu", 8).pin_memory
    False
    """
    on_cuda = device_type == "cuda"
    return DataPath(
        pin_memory=on_cuda,
        persistent_workers=on_cuda and int(num_workers) > 0,
        channels_last=on_cuda,
        non_blocking=on_cuda,
    )


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
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        self.dataset = dataset
        self.positions = positions
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            _PositionDataset(self.dataset, self.positions),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bar on stderr, so that a command's stdout holds only its result."""

    def init_predict_tqdm(self) -> Tqdm:
        return Tqdm(desc=self.predict_description, position=2 * self.process_position,
                    disable=self.is_disabled, leave=True, dynamic_ncols=True, file=sys.stderr,
                    smoothing=0, bar_format=self.BAR_FORMAT)


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
    data_path : DataPath, optional
        Memory format and copies (:func:`data_path_for`); default: the CPU's
        (contiguous NCHW, blocking copies). With ``channels_last`` the
        encoder's 4-D weights are converted in place.
    """

    def __init__(
        self,
        encoder: nn.Module,
        scales: Sequence[str],
        temporal: str = "mean",
        data_path: DataPath | None = None,
    ) -> None:
        super().__init__()
        self.data_path = data_path or data_path_for("cpu", 0)
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        if self.data_path.channels_last:
            self.encoder.to(memory_format=torch.channels_last)
        self.scales = list(scales)
        self.temporal = temporal

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = _resize(x, getattr(self.encoder, "input_size", None))
        if self.data_path.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """Copy the chips and masks to ``device``; ids, flags and positions stay on the host."""
        out = dict(batch)
        for key in ("chips", "masks"):
            if key in batch:
                out[key] = {
                    s: t.to(device, non_blocking=self.data_path.non_blocking)
                    for s, t in batch[key].items()
                }
        return out

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
        On CUDA the loader pins memory (and keeps its workers), chips and
        masks are copied non-blocking and the encoder sees channels-last
        batches (:func:`data_path_for`); on CPU none of this applies.
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
    stored = read_shards(shard_dir, ["unit_id", "fingerprint"])
    fresh = fresh_rows(stored, fps.items)
    if not fresh.all():
        _warn_stale(out_dir, old, manifest, stored, fresh, fps)
    write_json(manifest, manifest_path, indent=1)

    done = stored.column("fingerprint").filter(pa.array(fresh)).to_numpy(zero_copy_only=False)
    positions = np.flatnonzero(~np.isin(fps.items, done.astype(str)))

    trainer = None
    if len(positions):
        # Lightning's info banners ("GPU available", tips) are not the user's business
        logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device`")
        L.seed_everything(seed, workers=True, verbose=False)
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
            callbacks=[writer, *callbacks] + ([StderrProgressBar()] if progress else []),
            inference_mode=True,
            default_root_dir=str(out_dir),
        )
        feed = data_path_for(trainer.strategy.root_device.type, num_workers)
        module = EmbedModule(encoder, scales, temporal, feed)
        data = ChipDataModule(
            dataset,
            positions,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=feed.pin_memory,
            persistent_workers=feed.persistent_workers,
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
        prune_stale_rows(shard_dir, fps.items)
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
