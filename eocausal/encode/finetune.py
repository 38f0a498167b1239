"""Optional cross-fitted fine-tuning of an encoder's last blocks on an auxiliary target.

A frozen foundation model may not encode what matters for an outcome. This
module fine-tunes the last transformer blocks (and the final norm) of a timm
ViT encoder, with a linear head, to predict an auxiliary target: e.g. the
outcome among control units, or a labelled wealth index. To keep the
downstream causal analysis honest the fine-tuning is cross-fitted: units are
split into K folds (whole groups, e.g. spatial clusters, stay together); the
encoder used to embed fold k was trained only on units outside fold k, so no
unit's embedding comes from a model trained on that unit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from eocausal.atomic import write_csv
from eocausal.embeddings import Embeddings
from eocausal.encode.job import _resize, embed
from eocausal.errors import InputDataError
from eocausal.splitting import make_folds

__all__ = ["FinetuneResult", "finetune_crossfit"]


@dataclass
class FinetuneResult:
    """Cross-fitted embeddings from fine-tuned encoders.

    Attributes
    ----------
    embeddings : Embeddings
        One vector per (unit, scale); units of fold k embedded by encoder k.
    exclusions : DataFrame
        ``unit_id, reason`` of units without embeddings.
    folds : DataFrame
        ``unit_id, fold, labelled``: the fold of every unit and whether it had a target.
    encoders : list of nn.Module
        Encoder k, fine-tuned on the labelled units outside fold k.
    train_loss : list of list of float
        Mean training loss per epoch, per fold (on the standardised target).
    """

    embeddings: Embeddings
    exclusions: pd.DataFrame
    folds: pd.DataFrame
    encoders: list[nn.Module]
    train_loss: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_units": int(self.embeddings.n_units),
            "n_folds": len(self.encoders),
            "fold_sizes": self.folds["fold"].value_counts().sort_index().tolist(),
            "n_labelled": int(self.folds["labelled"].sum()),
            "train_loss": [[float(v) for v in losses] for losses in self.train_loss],
            "n_excluded": len(self.exclusions),
            "metadata": self.embeddings.metadata,
        }


class _Subset(Dataset):
    """Items of ``base`` at ``positions``, exposing what the embedding job reads."""

    def __init__(self, base: Dataset, positions: np.ndarray) -> None:
        self.base = base
        self.positions = np.asarray(positions, dtype=np.int64)
        self.unit_ids = [str(base.unit_ids[p]) for p in self.positions]
        self.spec = getattr(base, "spec", None)
        self.exclusions = pd.DataFrame(columns=["unit_id", "reason"])

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.base[int(self.positions[i])]


def _trainable_tail(encoder: nn.Module, n_blocks: int) -> list[nn.Parameter]:
    """Freeze everything but the last ``n_blocks`` blocks and the final norms."""
    model = getattr(encoder, "model", None)
    blocks = getattr(model, "blocks", None)
    if blocks is None or not isinstance(blocks, nn.Sequential | nn.ModuleList):
        raise InputDataError(
            f"Fine-tuning needs a timm transformer encoder (with `.model.blocks`); "
            f"{getattr(encoder, 'name', type(encoder).__name__)!r} has none."
        )
    if not 1 <= n_blocks <= len(blocks):
        raise InputDataError(f"`n_blocks` must be in [1, {len(blocks)}]; got {n_blocks}.")
    for p in encoder.parameters():
        p.requires_grad_(False)
    tail = list(blocks[-n_blocks:])
    for name in ("norm", "fc_norm"):
        mod = getattr(model, name, None)
        if isinstance(mod, nn.Module):
            tail.append(mod)
    params = [p for m in tail for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _fit_fold(
    encoder: nn.Module,
    dataset: Dataset,
    positions: np.ndarray,
    y: np.ndarray,
    *,
    scale: str,
    n_blocks: int,
    epochs: int,
    lr: float,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    seed: int,
) -> list[float]:
    torch.manual_seed(seed)
    params = _trainable_tail(encoder, n_blocks)
    head = nn.Linear(encoder.embed_dim, 1).to(device)
    encoder.to(device)
    opt = torch.optim.AdamW([*params, *head.parameters()], lr=lr)
    target = dict(zip(positions.tolist(), y.tolist(), strict=True))
    loader = DataLoader(
        _Subset(dataset, positions),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )
    pos_of = {str(dataset.unit_ids[p]): p for p in positions.tolist()}
    losses = []
    for _ in range(epochs):
        encoder.train()
        total, count = 0.0, 0
        for batch in loader:
            keep = ~batch["excluded"].bool()
            if not keep.any():
                continue
            x = batch["chips"][scale][keep].float().to(device)
            if x.ndim != 4:
                raise InputDataError("Fine-tuning supports chips without a date axis only.")
            ids = [u for u, k in zip(batch["unit_id"], keep.tolist(), strict=True) if k]
            yt = torch.tensor([target[pos_of[u]] for u in ids], dtype=torch.float32, device=device)
            pred = head(encoder(_resize(x, encoder.input_size))).squeeze(-1)
            loss = nn.functional.mse_loss(pred, yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(ids)
            count += len(ids)
        losses.append(total / max(count, 1))
    for p in encoder.parameters():
        p.requires_grad_(False)
    return losses


def finetune_crossfit(
    dataset: Dataset,
    encoder_factory: Callable[[], nn.Module],
    target: pd.Series,
    out_dir: str | os.PathLike,
    *,
    scale: str | None = None,
    n_folds: int = 2,
    n_blocks: int = 1,
    epochs: int = 3,
    lr: float = 1e-4,
    batch_size: int = 32,
    num_workers: int = 0,
    groups: pd.Series | None = None,
    random_state: int = 0,
    device: str | None = None,
    embed_kwargs: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Fine-tune the last blocks per fold, then embed each fold with the model not trained on it.

    Parameters
    ----------
    dataset : ChipDataset
        Must expose ``unit_ids`` (item order).
    encoder_factory : callable
        Returns a fresh pretrained encoder (e.g. ``lambda: build_encoder(NAME)``).
    target : Series
        Auxiliary target indexed by unit id; units absent or NaN are unlabelled
        (not trained on, still embedded). E.g. the outcome of control units only.
    out_dir : path
        One embedding job per fold goes to ``out_dir/fold<k>``; the merged
        artifact to ``out_dir/embeddings.parquet``.
    scale : str, optional
        Scale whose chips train the model (default: the first). All scales are embedded.
    n_folds : int, default=2
    n_blocks : int, default=1
        Number of final transformer blocks to train (plus the final norm).
    epochs, lr, batch_size, num_workers : training settings
    groups : Series, optional
        Group label per unit id (e.g. spatial cluster); a group stays in one fold.
    random_state : int, default=0
        Seeds the folds and the training.
    device : str, optional
        Training device; default CUDA when available.
    embed_kwargs : dict, optional
        Passed to :func:`~eocausal.encode.job.embed`.

    Returns
    -------
    FinetuneResult
    """
    unit_ids = getattr(dataset, "unit_ids", None)
    if unit_ids is None:
        raise InputDataError(
            "finetune_crossfit needs a dataset exposing `unit_ids` (a ChipDataset)."
        )
    unit_ids = np.asarray([str(u) for u in unit_ids])
    target = pd.Series(target, dtype=float)
    target.index = target.index.astype(str)
    unknown = sorted(set(target.index) - set(unit_ids))
    if unknown:
        raise InputDataError(
            f"{len(unknown)} target ids are not units of the dataset (first: {unknown[:5]})."
        )
    y = target.reindex(unit_ids).to_numpy()
    labelled = np.isfinite(y)
    if labelled.sum() < 2 * n_folds:
        raise InputDataError(
            f"Only {int(labelled.sum())} units have a target; need at least {2 * n_folds}."
        )
    clusters = None
    if groups is not None:
        g = pd.Series(groups)
        g.index = g.index.astype(str)
        missing = [u for u in unit_ids if u not in g.index]
        if missing:
            raise InputDataError(f"`groups` lacks {len(missing)} units (first: {missing[:5]}).")
        clusters = g.reindex(unit_ids).astype(str).to_numpy()
    folds = make_folds(len(unit_ids), n_folds, clusters=clusters, seed=random_state)
    scales = [s.name for s in dataset.spec.scales] if getattr(dataset, "spec", None) else None
    scale = scale or (scales[0] if scales else next(iter(dataset[0]["chips"])))
    mu, sd = float(np.nanmean(y)), float(np.nanstd(y)) or 1.0
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    out_dir = Path(out_dir)
    encoders, losses, parts, excl = [], [], [], []
    for k in range(n_folds):
        train_pos = np.flatnonzero((folds != k) & labelled)
        enc = encoder_factory()
        losses.append(
            _fit_fold(
                enc,
                dataset,
                train_pos,
                (y[train_pos] - mu) / sd,
                scale=scale,
                n_blocks=n_blocks,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                num_workers=num_workers,
                device=dev,
                seed=random_state + k,
            )
        )
        enc.eval().cpu()
        encoders.append(enc)
        res = embed(
            _Subset(dataset, np.flatnonzero(folds == k)),
            enc,
            out_dir / f"fold{k}",
            seed=random_state,
            **(embed_kwargs or {}),
        )
        parts.append(res.embeddings)
        excl.append(res.exclusions)
    before = getattr(dataset, "exclusions", None)
    if isinstance(before, pd.DataFrame) and len(before):
        excl.insert(0, before[["unit_id", "reason"]])
    meta = dict(parts[0].metadata) | {
        "encoder": f"{parts[0].metadata.get('encoder')}+finetuned",
        "weights_sha256": None,
        "finetune": {
            "n_folds": n_folds,
            "n_blocks": n_blocks,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "scale": scale,
            "random_state": random_state,
            "n_labelled": int(labelled.sum()),
            "target": str(target.name),
            "base_weights_sha256": parts[0].metadata.get("weights_sha256"),
        },
    }
    ids = np.concatenate([p.unit_ids for p in parts])
    index = {u: i for i, u in enumerate(unit_ids)}
    order = np.argsort([index[u] for u in ids])
    blocks = {s: np.concatenate([p.block(s) for p in parts])[order] for s in parts[0].scales}
    embeddings = Embeddings(ids[order], blocks, meta)
    embeddings.save(out_dir / "embeddings.parquet")
    exclusions = pd.concat(excl, ignore_index=True)
    write_csv(exclusions, out_dir / "exclusions.csv")
    fold_table = pd.DataFrame({"unit_id": unit_ids, "fold": folds, "labelled": labelled})
    return FinetuneResult(embeddings, exclusions, fold_table, encoders, losses)
