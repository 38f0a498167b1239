"""ImageTypeModel: the scikit-learn-shaped estimator over the networks and the training loop."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from eocausal.errors import InputDataError
from eocausal.image_types._validation import (
    check_fit_inputs,
    check_int,
    check_new_inputs,
    check_params,
)
from eocausal.image_types.io import load_model, save_model
from eocausal.image_types.result import ImageTypeResult
from eocausal.image_types.salience import type_salience
from eocausal.image_types.tensors import PREDICT_BATCH, ImageScaling
from eocausal.image_types.training import TrainingSettings, train_type_net
from eocausal.validation import check_is_fitted

__all__ = ["ImageTypeModel"]


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
        device = check_params(self.get_params())
        data = check_fit_inputs(
            images, T, Y, covariates=covariates, sample_weight=sample_weight, unit_ids=unit_ids
        )
        arr, T_arr, Y_arr, cov, w = data.images, data.T, data.Y, data.covariates, data.weights

        self.device_ = device
        self.input_kind_ = "chips" if arr.ndim == 4 else "embeddings"
        self.input_shape_ = tuple(arr.shape[1:])
        self.n_covariates_ = 0 if cov is None else cov.shape[1]
        self.unit_ids_ = data.unit_ids

        # standardisation (fitted on the training units)
        self._set_image_scaling(ImageScaling.fit(arr))
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
        prior_sd = 1.0 if self.prior_sd is None else float(self.prior_sd) / y_scale

        trained = train_type_net(
            arr,
            T_arr,
            (Y_arr - y_center) / y_scale,
            w,
            covariates=None if cov is None else (cov - self.cov_center_) / self.cov_scale_,
            scaling=self._image_scaling,
            n_types=int(self.n_types),
            hidden=self.hidden,
            prior_mean=dim / y_scale,
            prior_sd=prior_sd,
            settings=TrainingSettings(
                epochs=self.epochs,
                batch_size=self.batch_size,
                lr=self.lr,
                weight_decay=self.weight_decay,
                n_mc=self.n_mc,
                temperature=self.temperature,
            ),
            random_state=self.random_state,
            device=device,
        )
        self.seed_ = trained.seed
        self.net_ = trained.net
        self.history_ = trained.history
        self.type_probabilities_ = self._proba(arr)
        self._set_outputs(np.average(self.type_probabilities_, axis=0, weights=w))
        self.ate_ = float(np.average(self.effect_, weights=w))
        return self

    # ---------------------------------------------------------------- predict
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
        the same salience maps (see
        :func:`eocausal.image_types.salience.type_salience`).
        """
        check_is_fitted(self, "net_")
        if self.input_kind_ != "chips":
            raise InputDataError(
                "salience needs chip inputs (n, C, H, W); this model was fitted on embeddings, "
                "which have no pixels. Fit on chips to get salience maps."
            )
        arr, _ = self._check_new_inputs(images, None, with_covariates=False)
        if not isinstance(type_index, Integral) or not 0 <= type_index < self.n_types:
            raise InputDataError(
                f"`type_index` must be an int in 0..{self.n_types - 1}; got {type_index!r}."
            )
        draws = check_int("n_mc", self.n_mc if n_mc is None else n_mc, 1)
        return type_salience(
            self.net_,
            arr,
            type_index,
            scaling=self._image_scaling,
            temperature=self.temperature,
            n_draws=draws,
            seed=self.seed_ + 1,
            device=self.device_,
        )

    # --------------------------------------------------------------------- io
    def save(self, path) -> Path:
        """Write the fitted model to ``path`` (a torch file of tensors, strings and numbers only).

        The file holds the network weights, the input scaling, the training-unit
        outputs and the parameters, with a format tag and the eocausal version;
        :meth:`load` reads it with ``torch.load(weights_only=True)`` (no pickle
        of arbitrary objects). The write is atomic (temporary file, then rename).
        See :mod:`eocausal.image_types.io`.

        Parameters
        ----------
        path : str or path-like

        Returns
        -------
        pathlib.Path
        """
        check_is_fitted(self, "net_")
        return save_model(self, path)

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
            The file is missing, is not an eocausal image-type model, is
            corrupt, or holds pickled Python objects (refused, never unpickled).
        """
        return load_model(cls, path, device=device)

    def result(self) -> ImageTypeResult:
        """Summary of the fit as an :class:`ImageTypeResult` (``.to_dict()`` for JSON)."""
        check_is_fitted(self, "net_")
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

    # -------------------------------------------------------------- internals
    def _check_new_inputs(self, images, covariates, *, with_covariates: bool = True
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """Check new inputs; ``with_covariates=False`` for outputs of the type network alone
        (probabilities, salience), which do not read the covariates."""
        check_is_fitted(self, "net_")
        return check_new_inputs(
            images,
            covariates,
            input_kind=self.input_kind_,
            input_shape=self.input_shape_,
            n_covariates=self.n_covariates_ if with_covariates else 0,
        )

    def _set_image_scaling(self, scaling: ImageScaling) -> None:
        self._image_scaling = scaling
        self.image_center_ = scaling.center
        self.image_scale_ = scaling.scale

    def _proba(self, arr: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, arr.shape[0], PREDICT_BATCH):
                m = self._image_scaling.transform(arr[start : start + PREDICT_BATCH], self.device_)
                out.append(torch.softmax(self.net_.logits(m), dim=1).double().cpu().numpy())
        return np.concatenate(out, axis=0)

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
