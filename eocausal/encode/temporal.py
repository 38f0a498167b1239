"""Aggregation of per-date embeddings into one vector per unit and scale.

Two fixed rules run inside the embedding job (:func:`aggregate_dates`):
``"mean"`` averages the embeddings of the dates that have valid pixels, and
``"concat"`` keeps every date, concatenated in date order. The learned rule,
a small temporal transformer with attention pooling trained on the causal
target, is :class:`TemporalAttentionPooler`; it consumes ``"concat"``
embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eocausal.embeddings import Embeddings
from eocausal.errors import InputDataError
from eocausal.splitting import make_folds
from eocausal.validation import check_is_fitted

__all__ = ["TemporalAttentionPooler", "aggregate_dates", "temporal_pool"]


def aggregate_dates(z: torch.Tensor, date_valid: torch.Tensor, how: str) -> torch.Tensor:
    """Combine per-date embeddings.

    Parameters
    ----------
    z : Tensor of shape (B, T, D)
        Embeddings of each date.
    date_valid : bool Tensor of shape (B, T)
        Whether a date has any valid pixel.
    how : {"mean", "concat"}
        ``"mean"``: :math:`\\bar z_b = \\sum_t v_{bt} z_{bt} / \\sum_t v_{bt}`
        over valid dates (all dates when none is valid); ``"concat"``:
        ``z.reshape(B, T * D)``, date-major.

    Returns
    -------
    Tensor of shape (B, D) or (B, T * D)
    """
    if z.ndim != 3 or date_valid.shape != z.shape[:2]:
        raise InputDataError(
            f"Expected z of shape (B, T, D) and date_valid (B, T); got {tuple(z.shape)} "
            f"and {tuple(date_valid.shape)}."
        )
    if how == "concat":
        return z.reshape(z.shape[0], -1)
    if how == "mean":
        w = date_valid.to(z.dtype)
        none = w.sum(1) == 0
        w[none] = 1.0
        return (w.unsqueeze(-1) * z).sum(1) / w.sum(1, keepdim=True)
    raise InputDataError(f"Unknown temporal aggregation {how!r}; use 'mean' or 'concat'.")


class _AttentionPoolNet(nn.Module):
    """Date projection + positional embedding + transformer encoder + attention pooling."""

    def __init__(
        self, n_dates: int, in_dim: int, d_model: int, n_heads: int, n_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, n_dates, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.query = nn.Parameter(torch.zeros(d_model))
        self.head = nn.Linear(d_model, 1)

    def pool(self, z: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.proj(z) + self.pos, src_key_padding_mask=~valid)
        score = (h @ self.query) / h.shape[-1] ** 0.5
        weights = torch.softmax(score.masked_fill(~valid, float("-inf")), dim=1)
        return (weights.unsqueeze(-1) * h).sum(1), weights

    def forward(self, z: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(z, valid)[0]).squeeze(-1)


class TemporalAttentionPooler:
    """A small temporal transformer with attention pooling, trained on the causal target.

    Per-date embeddings of a unit (``"concat"`` output of the embedding job) go
    through a linear projection, a learned date embedding and a transformer
    encoder; a learned query attends over the valid dates and the weighted sum
    is the unit's representation. The network is trained to predict a target
    (the outcome, or the treatment for a propensity model), as in the video
    mode of causalimages. Training is cross-fitted: the representation of a
    unit comes from the network trained on the other folds, so no unit's
    features were fitted to its own target.

    Parameters
    ----------
    n_dates : int
        Number of dates T.
    d_model : int, default=32
        Width of the transformer and of the pooled representation.
    n_heads : int, default=4
    n_layers : int, default=1
    dropout : float, default=0.1
    task : {"regression", "classification"}, default="regression"
        Squared error, or logistic loss for a 0/1 target.
    n_folds : int, default=2
        Cross-fitting folds (>= 2).
    max_epochs : int, default=100
    lr : float, default=3e-3
    weight_decay : float, default=1e-4
    batch_size : int, default=64
    random_state : int, default=0

    Attributes
    ----------
    models_ : list of nn.Module
        One network per fold.
    folds_ : ndarray of shape (n_units,)
        Fold of each training unit.
    representation_oof_ : ndarray of shape (n_units, d_model)
        Cross-fitted pooled representation of the training units.
    attention_oof_ : ndarray of shape (n_units, n_dates)
        Cross-fitted attention weight of each date.
    prediction_oof_ : ndarray of shape (n_units,)
        Cross-fitted prediction of the target.

    Notes
    -----
    With projected, position-encoded and transformed date tokens
    :math:`h_{t}`, the pooled representation is

    .. math:: r = \\sum_t a_t h_t, \\qquad a = \\mathrm{softmax}_{t\\,:\\,v_t}(q^\\top h_t / \\sqrt{d})

    over valid dates :math:`v_t`, and the target is predicted by :math:`w^\\top r + b`.

    References
    ----------
    Jerzak, Johansson, Daoud (2023). Image-based treatment effect heterogeneity.
    CLeaR; R package causalimages (video / image-sequence mode).
    """

    def __init__(
        self,
        n_dates: int,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        n_layers: int = 1,
        dropout: float = 0.1,
        task: str = "regression",
        n_folds: int = 2,
        max_epochs: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        random_state: int = 0,
    ) -> None:
        self.n_dates = n_dates
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dropout = dropout
        self.task = task
        self.n_folds = n_folds
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.random_state = random_state

    def _inputs(
        self, z: np.ndarray, date_valid: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = np.asarray(z, dtype=np.float32)
        if z.ndim == 2:
            if z.shape[1] % self.n_dates:
                raise InputDataError(
                    f"Embeddings of width {z.shape[1]} cannot be split into n_dates={self.n_dates} "
                    "dates; pass the 'concat' embeddings of the same job."
                )
            z = z.reshape(z.shape[0], self.n_dates, -1)
        if z.ndim != 3 or z.shape[1] != self.n_dates:
            raise InputDataError(
                f"Expected embeddings of shape (n, {self.n_dates}, D) or (n, {self.n_dates} * D); "
                f"got {z.shape}."
            )
        if not np.isfinite(z).all():
            raise InputDataError("Per-date embeddings contain non-finite values.")
        valid = np.ones(z.shape[:2], bool) if date_valid is None else np.asarray(date_valid, bool)
        if valid.shape != z.shape[:2]:
            raise InputDataError(f"`date_valid` must have shape {z.shape[:2]}; got {valid.shape}.")
        empty = ~valid.any(1)
        valid = valid.copy()
        valid[empty] = True  # no valid date: attend over all (their embeddings are of zero chips)
        return torch.from_numpy(z), torch.from_numpy(valid)

    def _train(self, z: torch.Tensor, valid: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        net = _AttentionPoolNet(
            self.n_dates, z.shape[-1], self.d_model, self.n_heads, self.n_layers, self.dropout
        )
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss() if self.task == "classification" else nn.MSELoss()
        gen = torch.Generator().manual_seed(seed)
        n = z.shape[0]
        net.train()
        for _ in range(self.max_epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = perm[start : start + self.batch_size]
                opt.zero_grad()
                loss = loss_fn(net(z[idx], valid[idx]), y[idx])
                loss.backward()
                opt.step()
        return net.eval()

    def fit(
        self,
        z: np.ndarray,
        y: np.ndarray,
        *,
        date_valid: np.ndarray | None = None,
        groups: np.ndarray | None = None,
    ) -> TemporalAttentionPooler:
        """Fit one network per fold.

        Parameters
        ----------
        z : ndarray of shape (n, T, D) or (n, T * D)
            Per-date embeddings.
        y : ndarray of shape (n,)
            Target (outcome, or 0/1 treatment with ``task="classification"``).
        date_valid : bool ndarray of shape (n, T), optional
        groups : ndarray of shape (n,), optional
            Units of a group (e.g. spatial cluster) share a fold.
        """
        if self.task not in ("regression", "classification"):
            raise InputDataError(
                f"`task` must be 'regression' or 'classification'; got {self.task!r}."
            )
        if self.d_model % self.n_heads:
            raise InputDataError(
                f"`d_model`={self.d_model} must be divisible by `n_heads`={self.n_heads}."
            )
        zt, vt = self._inputs(z, date_valid)
        y = np.asarray(y, dtype=np.float32)
        if y.shape != (zt.shape[0],) or not np.isfinite(y).all():
            raise InputDataError(f"`y` must be finite with shape ({zt.shape[0]},); got {y.shape}.")
        if self.task == "classification" and not np.isin(y, (0.0, 1.0)).all():
            raise InputDataError("task='classification' needs a 0/1 target.")
        folds = make_folds(
            len(y),
            self.n_folds,
            clusters=groups,
            stratify=y if self.task == "classification" else None,
            seed=self.random_state,
        )
        self.y_mean_ = float(y.mean()) if self.task == "regression" else 0.0
        self.y_scale_ = (float(y.std()) or 1.0) if self.task == "regression" else 1.0
        yt = torch.from_numpy((y - self.y_mean_) / self.y_scale_)
        rep = np.zeros((len(y), self.d_model), np.float32)
        att = np.zeros((len(y), self.n_dates), np.float32)
        pred = np.zeros(len(y), np.float32)
        self.models_ = []
        for k in range(self.n_folds):
            train, test = folds != k, folds == k
            net = self._train(zt[train], vt[train], yt[train], self.random_state + k)
            with torch.no_grad():
                r, a = net.pool(zt[test], vt[test])
                rep[test], att[test] = r.numpy(), a.numpy()
                pred[test] = net.head(r).squeeze(-1).numpy()
            self.models_.append(net)
        self.folds_ = folds
        self.representation_oof_ = rep
        self.attention_oof_ = att
        out = pred * self.y_scale_ + self.y_mean_
        self.prediction_oof_ = 1 / (1 + np.exp(-pred)) if self.task == "classification" else out
        return self

    def transform(self, z: np.ndarray, *, date_valid: np.ndarray | None = None) -> np.ndarray:
        """Pooled representation of new units: the average over the fold networks.

        For the training units use ``representation_oof_`` (cross-fitted) instead.
        """
        check_is_fitted(self, "models_")
        zt, vt = self._inputs(z, date_valid)
        with torch.no_grad():
            reps = [net.pool(zt, vt)[0].numpy() for net in self.models_]
        return np.mean(reps, axis=0)

    def get_params(self, deep: bool = True) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "n_dates",
                "d_model",
                "n_heads",
                "n_layers",
                "dropout",
                "task",
                "n_folds",
                "max_epochs",
                "lr",
                "weight_decay",
                "batch_size",
                "random_state",
            )
        }


def temporal_pool(
    embeddings: Embeddings,
    y: np.ndarray,
    *,
    n_dates: int,
    scales: list[str] | None = None,
    date_valid: dict[str, np.ndarray] | None = None,
    groups: np.ndarray | None = None,
    **params: object,
) -> Embeddings:
    """Replace 'concat' per-date blocks by cross-fitted attention-pooled representations.

    Parameters
    ----------
    embeddings : Embeddings
        From an embedding job run with ``temporal="concat"``.
    y : ndarray of shape (n_units,)
        Target aligned with ``embeddings.unit_ids``.
    n_dates : int
    scales : list of str, optional
        Scales to pool (default all).
    date_valid : dict of scale -> bool ndarray (n_units, n_dates), optional
    groups : ndarray of shape (n_units,), optional
    **params
        :class:`TemporalAttentionPooler` parameters.

    Returns
    -------
    Embeddings
        With ``metadata["temporal"] = "transformer"`` and the pooler settings.
    """
    if embeddings.metadata.get("temporal", "concat") != "concat":
        raise InputDataError(
            f"temporal_pool needs embeddings made with temporal='concat'; these used "
            f"{embeddings.metadata.get('temporal')!r}. Re-run the embedding job with temporal='concat'."
        )
    blocks = dict(embeddings.vectors)
    settings = {}
    for s in scales or embeddings.scales:
        pooler = TemporalAttentionPooler(n_dates, **params).fit(
            embeddings.block(s),
            y,
            date_valid=None if date_valid is None else date_valid.get(s),
            groups=groups,
        )
        blocks[s] = pooler.representation_oof_
        settings = pooler.get_params()
    meta = dict(embeddings.metadata) | {"temporal": "transformer", "temporal_pooler": settings}
    return Embeddings(embeddings.unit_ids, blocks, meta)
