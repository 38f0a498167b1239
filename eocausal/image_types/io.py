"""Saving and loading fitted image-type models in a format that never unpickles objects.

The file is a ``torch.save`` of a dict that holds only tensors, strings,
numbers, lists, dicts and None: the network's state dict, the input and
outcome scaling, the training-unit outputs and the parameters, with a format
tag and the eocausal version. It is read back with
``torch.load(weights_only=True)``, whose restricted unpickler refuses any other
Python object, so a file from elsewhere cannot run code when loaded.
"""

from __future__ import annotations

import pickle  # only for the error type torch.load raises on refused or bad files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from eocausal import __version__
from eocausal.atomic import atomic_path
from eocausal.errors import EstimationError
from eocausal.image_types._validation import check_params
from eocausal.image_types.networks import TypeNet
from eocausal.image_types.tensors import ImageScaling

if TYPE_CHECKING:
    from eocausal.image_types.model import ImageTypeModel

__all__ = ["FORMAT", "load_model", "save_model"]

FORMAT = "eocausal.ImageTypeModel/1"
"""Format tag written into every file; :func:`load_model` refuses other tags."""


def save_model(model: ImageTypeModel, path) -> Path:
    """Write a fitted ``model`` to ``path`` atomically (temporary file, then rename).

    Parameters
    ----------
    model : ImageTypeModel
        Fitted.
    path : str or path-like
        Parent folders are created.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    params = model.get_params()
    params["device"] = str(params["device"])
    state: dict[str, Any] = {
        "format": FORMAT,
        "eocausal_version": __version__,
        "params": params,
        "input_kind": model.input_kind_,
        "input_shape": list(model.input_shape_),
        "n_covariates": int(model.n_covariates_),
        "unit_ids": None if model.unit_ids_ is None else [str(u) for u in model.unit_ids_],
        "image_center": torch.from_numpy(model.image_center_),
        "image_scale": torch.from_numpy(model.image_scale_),
        "cov_center": torch.from_numpy(model.cov_center_) if model.n_covariates_ else None,
        "cov_scale": torch.from_numpy(model.cov_scale_) if model.n_covariates_ else None,
        "y_center": float(model.y_center_),
        "y_scale": float(model.y_scale_),
        "difference_in_means": float(model.difference_in_means_),
        "seed": int(model.seed_),
        "history": torch.from_numpy(model.history_),
        "type_probabilities": torch.from_numpy(model.type_probabilities_),
        "ate": float(model.ate_),
        "type_share": torch.tensor(model.type_effects_["share"].to_numpy(np.float64)),
        "state_dict": {k: v.detach().cpu() for k, v in model.net_.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EstimationError(
            f"No image-type model at {str(path)!r}; fit one and call `save` first."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run the file's code
        raise EstimationError(
            f"{str(path)!r} could not be read as an image-type model: it is not a torch file of "
            "tensors, numbers and strings (it is corrupt, or it pickles Python objects, which "
            "eocausal refuses to load because unpickling can run arbitrary code). Load only "
            "files written by ImageTypeModel.save; refit and save the model otherwise."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise EstimationError(
            f"{str(path)!r} could not be read as an image-type model ({type(exc).__name__}: {exc})."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise EstimationError(
            f"{str(path)!r} is not an eocausal image-type model file (expected format {FORMAT!r})."
        )
    return state


def load_model(cls: type[ImageTypeModel], path, *, device: str = "cpu") -> ImageTypeModel:
    """Read a model written by :func:`save_model` into a fitted instance of ``cls``.

    Parameters
    ----------
    cls : type
        :class:`ImageTypeModel` (or a subclass).
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
        The file is missing, is not an eocausal image-type model, is corrupt,
        or holds pickled Python objects.
    """
    state = _read_state(Path(path))
    model = cls(**dict(state["params"], device=device))
    model.device_ = check_params(model.get_params())
    model.input_kind_ = state["input_kind"]
    model.input_shape_ = tuple(int(v) for v in state["input_shape"])
    model.n_covariates_ = int(state["n_covariates"])
    model.unit_ids_ = (
        None if state["unit_ids"] is None else np.asarray(state["unit_ids"], dtype=str)
    )
    model._set_image_scaling(
        ImageScaling(state["image_center"].numpy(), state["image_scale"].numpy())
    )
    if model.n_covariates_:
        model.cov_center_ = state["cov_center"].numpy()
        model.cov_scale_ = state["cov_scale"].numpy()
    model.y_center_, model.y_scale_ = state["y_center"], state["y_scale"]
    model.difference_in_means_ = state["difference_in_means"]
    model.seed_ = int(state["seed"])
    net = TypeNet(
        model.input_kind_,
        model.input_shape_[0],
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
