"""The chips and embeddings stages: the chip dataset (exclusions, preview) and the
Embeddings artifact, reused whenever the units' locations, the imagery, the chip spec
and the encoder are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_csv
from eocausal.config import RunConfig
from eocausal.embeddings import Embeddings
from eocausal.errors import EocausalError
from eocausal.pipeline.folder import file_fingerprint, fingerprint, is_current, write_manifest
from eocausal.pipeline.study import Log, PreparedStudy, _nolog, prepare_study

__all__ = ["EmbeddingStage", "build_encoder", "embed_stage", "run_chips", "run_embed"]

#: units whose chips whiten the MOSAIKS filters
_WHITENING_UNITS = 128

#: encoder settings that change how the job runs, not the vectors it writes
_RUNTIME_FIELDS = ("batch_size", "num_workers", "accelerator", "devices", "num_nodes", "strategy", "cache_dir")


def chips_key(cfg: RunConfig, study: PreparedStudy) -> str:
    """What determines the chips: unit locations, imagery files, chip spec, seed (preview)."""
    return fingerprint({
        "locations": study.locations_key(),
        "imagery": study.imagery_key(),
        "imagery_config": cfg.imagery.model_dump(mode="json", exclude={"paths", "precut"}),
        "seed": cfg.seed,
    })


def embed_key(cfg: RunConfig, study: PreparedStudy) -> str:
    """What determines the vectors: the chips, the encoder and its weights, the seed (MOSAIKS)."""
    encoder = cfg.encoder.model_dump(mode="json", exclude=set(_RUNTIME_FIELDS) | {"weights_path"})
    return fingerprint({
        "chips": chips_key(cfg, study),
        "encoder": encoder,
        "weights": file_fingerprint(cfg.encoder.weights_path),
    })


@dataclass
class EmbeddingStage:
    """The embeddings of a run and how they were obtained.

    Attributes
    ----------
    embeddings : Embeddings
    exclusions : DataFrame
        Units without embeddings (``unit_id``, ``reason``), including those excluded
        before reading.
    out_dir : Path
    key : str
        The stage's manifest key.
    preview : Path
        The chip preview image.
    encoder, dataset : object or None
        The encoder and chip dataset when the stage ran now; ``None`` when it was reused.
    """

    embeddings: Embeddings
    exclusions: pd.DataFrame
    out_dir: Path
    key: str
    preview: Path
    encoder: Any = None
    dataset: Any = None


def embed_stage(cfg: RunConfig, study: PreparedStudy, *, log: Log = _nolog, progress: bool = True,
                reuse_only: bool = False) -> EmbeddingStage:
    """The embeddings of ``study``: reused when their manifest is current, else computed.

    With ``reuse_only=True`` a missing or stale artifact is an error (``eocausal evaluate``).
    """
    key = embed_key(cfg, study)
    out = cfg.run_dir / "embeddings"
    chips_dir = cfg.run_dir / "chips"
    if is_current(out, key, ["embeddings.parquet", "exclusions.csv"]) and (chips_dir / "preview.png").exists():
        log(f"embeddings: inputs unchanged, reusing {out / 'embeddings.parquet'}")
        read_time = pd.read_csv(out / "exclusions.csv", dtype=str, keep_default_na=False)
        exclusions = pd.concat([study.exclusions, read_time], ignore_index=True)
        return EmbeddingStage(Embeddings.load(out / "embeddings.parquet"), exclusions, out, key,
                              chips_dir / "preview.png")
    if reuse_only:
        raise EocausalError(
            f"the embeddings in {str(out)!r} are missing or were computed from other units, imagery "
            "or encoder settings; run `eocausal embed CONFIG` (or `eocausal run CONFIG`) first"
        )
    dataset, preview = run_chips(cfg, study, log=log)
    try:
        result, encoder = run_embed(cfg, dataset, log=log, progress=progress)
    except EocausalError:
        _stop_if_all_excluded(cfg, study, dataset)
        raise
    exclusions = pd.concat([study.exclusions, result.exclusions], ignore_index=True)
    write_manifest(out, key, {"chips": chips_key(cfg, study)})
    return EmbeddingStage(result.embeddings, exclusions, out, key, Path(preview), encoder, dataset)


def _stop_if_all_excluded(cfg: RunConfig, study: PreparedStudy, dataset: Any) -> None:
    """When no unit has chips, list every unit with its reason in chips/exclusions.csv and say so."""
    from eocausal.imagery.exclusions import all_excluded_error

    read_time = dataset.scan_exclusions(num_workers=cfg.encoder.num_workers)
    if len(read_time) < len(dataset) + len(dataset.exclusions):
        return  # some unit has chips: the error was another one
    table = pd.concat([study.exclusions, read_time], ignore_index=True)
    path = cfg.run_dir / "chips" / "exclusions.csv"
    write_csv(table, path)
    raise all_excluded_error(table, len(table), table_path=path)


def run_chips(
    cfg: RunConfig, study: PreparedStudy | None = None, *, scan: bool = False, log: Log = _nolog
):
    """Build the chip dataset; write its exclusion table and a preview image.

    With ``scan=True`` every unit's chips are read once, so the table also holds the
    units excluded at read time (too little valid imagery, unreadable files); without
    it, only those excluded before reading (outside all imagery) are known yet, and the
    embedding stage records the others.
    """
    from eocausal.imagery import ChipDataset, write_chip_preview

    study = study or prepare_study(cfg, log=log)
    dataset = ChipDataset(study.units, study.source, study.spec)
    out = cfg.run_dir / "chips"
    out.mkdir(parents=True, exist_ok=True)
    key = chips_key(cfg, study)
    if scan:
        log(f"reading the chips of {len(dataset)} units to find every exclusion ...")
        table = dataset.scan_exclusions(num_workers=cfg.encoder.num_workers)
    else:
        table = dataset.exclusions
    table = pd.concat([study.exclusions, table], ignore_index=True)
    write_csv(table, out / "exclusions.csv")
    preview = write_chip_preview(dataset, out / "preview.png", seed=cfg.seed)
    write_manifest(out, key, {"locations": study.locations_key(), "imagery": study.imagery_key()})
    when = "in all" if scan else "before reading"
    log(f"chips: {len(dataset)} units, {len(table)} excluded {when}; preview {preview}")
    return dataset, preview


def build_encoder(cfg: RunConfig, dataset):
    """The configured encoder; MOSAIKS filters are whitened on a seeded sample of the chips.

    Whitening uses images only (no treatment or outcome), so fitting it on all
    units leaks nothing into the causal estimates. The ridge added to the patch
    covariance is 1% of the chips' pixel variance, so that the threshold of 1
    in the rectifier is on the whitened scale whatever the reflectance units.
    """
    import torch

    from eocausal.encode import MosaiksEncoder, build_encoder

    e = cfg.encoder
    in_chans = len(dataset.band_names)
    if e.name != "mosaiks":
        return build_encoder(e.name, weights_path=e.weights_path, cache_dir=e.cache_dir, in_chans=in_chans,
                             sha256=e.weights_sha256)
    encoder = MosaiksEncoder(in_chans, n_features=e.n_features, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    sample = []  # indices of up to 128 units with valid chips, in a seeded random order
    for i in rng.permutation(len(dataset)):
        if not dataset[int(i)]["excluded"]:
            sample.append(int(i))
        if len(sample) == _WHITENING_UNITS:
            break
    if not sample:
        raise EocausalError("no unit has a valid chip; see the exclusion table for the reasons")
    # one encoder serves every scale; whiten on the scales of the largest output size, streamed
    # in batches (scale by scale, units in the sampled order) so memory is bounded by a batch
    size = max(sc.out_px for sc in dataset.spec.scales)
    scales = [sc.name for sc in dataset.spec.scales if sc.out_px == size]

    def batches():
        for name in scales:
            for start in range(0, len(sample), e.batch_size):
                chunk = [dataset[i]["chips"][name] for i in sample[start:start + e.batch_size]]
                yield torch.stack(chunk).flatten(0, -4)

    first = dataset[sample[0]]["chips"][scales[0]]
    n_dates = first.shape[0] if first.ndim == 4 else 1
    return encoder.fit_whitening(batches(), n_chips=len(scales) * len(sample) * n_dates,
                                 eps=1e-2, relative_eps=True)


def run_embed(cfg: RunConfig, dataset=None, *, out_dir: Path | None = None, encoder=None,
              log: Log = _nolog, progress: bool = True):
    """Embed the units of ``dataset`` (built from the config when omitted); resumable."""
    from eocausal.encode import embed

    if dataset is None:
        dataset, _ = run_chips(cfg, log=log)
    encoder = encoder or build_encoder(cfg, dataset)
    e = cfg.encoder
    result = embed(
        dataset,
        encoder,
        out_dir or (cfg.run_dir / "embeddings"),
        batch_size=e.batch_size,
        num_workers=e.num_workers,
        accelerator=e.accelerator,
        devices=e.devices,
        num_nodes=e.num_nodes,
        strategy=e.strategy,
        precision=e.precision,
        temporal=e.temporal,
        resume=True,
        progress=progress,
        seed=cfg.seed,
    )
    log(
        f"embeddings: {result.embeddings.n_units} units x {len(result.embeddings.scales)} scales "
        f"-> {result.out_dir}"
    )
    return result, encoder


