"""Input and parameter checks of the image-type model; each returns the cleaned value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from eocausal.errors import InputDataError
from eocausal.validation import check_features, check_treatment_outcome, row_names

__all__ = [
    "FitInputs",
    "check_fit_inputs",
    "check_images",
    "check_int",
    "check_new_inputs",
    "check_params",
    "check_positive",
]

def check_images(images, *, unit_ids=None) -> np.ndarray:
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
            f"`images` has NaN or infinite values at {row_names(~finite, unit_ids)}; fill masked "
            "pixels (e.g. with the chip mean) or exclude these units before fitting."
        )
    return arr


def check_int(name: str, value, low: int) -> int:
    """Return ``value`` as an int; raise unless it is an int (not a bool) >= ``low``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise InputDataError(
            f"The {name!r} parameter of ImageTypeModel must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


def check_positive(name: str, value, *, allow_none: bool = False) -> float | None:
    """Return ``value`` as a float (or None when allowed); raise unless finite and > 0."""
    if value is None and allow_none:
        return None
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
    return float(value)


def check_params(params: Mapping[str, Any]) -> torch.device:
    """Check the parameters of an ImageTypeModel (``get_params()``); return the torch device."""
    check_int("n_types", params["n_types"], 2)
    check_int("hidden", params["hidden"], 1)
    check_int("epochs", params["epochs"], 1)
    check_int("batch_size", params["batch_size"], 1)
    check_int("n_mc", params["n_mc"], 1)
    check_positive("lr", params["lr"])
    check_positive("temperature", params["temperature"])
    check_positive("prior_sd", params["prior_sd"], allow_none=True)
    weight_decay = params["weight_decay"]
    if not isinstance(weight_decay, Real) or not np.isfinite(weight_decay) or weight_decay < 0:
        raise InputDataError(
            "The 'weight_decay' parameter of ImageTypeModel must be a float >= 0. "
            f"Got {weight_decay!r} instead."
        )
    random_state = params["random_state"]
    if random_state is not None and (
        not isinstance(random_state, Integral) or isinstance(random_state, bool)
    ):
        raise InputDataError(
            "The 'random_state' parameter of ImageTypeModel must be an int or None. "
            f"Got {random_state!r} instead."
        )
    try:
        device = torch.device(params["device"])
    except (RuntimeError, TypeError):
        raise InputDataError(
            f"The 'device' parameter of ImageTypeModel must be a torch device such as 'cpu' or "
            f"'cuda:0'. Got {params['device']!r} instead."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputDataError(
            f"device={params['device']!r} was requested but CUDA is not available; use device='cpu'."
        )
    return device


def check_new_inputs(
    images,
    covariates,
    *,
    input_kind: str,
    input_shape: tuple[int, ...],
    n_covariates: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check images (and covariates) to score against the shapes a model was fitted on."""
    arr = check_images(images)
    if arr.shape[1:] != input_shape:
        kind = "chips (C, H, W)" if input_kind == "chips" else "embeddings (D,)"
        raise InputDataError(
            f"`images` has per-unit shape {arr.shape[1:]} but the model was fitted on {kind} of "
            f"shape {input_shape}; cut chips (or embed) exactly as for training."
        )
    cov = None
    if covariates is not None:
        cov = check_features(covariates, n=arr.shape[0], name="covariates")
        if cov.shape[1] != n_covariates:
            raise InputDataError(
                f"`covariates` has {cov.shape[1]} columns but the model was fitted with "
                f"{n_covariates}; pass the same covariate columns as in fit."
            )
    elif n_covariates:
        raise InputDataError(
            f"The model was fitted with {n_covariates} covariates; pass `covariates`."
        )
    return arr, cov


@dataclass(frozen=True)
class FitInputs:
    """Checked training data of :meth:`ImageTypeModel.fit`.

    Attributes
    ----------
    images : ndarray of shape (n, C, H, W) or (n, D), float32
    T : ndarray of shape (n,)
        Binary treatment.
    Y : ndarray of shape (n,)
    covariates : ndarray of shape (n, p) or None
    weights : ndarray of shape (n,)
        ``sample_weight`` rescaled to mean 1 (ones when none was given).
    unit_ids : ndarray of str or None
    """

    images: np.ndarray
    T: np.ndarray
    Y: np.ndarray
    covariates: np.ndarray | None
    weights: np.ndarray
    unit_ids: np.ndarray | None


def check_fit_inputs(
    images, T, Y, *, covariates=None, sample_weight=None, unit_ids=None
) -> FitInputs:
    """Check the training data of an image-type model; one treatment and outcome per image."""
    if unit_ids is not None:
        unit_ids = np.asarray(unit_ids).astype(str)
    arr = check_images(images, unit_ids=unit_ids)
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
    w = np.ones(n) if data.sample_weight is None else data.sample_weight
    return FitInputs(arr, data.T, data.Y, data.X, w / w.mean(), unit_ids)
