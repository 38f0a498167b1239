"""timm backbones built around verified local weights.

:func:`build_encoder` builds an encoder from a registered weights name, a timm
architecture with a weights file of your own, or ``"mosaiks"``. The weights
are read and verified by :mod:`eocausal.encode.weights` (registry, sha256
trust model, weights-only deserialisation); the timm model is built with
``pretrained=False, in_chans=C, num_classes=0`` and the build refuses to
continue unless the only parameters left at their random initialisation are
the classifier head or the final norm. This avoids the timm pitfall where
``pretrained=True`` with ``in_chans != 3`` silently leaves a random patch
embedding. :class:`TimmEncoder` wraps the model with its provenance and the
per-band normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eocausal.encode.weights import _REGISTRY, _load_verified, default_cache_dir
from eocausal.errors import WeightsError

__all__ = ["TimmEncoder", "build_encoder"]

# Parameters that may stay at their initial values after loading: the
# classifier head (dropped with num_classes=0) and the final norm layers.
_ALLOWED_MISSING_PREFIXES = ("head.", "norm.", "fc_norm.", "head_drop.")
# Checkpoint entries we knowingly discard: classifier heads of models built
# with num_classes=0 (timm ViT `head`, DeiT `head_dist`, ResNet `fc`).
_DISCARDABLE_PREFIXES = ("head.", "head_dist.", "fc.")


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into ``model``; only head/norm parameters may remain unloaded."""
    own = model.state_dict()
    state = {
        k: v for k, v in state.items() if not (k not in own and k.startswith(_DISCARDABLE_PREFIXES))
    }
    pos = state.get("pos_embed")
    if pos is not None and "pos_embed" in own and pos.shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        grid = model.patch_embed.grid_size
        state["pos_embed"] = resample_abs_pos_embed(
            pos, new_size=list(grid), num_prefix_tokens=n_prefix
        )
    shape_errors = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if shape_errors:
        raise WeightsError(
            f"Weights file {str(path)!r} does not fit the model (wrong architecture or in_chans?): "
            + "; ".join(shape_errors[:5])
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if not k.startswith(_ALLOWED_MISSING_PREFIXES)]
    if bad_missing or unexpected:
        raise WeightsError(
            f"Weights file {str(path)!r} does not match the model: missing keys {bad_missing[:8]}"
            f"{' ...' if len(bad_missing) > 8 else ''}, unexpected keys {list(unexpected)[:8]}. "
            "Only head/norm keys may be missing; check the architecture and in_chans."
        )


class TimmEncoder(nn.Module):
    """A timm backbone returning pooled features, with its provenance.

    Parameters
    ----------
    model : nn.Module
        timm model built with ``num_classes=0`` (its forward returns pooled features).
    name : str
        Encoder name recorded in the embeddings' metadata.
    in_chans : int
        Number of input bands.
    input_size : int or None
        Fixed input size in pixels, or ``None`` when the model accepts any size
        (convolutional nets, ViTs built with ``dynamic_img_size=True``).
    weights_sha256 : str or None
        Full sha256 of the loaded weights file; ``None`` for random weights.
    mean, std : sequence of float or None
        Per-band normalisation ``(x - mean) / std`` applied first.

    Notes
    -----
    ``forward`` maps a float tensor of shape (B, C, H, W) to (B, D) with
    ``D = embed_dim``; it does not resize (the embedding job does).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        in_chans: int,
        input_size: int | None,
        weights_sha256: str | None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.in_chans = int(in_chans)
        self.embed_dim = int(model.num_features)
        self.input_size = input_size
        self.weights_sha256 = weights_sha256
        if (mean is None) != (std is None):
            raise WeightsError("Give both `mean` and `std` or neither.")
        if mean is not None:
            if len(mean) != in_chans or len(std) != in_chans:
                raise WeightsError(
                    f"`mean`/`std` need {in_chans} values (one per band); "
                    f"got {len(mean)} and {len(std)}."
                )
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        else:
            self.mean = None
            self.std = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise WeightsError(
                f"Encoder {self.name!r} expects (B, {self.in_chans}, H, W); got {tuple(x.shape)}. "
                "Check the chip spec's bands against the weights' bands."
            )
        if self.mean is not None:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.model(x)


def _fixed_input_size(model: nn.Module, kwargs: Mapping[str, Any]) -> int | None:
    """Input size a timm model requires, or None when it accepts any size."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None:  # convolutional nets pool globally
        return None
    if kwargs.get("dynamic_img_size") or getattr(patch_embed, "dynamic_img_size", False):
        return None
    size = patch_embed.img_size
    return int(size[0]) if isinstance(size, tuple | list) else int(size)


def build_encoder(
    name: str,
    *,
    weights_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    in_chans: int | None = None,
    sha256: str | None = None,
    random_weights: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build an encoder by registry name, timm architecture, or ``"mosaiks"``.

    Parameters
    ----------
    name : str
        A registered weights name (see
        :func:`~eocausal.encode.weights.list_weights`), ``"mosaiks"`` (random
        convolutional features, no weights), or any timm architecture.
    weights_path : path, optional
        Local weights file. For a registered name it defaults to
        ``cache_dir / entry.filename``; for a timm architecture it is required
        unless ``random_weights=True``.
    cache_dir : path, optional
        Directory of fetched weights; default
        :func:`~eocausal.encode.weights.default_cache_dir`.
    in_chans : int, optional
        Number of input bands. Must equal the registered ``in_chans`` for a
        registry name; required for a timm architecture and for ``"mosaiks"``.
    sha256 : str, optional
        Full sha256 (64 hex digits) of the weights file. Required for a timm
        architecture with ``weights_path``; for registered weights it is checked
        in addition to the registry pin and the recorded digest, and replaces the
        record that a prefix-only pin needs (see the trust model in
        :mod:`eocausal.encode.weights`).
    random_weights : bool, default=False
        Build a timm architecture with random weights (tests, benchmarks).
    **kwargs
        Passed to ``timm.create_model`` (e.g. ``img_size``, ``dynamic_img_size``)
        or to :class:`~eocausal.encode.mosaiks.MosaiksEncoder`.

    Returns
    -------
    nn.Module
        With attributes ``name, in_chans, embed_dim, input_size, weights_sha256``.

    Raises
    ------
    WeightsError
        Missing file, hash mismatch, no full sha256 known, keys that do not fit
        the model, or conflicting arguments.
    """
    if name == "mosaiks":
        from eocausal.encode.mosaiks import MosaiksEncoder

        if in_chans is None:
            raise WeightsError("`in_chans` is required for the 'mosaiks' encoder.")
        if weights_path is not None or sha256 is not None:
            given = "weights_path" if weights_path is not None else "sha256"
            raise WeightsError(
                f"'mosaiks' has no weights file (got {given}="
                f"{str(weights_path if weights_path is not None else sha256)!r}): its filters are "
                "drawn from `seed` and whitened on the chips by `fit_whitening`; drop "
                f"`{given}`, or name a timm architecture or registered weights."
            )
        return MosaiksEncoder(in_chans, **kwargs)

    import timm  # imported here: the embedding job and MOSAIKS do not need it

    if name in _REGISTRY:
        entry = _REGISTRY[name]
        if in_chans is not None and in_chans != entry.in_chans:
            raise WeightsError(
                f"Weights {name!r} take {entry.in_chans} bands {list(entry.bands)}, "
                f"but in_chans={in_chans}; select those bands in the chip spec."
            )
        if random_weights:
            raise WeightsError(
                f"{name!r} names pretrained weights; use its architecture {entry.arch!r} "
                "with random_weights=True for a randomly initialised model."
            )
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = Path(weights_path) if weights_path is not None else cache / entry.filename
        if not path.is_file():
            raise WeightsError(
                f"Weights {name!r} not found at {str(path)!r}; run `eocausal weights fetch {name}` "
                "(or copy the file there) or pass `weights_path`."
            )
        pins = [entry.sha256] if sha256 is None else [entry.sha256, sha256]
        fix = (
            f"Run `eocausal weights fetch {name}` to verify the file against the published "
            "prefix and record its full sha256, or pin the full sha256 (`sha256`, config field "
            "`encoder.weights_sha256`)."
        )
        state, digest = _load_verified(path, pins, fix)
        model = timm.create_model(
            entry.arch, pretrained=False, in_chans=entry.in_chans, num_classes=0, **kwargs
        )
        _load_into(model, state, path)
        input_size = _fixed_input_size(model, kwargs)
        return TimmEncoder(
            model.eval(),
            name=name,
            in_chans=entry.in_chans,
            input_size=input_size,
            weights_sha256=digest,
            mean=entry.mean,
            std=entry.std,
        )

    if not timm.is_model(name):
        raise WeightsError(
            f"{name!r} is neither registered weights ({sorted(_REGISTRY)}), 'mosaiks', "
            "nor a timm architecture."
        )
    if in_chans is None:
        raise WeightsError(f"`in_chans` is required for the timm architecture {name!r}.")
    if weights_path is None and not random_weights:
        raise WeightsError(
            f"No weights for the timm architecture {name!r}: pass `weights_path` (a local file), "
            "use a registered name, or set random_weights=True explicitly."
        )
    if weights_path is not None and random_weights:
        raise WeightsError("Give `weights_path` or random_weights=True, not both.")
    if sha256 is not None and weights_path is None:
        raise WeightsError("`sha256` checks a `weights_path`; give the file too.")
    if weights_path is not None and sha256 is None:
        raise WeightsError(
            f"`sha256` is required to load {str(weights_path)!r} into the timm architecture "
            f"{name!r}: pin the file's full sha256 (64 hex digits, e.g. from `sha256sum "
            f"{weights_path}`; config field `encoder.weights_sha256`) so that a changed or "
            "corrupted file is refused, or set random_weights=True for random weights."
        )
    mean = kwargs.pop("mean", None)
    std = kwargs.pop("std", None)
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
    digest = None
    if weights_path is not None:
        path = Path(weights_path)
        fix = (
            f"Pin the file's full sha256 (64 hex digits, e.g. from `sha256sum {path}`; config "
            "field `encoder.weights_sha256`)."
        )
        state, digest = _load_verified(path, [sha256], fix)
        _load_into(model, state, path)
    return TimmEncoder(
        model.eval(),
        name=name,
        in_chans=in_chans,
        input_size=_fixed_input_size(model, kwargs),
        weights_sha256=digest,
        mean=mean,
        std=std,
    )
