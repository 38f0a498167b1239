"""Image-type heterogeneity: a variational model of treatment-effect types read from images.

The model of Jerzak, Johansson and Daoud (CLeaR 2023; R package ``causalimages``)
as described in METHODS.md section 6. Each unit's image M_i decides, through a
network f, a soft assignment to one of K latent *image types*; each type k has
its own treatment effect τ_k, and the per-unit effect is the assignment-weighted
mix of the type effects:

.. math::

    Y_i \\sim \\mathcal N\\big(\\mu_0(M_i, X_i) + W_i \\textstyle\\sum_k z_{ik}\\tau_k,\\ \\sigma^2\\big),
    \\quad z_i \\sim \\mathrm{RelaxedOneHotCategorical}(f(M_i), t),
    \\quad \\tau_k \\sim \\mathcal N(m_k, s_k^2).

This is a torch stage: it lives outside :mod:`eocausal.estimate`, whose modules
never import torch. It accepts chips (a small convolutional network) or
precomputed embeddings (an MLP).

References
----------
Jerzak, C. T., Johansson, F., Daoud, A. (2023). "Image-based treatment effect
heterogeneity". Proceedings of the Second Conference on Causal Learning and
Reasoning (CLeaR), PMLR 213. https://arxiv.org/abs/2206.06417
Jang, E., Gu, S., Poole, B. (2017). "Categorical reparameterization with
Gumbel-softmax"; Maddison, Mnih, Teh (2017), "The concrete distribution".
"""

from __future__ import annotations

import pickle  # only for the error type torch.load raises on bad files
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from torch import nn
from torch.distributions import Normal, RelaxedOneHotCategorical, kl_divergence
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from eocausal import __version__
from eocausal.errors import EstimationError, InputDataError, NotFittedError
from eocausal.estimate.validation import check_features, check_treatment_outcome

__all__ = ["ImageTypeModel", "ImageTypeResult"]

_SHOW = 5
_PREDICT_BATCH = 512
_FORMAT = "eocausal.ImageTypeModel/1"


@dataclass
class ImageTypeResult:
    """Summary of a fitted :class:`ImageTypeModel` (JSON-ready through :meth:`to_dict`).

    Attributes
    ----------
    n_types : int
    input_kind : {"chips", "embeddings"}
    type_effects : list of dict
        One entry per type, ordered by effect (type 0 = lowest): ``type``,
        ``mean`` and ``sd`` of the variational posterior of τ_k (outcome units)
        and ``share``, the mean assignment probability over the training units.
    ate : float
        Implied average effect, the (weighted) mean over units of Σ_k p_ik m_k.
    difference_in_means : float
        The prior centre of every τ_k.
    noise_sd : float
        Fitted σ of the Gaussian likelihood (outcome units).
    final_loss : float
        Negative ELBO per unit in the last epoch (standardised outcome).
    n_units : int
    """

    n_types: int
    input_kind: str
    type_effects: list[dict[str, float]]
    ate: float
    difference_in_means: float
    noise_sd: float
    final_loss: float
    n_units: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (floats, ints, strings, lists, dicts)."""
        return {
            "n_types": int(self.n_types),
            "input_kind": self.input_kind,
            "type_effects": [
                {k: (int(v) if k == "type" else float(v)) for k, v in row.items()}
                for row in self.type_effects
            ],
            "ate": float(self.ate),
            "difference_in_means": float(self.difference_in_means),
            "noise_sd": float(self.noise_sd),
            "final_loss": float(self.final_loss),
            "n_units": int(self.n_units),
            "params": dict(self.params),
        }


class _Trunk(nn.Module):
    """Image (B, C, H, W) or embedding (B, D) -> features (B, hidden)."""

    def __init__(self, kind: str, n_in: int, hidden: int) -> None:
        super().__init__()
        if kind == "chips":
            self.layers = nn.Sequential(
                nn.Conv2d(n_in, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        else:
            self.layers = nn.Sequential(
                nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            )

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.layers(m)


class _TypeNet(nn.Module):
    """Type logits f(M), baseline μ0(M, X) and the variational posteriors of τ."""

    def __init__(
        self,
        kind: str,
        n_in: int,
        n_cov: int,
        hidden: int,
        n_types: int,
        tau_init: np.ndarray,
        tau_sd_init: float,
    ) -> None:
        super().__init__()
        self.type_trunk = _Trunk(kind, n_in, hidden)
        self.type_head = nn.Linear(hidden, n_types)
        self.base_trunk = _Trunk(kind, n_in, hidden)
        self.base_head = nn.Sequential(
            nn.Linear(hidden + n_cov, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.tau_mean = nn.Parameter(torch.as_tensor(tau_init, dtype=torch.float32))
        rho = float(np.log(np.expm1(tau_sd_init)))
        self.tau_rho = nn.Parameter(torch.full((n_types,), rho, dtype=torch.float32))
        self.log_sigma = nn.Parameter(torch.zeros((), dtype=torch.float32))

    def tau_sd(self) -> torch.Tensor:
        return nn.functional.softplus(self.tau_rho) + 1e-6

    def logits(self, m: torch.Tensor) -> torch.Tensor:
        return self.type_head(self.type_trunk(m))

    def baseline(self, m: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        h = self.base_trunk(m)
        if x is not None:
            h = torch.cat([h, x], dim=1)
        return self.base_head(h).squeeze(1)


def _bad_rows(mask: np.ndarray, unit_ids) -> str:
    rows = np.flatnonzero(mask)
    shown = rows[:_SHOW]
    names = (
        ", ".join(repr(str(unit_ids[r])) for r in shown)
        if unit_ids is not None
        else ", ".join(str(int(r)) for r in shown)
    )
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{'units' if unit_ids is not None else 'rows'} {names}{more}"


def _check_images(images, *, unit_ids=None) -> np.ndarray:
    """Return images as float32 (n, C, H, W) or (n, D); raise on other shapes or non-finite values."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    try:
        arr = np.asarray(images, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputDataError(
            "`images` must be a numeric array of chips (n, C, H, W) or embeddings (n, D); "
            f"got {type(images).__name__} that cannot be read as float32."
        ) from None
    if arr.ndim not in (2, 4):
        raise InputDataError(
            f"`images` must be chips of shape (n, C, H, W) or embeddings of shape (n, D); got shape "
            f"{arr.shape}. Stack time steps into channels or average them first."
        )
    if arr.shape[0] == 0 or 0 in arr.shape[1:]:
        raise InputDataError(
            f"`images` is empty (shape {arr.shape}); give at least one unit with data."
        )
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if not finite.all():
        raise InputDataError(
            f"`images` has NaN or infinite values at {_bad_rows(~finite, unit_ids)}; fill masked "
            "pixels (e.g. with the chip mean) or exclude these units before fitting."
        )
    return arr


def _check_int(name: str, value, low: int) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise InputDataError(
            f"The {name!r} parameter of ImageTypeModel must be an int >= {low}. Got {value!r} instead."
        )


def _check_positive(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        not isinstance(value, Real)
        or isinstance(value, bool)
        or not np.isfinite(value)
        or value <= 0
    ):
        extra = " or None" if allow_none else ""
        raise InputDataError(
            f"The {name!r} parameter of ImageTypeModel must be a positive float{extra}. "
            f"Got {value!r} instead."
        )


class ImageTypeModel(BaseEstimator):
    """Image-type heterogeneity model (Jerzak, Johansson, Daoud 2023), trained by variational SGD.

    Parameters
    ----------
    n_types : int, default=2
        Number of latent image types K (>= 2).
    hidden : int, default=32
        Width of the networks (conv channels for chips, MLP units for embeddings).
    epochs : int, default=150
        Passes over the training units.
    lr : float, default=5e-3
        Adam learning rate.
    batch_size : int, default=128
        Units per SGD step.
    temperature : float, default=1.0
        Temperature t of the RelaxedOneHotCategorical (Gumbel-softmax) assignment.
    n_mc : int, default=4
        Monte Carlo draws of (z, τ) per SGD step; also the default number of
        draws in :meth:`salience`.
    prior_sd : float, default=None
        Prior sd of every τ_k in outcome units; ``None`` uses sd(Y).
    weight_decay : float, default=1e-4
        L2 penalty on the network weights (not on the τ posteriors).
    random_state : int, default=None
        Seeds initialisation, batching and every Monte Carlo draw; the same seed
        gives the same numbers on CPU.
    device : str, default="cpu"
        Torch device for training and prediction.

    Attributes
    ----------
    type_probabilities_ : ndarray of shape (n, n_types)
        p_ik = softmax(f(M_i))_k for the training units; columns ordered by effect.
    type_effects_ : pandas.DataFrame
        Columns ``type`` (0 = lowest effect), ``mean`` and ``sd`` (variational
        posterior of τ_k, outcome units) and ``share`` (mean p_ik).
    effect_ : ndarray of shape (n,)
        Per-unit effect Σ_k p_ik m_k of the training units.
    ate_ : float
        Implied ATE: the mean of ``effect_`` (weighted by ``sample_weight`` if given).
    difference_in_means_ : float
        (Weighted) difference in mean outcomes, the prior centre of each τ_k.
    noise_sd_ : float
        Fitted σ of the likelihood, outcome units.
    history_ : ndarray of shape (epochs,)
        Negative ELBO per unit and epoch (standardised outcome scale).
    input_kind_ : {"chips", "embeddings"}
    input_shape_ : tuple
        (C, H, W) or (D,) of the training inputs.
    n_covariates_ : int
    unit_ids_ : ndarray of str or None
        As passed to ``fit``.
    image_center_, image_scale_ : ndarray of shape (C, 1, 1) or (D,)
        Input standardisation fitted on the training units.
    y_center_, y_scale_ : float
        Outcome standardisation (weighted mean and sd of Y).
    seed_ : int
        Torch seed drawn from ``random_state``; also seeds :meth:`salience`.

    Notes
    -----
    With W_i the treatment, X_i optional covariates and all quantities on
    standardised inputs and outcome, the model is

    .. math::

        Y_i = \\mu_0(M_i, X_i) + W_i \\sum_{k=1}^K z_{ik}\\tau_k + \\varepsilon_i,\\quad
        \\varepsilon_i \\sim \\mathcal N(0, \\sigma^2),

        z_i \\sim \\mathrm{RelaxedOneHotCategorical}(\\mathrm{logits}=f(M_i), t),\\quad
        \\tau_k \\sim \\mathcal N(\\bar Y_1 - \\bar Y_0,\\ s_0^2).

    The variational family is q(τ_k) = N(m_k, s_k²), independent over k; f,
    μ0, σ, m and s maximise the ELBO

    .. math::

        \\sum_i w_i\\, \\mathbb E_{q(\\tau)\\,p(z_i|M_i)} \\log \\mathcal N(Y_i \\mid \\cdot)
        - \\sum_k \\mathrm{KL}\\big(q(\\tau_k)\\,\\|\\,p(\\tau_k)\\big),

    estimated with ``n_mc`` reparameterised draws per minibatch and Adam.
    After training the types are relabelled so that m_0 < m_1 < ... (stable
    output across seeds). The per-unit effect uses the expected assignment:
    τ̂_i = Σ_k p_ik m_k with p_i = softmax(f(M_i)).

    WARNING: the type effects are fitted on the same units they describe; they
    are descriptive. For an honest test of heterogeneity, score held-out units
    with :meth:`effect` and evaluate them with RATE (:mod:`eocausal.evaluate`).
    In observational data the treatment must be unconfounded given (M, X).

    References
    ----------
    Jerzak, Johansson, Daoud (2023), "Image-based treatment effect
    heterogeneity", CLeaR, PMLR 213.

    Examples
    --------
    >>> import numpy as np
    >>> from eocausal.image_types import ImageTypeModel
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(200, 4)).astype("float32")
    >>> T = rng.integers(0, 2, 200)
    >>> Y = T * 2.0 * (emb[:, 0] > 0) + rng.normal(size=200)
    >>> model = ImageTypeModel(epochs=5, random_state=0).fit(emb, T, Y)
    >>> model.type_probabilities_.shape
    (200, 2)
    """

    def __init__(
        self,
        n_types: int = 2,
        *,
        hidden: int = 32,
        epochs: int = 150,
        lr: float = 5e-3,
        batch_size: int = 128,
        temperature: float = 1.0,
        n_mc: int = 4,
        prior_sd: float | None = None,
        weight_decay: float = 1e-4,
        random_state: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.n_types = n_types
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.n_mc = n_mc
        self.prior_sd = prior_sd
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> torch.device:
        _check_int("n_types", self.n_types, 2)
        _check_int("hidden", self.hidden, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("n_mc", self.n_mc, 1)
        _check_positive("lr", self.lr)
        _check_positive("temperature", self.temperature)
        _check_positive("prior_sd", self.prior_sd, allow_none=True)
        if (
            not isinstance(self.weight_decay, Real)
            or not np.isfinite(self.weight_decay)
            or self.weight_decay < 0
        ):
            raise InputDataError(
                "The 'weight_decay' parameter of ImageTypeModel must be a float >= 0. "
                f"Got {self.weight_decay!r} instead."
            )
        if self.random_state is not None and (
            not isinstance(self.random_state, Integral) or isinstance(self.random_state, bool)
        ):
            raise InputDataError(
                "The 'random_state' parameter of ImageTypeModel must be an int or None. "
                f"Got {self.random_state!r} instead."
            )
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise InputDataError(
                f"The 'device' parameter of ImageTypeModel must be a torch device such as 'cpu' or "
                f"'cuda:0'. Got {self.device!r} instead."
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputDataError(
                f"device={self.device!r} was requested but CUDA is not available; use device='cpu'."
            )
        return device

    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(
                "This ImageTypeModel instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _check_new_inputs(self, images, covariates) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_fitted()
        arr = _check_images(images)
        if arr.shape[1:] != self.input_shape_:
            kind = "chips (C, H, W)" if self.input_kind_ == "chips" else "embeddings (D,)"
            raise InputDataError(
                f"`images` has per-unit shape {arr.shape[1:]} but the model was fitted on {kind} of "
                f"shape {self.input_shape_}; cut chips (or embed) exactly as for training."
            )
        cov = None
        if covariates is not None:
            cov = check_features(covariates, n=arr.shape[0], name="covariates")
            if cov.shape[1] != self.n_covariates_:
                raise InputDataError(
                    f"`covariates` has {cov.shape[1]} columns but the model was fitted with "
                    f"{self.n_covariates_}; pass the same covariate columns as in fit."
                )
        elif self.n_covariates_:
            raise InputDataError(
                f"The model was fitted with {self.n_covariates_} covariates; pass `covariates`."
            )
        return arr, cov

    # ------------------------------------------------------------- internals
    def _set_image_scaling(self, center: np.ndarray, scale: np.ndarray) -> None:
        self.image_center_ = np.asarray(center, dtype=np.float32)
        self.image_scale_ = np.asarray(scale, dtype=np.float32)
        self._img_center = torch.from_numpy(self.image_center_)
        self._img_scale = torch.from_numpy(self.image_scale_)

    def _scale_images(self, arr: np.ndarray) -> torch.Tensor:
        t = torch.tensor(arr, dtype=torch.float32)
        return ((t - self._img_center) / self._img_scale).to(self.device_)

    def _scale_covariates(self, cov: np.ndarray | None) -> torch.Tensor | None:
        if cov is None:
            return None
        return torch.as_tensor(
            (cov - self.cov_center_) / self.cov_scale_, dtype=torch.float32, device=self.device_
        )

    def _fork_rng(self):
        devices = [self.device_] if self.device_.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    # -------------------------------------------------------------------- fit
    def fit(self, images, T, Y, *, covariates=None, sample_weight=None, unit_ids=None):
        """Fit the type network, the baseline and the type effects by variational SGD.

        Parameters
        ----------
        images : array-like of shape (n, C, H, W) or (n, D)
            Chips (a small CNN reads them) or precomputed embeddings (an MLP
            reads them). Values must be finite; they are standardised per
            channel (chips) or per column (embeddings) on these units.
        T : array-like of shape (n,)
            Binary treatment (0/1).
        Y : array-like of shape (n,)
            Outcome.
        covariates : array-like of shape (n, p), default=None
            Tabular covariates X, used by the baseline μ0(M, X) only.
        sample_weight : array-like of shape (n,), default=None
            Positive weights of the likelihood terms (and of the ATE).
        unit_ids : array-like of shape (n,), default=None
            Names units in error messages; stored as ``unit_ids_``.

        Returns
        -------
        self
        """
        device = self._check_params()
        if unit_ids is not None:
            unit_ids = np.asarray(unit_ids).astype(str)
        arr = _check_images(images, unit_ids=unit_ids)
        n = arr.shape[0]
        if unit_ids is not None and unit_ids.shape != (n,):
            raise InputDataError(
                f"`unit_ids` has {unit_ids.shape[0]} values but `images` has {n} units."
            )
        n_t = np.asarray(T).shape[0] if np.ndim(T) else 0
        if n_t != n:
            raise InputDataError(
                f"`T` has {n_t} values but `images` has {n} units; pass one treatment per image, "
                "in the same order."
            )
        data = check_treatment_outcome(
            T, Y, X=covariates, sample_weight=sample_weight, unit_ids=unit_ids, min_per_arm=2
        )
        T_arr, Y_arr, cov = data.T, data.Y, data.X
        w = np.ones(n) if data.sample_weight is None else data.sample_weight
        w = w / w.mean()

        self.device_ = device
        self.input_kind_ = "chips" if arr.ndim == 4 else "embeddings"
        self.input_shape_ = tuple(arr.shape[1:])
        self.n_covariates_ = 0 if cov is None else cov.shape[1]
        self.unit_ids_ = unit_ids

        # standardisation (fitted on the training units)
        axes = (0, 2, 3) if arr.ndim == 4 else (0,)
        center = arr.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
        scale = arr.std(axis=axes, keepdims=True, dtype=np.float64)[0]
        scale = np.where(scale > 0, scale, 1.0)
        self._set_image_scaling(center, scale)
        if cov is not None:
            self.cov_center_ = cov.mean(axis=0)
            sd = cov.std(axis=0)
            self.cov_scale_ = np.where(sd > 0, sd, 1.0)
        y_center = float(np.average(Y_arr, weights=w))
        y_scale = float(np.sqrt(np.average((Y_arr - y_center) ** 2, weights=w)))
        if not y_scale > 0:
            raise InputDataError("`Y` is constant; there is no effect to decompose.")
        self.y_center_, self.y_scale_ = y_center, y_scale
        dim = float(
            np.average(Y_arr[T_arr == 1], weights=w[T_arr == 1])
            - np.average(Y_arr[T_arr == 0], weights=w[T_arr == 0])
        )
        self.difference_in_means_ = dim
        prior_mean = dim / y_scale
        prior_sd = 1.0 if self.prior_sd is None else float(self.prior_sd) / y_scale

        K = int(self.n_types)
        rng = np.random.default_rng(self.random_state)
        self.seed_ = int(rng.integers(2**31 - 1))
        y_std = torch.as_tensor((Y_arr - y_center) / y_scale, dtype=torch.float32, device=device)
        t_ten = torch.as_tensor(T_arr, dtype=torch.float32, device=device)
        w_ten = torch.as_tensor(w, dtype=torch.float32, device=device)
        x_all = self._scale_covariates(cov) if cov is not None else None
        m_all = self._scale_images(arr) if arr.nbytes <= 2**30 else None  # else per batch
        temp = torch.tensor(float(self.temperature), device=device)
        prior = Normal(
            torch.full((K,), prior_mean, device=device), torch.full((K,), prior_sd, device=device)
        )

        history = np.empty(self.epochs)
        with self._fork_rng():
            torch.manual_seed(self.seed_)
            spread = 0.5 * min(1.0, prior_sd) * np.linspace(-1.0, 1.0, K)
            net = _TypeNet(
                self.input_kind_,
                arr.shape[1],
                self.n_covariates_,
                self.hidden,
                K,
                tau_init=prior_mean + spread,
                tau_sd_init=0.1 * prior_sd,
            ).to(device)
            variational = [net.tau_mean, net.tau_rho, net.log_sigma]
            ids = {id(p) for p in variational}
            weights = [p for p in net.parameters() if id(p) not in ids]
            opt = torch.optim.Adam(
                [
                    {"params": weights, "weight_decay": float(self.weight_decay)},
                    {"params": variational, "weight_decay": 0.0},
                ],
                lr=float(self.lr),
            )
            net.train()
            for epoch in range(self.epochs):
                order = torch.as_tensor(rng.permutation(n), device=device)
                total = 0.0
                for start in range(0, n, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    m = (
                        m_all[idx]
                        if m_all is not None
                        else self._scale_images(arr[idx.cpu().numpy()])
                    )
                    x = None if x_all is None else x_all[idx]
                    z = RelaxedOneHotCategorical(temp, logits=net.logits(m)).rsample((self.n_mc,))
                    tau = Normal(net.tau_mean, net.tau_sd()).rsample((self.n_mc,))
                    pred = net.baseline(m, x) + t_ten[idx] * (z * tau[:, None, :]).sum(-1)
                    nll = -Normal(pred, net.log_sigma.exp()).log_prob(y_std[idx]).mean(0)
                    kl = kl_divergence(Normal(net.tau_mean, net.tau_sd()), prior).sum()
                    loss = (w_ten[idx] * nll).mean() + kl / n
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                history[epoch] = total / n
                if not np.isfinite(history[epoch]):
                    raise EstimationError(
                        f"The ELBO diverged (loss {history[epoch]!r}) in epoch {epoch}; lower `lr` "
                        "or check the outcome for extreme values."
                    )
            net.eval()
            # relabel types by effect size so that type 0 has the lowest effect
            order_k = torch.argsort(net.tau_mean.detach())
            with torch.no_grad():
                net.type_head.weight.copy_(net.type_head.weight[order_k])
                net.type_head.bias.copy_(net.type_head.bias[order_k])
                net.tau_mean.copy_(net.tau_mean[order_k])
                net.tau_rho.copy_(net.tau_rho[order_k])
        self.net_ = net
        self.history_ = history
        self.type_probabilities_ = self._proba(arr)
        self._set_outputs(np.average(self.type_probabilities_, axis=0, weights=w))
        self.ate_ = float(np.average(self.effect_, weights=w))
        return self

    # ---------------------------------------------------------------- predict
    def _proba(self, arr: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, arr.shape[0], _PREDICT_BATCH):
                m = self._scale_images(arr[start : start + _PREDICT_BATCH])
                out.append(torch.softmax(self.net_.logits(m), dim=1).double().cpu().numpy())
        return np.concatenate(out, axis=0)

    def predict_proba(self, images, covariates=None) -> np.ndarray:
        """Type probabilities p_ik = softmax(f(M_i))_k, columns ordered by effect.

        Parameters
        ----------
        images : array-like of shape (n, C, H, W) or (n, D)
            Same kind and per-unit shape as in ``fit``.
        covariates : array-like of shape (n, p), default=None
            Checked for shape only: the types depend on the images alone (as in
            the paper); covariates enter the baseline μ0.

        Returns
        -------
        ndarray of shape (n, n_types)
        """
        arr, _ = self._check_new_inputs(images, covariates)
        return self._proba(arr)

    def effect(self, images, covariates=None) -> np.ndarray:
        """Per-unit treatment effect τ̂_i = Σ_k p_ik m_k in outcome units.

        Parameters
        ----------
        images : array-like of shape (n, C, H, W) or (n, D)
        covariates : array-like of shape (n, p), default=None

        Returns
        -------
        ndarray of shape (n,)
        """
        return self.predict_proba(images, covariates) @ self.type_effects_["mean"].to_numpy()

    def salience(self, images, type_index: int, *, n_mc: int | None = None) -> np.ndarray:
        """Gradient of a type's log-probability with respect to the pixels, averaged over draws.

        Parameters
        ----------
        images : array-like of shape (n, C, H, W)
            Chips of the same shape as in ``fit`` (embeddings have no pixels).
        type_index : int
            Type k in ``0 .. n_types - 1`` (0 = lowest effect).
        n_mc : int, default=None
            Monte Carlo draws of the relaxed assignment; ``None`` uses ``self.n_mc``.

        Returns
        -------
        ndarray of shape (n, C, H, W), float32
            ∂ log z_ik / ∂ M_i in raw pixel units (per unit of the input values),
            averaged over ``n_mc`` draws z_i ~ RelaxedOneHotCategorical(f(M_i), t).

        Notes
        -----
        .. math::

            S_k(M_i) = \\frac{1}{R}\\sum_{r=1}^R \\nabla_{M_i} \\log z^{(r)}_{ik},\\quad
            z^{(r)}_i \\sim \\mathrm{RelaxedOneHotCategorical}(f(M_i), t).

        The draws are seeded from ``random_state``: the same fitted model gives
        the same salience maps.
        """
        self._check_fitted()
        if self.input_kind_ != "chips":
            raise InputDataError(
                "salience needs chip inputs (n, C, H, W); this model was fitted on embeddings, "
                "which have no pixels. Fit on chips to get salience maps."
            )
        arr, _ = self._check_new_inputs(images, None)
        if not isinstance(type_index, Integral) or not 0 <= type_index < self.n_types:
            raise InputDataError(
                f"`type_index` must be an int in 0..{self.n_types - 1}; got {type_index!r}."
            )
        draws = self.n_mc if n_mc is None else n_mc
        _check_int("n_mc", draws, 1)
        temp = torch.tensor(float(self.temperature), device=self.device_)
        out = []
        with self._fork_rng():
            torch.manual_seed(self.seed_ + 1)
            for start in range(0, arr.shape[0], _PREDICT_BATCH):
                m = self._scale_images(arr[start : start + _PREDICT_BATCH]).requires_grad_(True)
                log_z = ExpRelaxedCategorical(temp, logits=self.net_.logits(m)).rsample((draws,))
                (grad,) = torch.autograd.grad(log_z[..., type_index].mean(0).sum(), m)
                out.append((grad.cpu() / self._img_scale).numpy())
        return np.concatenate(out, axis=0).astype(np.float32)

    def save(self, path) -> Path:
        """Write the fitted model to ``path`` (a torch file of tensors, strings and numbers only).

        The file holds the network weights, the input scaling, the training-unit
        outputs and the parameters, with a format tag and the eocausal version;
        :meth:`load` reads it with ``torch.load(weights_only=True)`` (no pickle
        of arbitrary objects). The write is atomic (temporary file, then rename).

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        pathlib.Path
        """
        self._check_fitted()
        path = Path(path)
        params = self.get_params()
        params["device"] = str(params["device"])
        state = {
            "format": _FORMAT,
            "eocausal_version": __version__,
            "params": params,
            "input_kind": self.input_kind_,
            "input_shape": list(self.input_shape_),
            "n_covariates": int(self.n_covariates_),
            "unit_ids": None if self.unit_ids_ is None else [str(u) for u in self.unit_ids_],
            "image_center": torch.from_numpy(self.image_center_),
            "image_scale": torch.from_numpy(self.image_scale_),
            "cov_center": torch.from_numpy(self.cov_center_) if self.n_covariates_ else None,
            "cov_scale": torch.from_numpy(self.cov_scale_) if self.n_covariates_ else None,
            "y_center": float(self.y_center_),
            "y_scale": float(self.y_scale_),
            "difference_in_means": float(self.difference_in_means_),
            "seed": int(self.seed_),
            "history": torch.from_numpy(self.history_),
            "type_probabilities": torch.from_numpy(self.type_probabilities_),
            "ate": float(self.ate_),
            "type_share": torch.tensor(self.type_effects_["share"].to_numpy(np.float64)),
            "state_dict": {k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, *, device: str = "cpu") -> ImageTypeModel:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        device : str, default="cpu"
            Torch device to put the network on (overrides the saved ``device``).

        Returns
        -------
        ImageTypeModel
            Fitted; predicts exactly as the saved model.

        Raises
        ------
        EstimationError
            The file is missing, is not an eocausal image-type model, or is corrupt.
        """
        path = Path(path)
        if not path.is_file():
            raise EstimationError(
                f"No image-type model at {str(path)!r}; fit one and call `save` first."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            KeyError,
        ) as exc:
            raise EstimationError(
                f"{str(path)!r} could not be read as an image-type model ({type(exc).__name__}: {exc})."
            ) from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise EstimationError(
                f"{str(path)!r} is not an eocausal image-type model file (expected format {_FORMAT!r})."
            )
        params = dict(state["params"], device=device)
        model = cls(**params)
        model.device_ = model._check_params()
        model.input_kind_ = state["input_kind"]
        model.input_shape_ = tuple(int(v) for v in state["input_shape"])
        model.n_covariates_ = int(state["n_covariates"])
        model.unit_ids_ = (
            None if state["unit_ids"] is None else np.asarray(state["unit_ids"], dtype=str)
        )
        model._set_image_scaling(state["image_center"].numpy(), state["image_scale"].numpy())
        if model.n_covariates_:
            model.cov_center_ = state["cov_center"].numpy()
            model.cov_scale_ = state["cov_scale"].numpy()
        model.y_center_, model.y_scale_ = state["y_center"], state["y_scale"]
        model.difference_in_means_ = state["difference_in_means"]
        model.seed_ = int(state["seed"])
        n_in = model.input_shape_[0]
        net = _TypeNet(
            model.input_kind_,
            n_in,
            model.n_covariates_,
            model.hidden,
            model.n_types,
            tau_init=np.zeros(model.n_types),
            tau_sd_init=1.0,
        )
        net.load_state_dict(state["state_dict"])
        model.net_ = net.to(model.device_).eval()
        model.history_ = state["history"].numpy()
        model.type_probabilities_ = state["type_probabilities"].numpy()
        model.ate_ = float(state["ate"])
        model._set_outputs(state["type_share"].numpy())
        return model

    def _set_outputs(self, share: np.ndarray) -> None:
        """Fill ``noise_sd_``, ``type_effects_`` and ``effect_`` from the network and the shares."""
        net = self.net_
        self.noise_sd_ = float(net.log_sigma.detach().exp()) * self.y_scale_
        means = net.tau_mean.detach().cpu().numpy().astype(np.float64) * self.y_scale_
        sds = net.tau_sd().detach().cpu().numpy().astype(np.float64) * self.y_scale_
        self.effect_ = self.type_probabilities_ @ means
        self.type_effects_ = pd.DataFrame(
            {"type": np.arange(len(means)), "mean": means, "sd": sds, "share": share}
        )

    def result(self) -> ImageTypeResult:
        """Summary of the fit as an :class:`ImageTypeResult` (``.to_dict()`` for JSON)."""
        self._check_fitted()
        params = {
            k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
            for k, v in self.get_params().items()
        }
        return ImageTypeResult(
            n_types=int(self.n_types),
            input_kind=self.input_kind_,
            type_effects=self.type_effects_.to_dict(orient="records"),
            ate=self.ate_,
            difference_in_means=self.difference_in_means_,
            noise_sd=self.noise_sd_,
            final_loss=float(self.history_[-1]),
            n_units=int(self.type_probabilities_.shape[0]),
            params=params,
        )
