"""timm backbones, the weights registry, and safe local loading of weights.

Weights are never downloaded implicitly. :func:`fetch_weights` is the only
function that touches the network (``eocausal weights fetch NAME``); every
other function reads a local file, checks its sha256, loads it with
``torch.load(weights_only=True)`` (or safetensors), builds the timm model with
``pretrained=False, in_chans=C, num_classes=0`` and refuses to continue unless
the only parameters left at their random initialisation are the classifier
head or the final norm. This avoids the timm pitfall where ``pretrained=True``
with ``in_chans != 3`` silently leaves a random patch embedding.

The registry follows torchgeo's weight enums: one entry per set of weights,
carrying the timm architecture, the number and names of the input bands, the
name of the pixel scaling recipe (applied by :mod:`eocausal.imagery` before
the chips reach the encoder), the file name, the pinned sha256 and the source
URL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from eocausal.errors import WeightsError

__all__ = [
    "TimmEncoder",
    "WeightsEntry",
    "build_encoder",
    "default_cache_dir",
    "fetch_weights",
    "file_sha256",
    "get_weights_entry",
    "list_weights",
    "load_state_dict",
    "register_weights",
    "verify_sha256",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Parameters that may stay at their initial values after loading: the
# classifier head (dropped with num_classes=0) and the final norm layers.
_ALLOWED_MISSING_PREFIXES = ("head.", "norm.", "fc_norm.", "head_drop.")
# Checkpoint entries we knowingly discard: classifier heads of models built
# with num_classes=0 (timm ViT `head`, DeiT `head_dist`, ResNet `fc`).
_DISCARDABLE_PREFIXES = ("head.", "head_dist.", "fc.")


@dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"ssl4eo_l_oli_sr_moco"``.
    arch : str
        timm architecture passed to ``timm.create_model``.
    in_chans : int
        Number of input bands the weights expect.
    bands : tuple of str
        Band names, in input order.
    recipe : str
        Name of the pixel scaling recipe (see :mod:`eocausal.imagery.bands`)
        that turns raw imagery into what the weights were trained on.
    filename : str
        File name in the cache directory.
    sha256 : str
        Pinned hex digest: the full 64-character sha256, or the leading hex
        prefix published in the file name (the ``torch.hub`` convention,
        ``name-<prefix>.pth``) when the publisher pins only that.
    url : str
        Source URL used by :func:`fetch_weights`.
    input_size : int or None, default=224
        Image size the model was built for; ``None`` when any size works.
    mean, std : tuple of float or None
        Per-band normalisation applied inside the encoder after the recipe
        (``(x - mean) / std``), or ``None`` for none.
    license : str
        Licence of the weights.
    reference : str
        Publication describing the weights.
    """

    name: str
    arch: str
    in_chans: int
    bands: tuple[str, ...]
    recipe: str
    filename: str
    sha256: str
    url: str
    input_size: int | None = 224
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    license: str = ""
    reference: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_TM_TOA = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
_ETM_TOA = ("B1", "B2", "B3", "B4", "B5", "B6_VCID_1", "B6_VCID_2", "B7", "B8")
_ETM_SR = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
_OLI_TIRS_TOA = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
_OLI_SR = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
# ImageNet weights on Landsat 8/9 SR: red, green, blue scaled to [0, 1] by the
# SSL4EO-L uint8 recipe, then ImageNet mean/std inside the encoder. For other
# imagery, pick the red/green/blue bands and a recipe that maps them to [0, 1].
_OLI_SR_RGB = ("SR_B4", "SR_B3", "SR_B2")
_SSL4EO_L_BASE = (
    "https://hf.co/torchgeo/ssl4eo_landsat/resolve/1c88bb51b6e17a21dde5230738fa38b74bd74f76/"
)
_SSL4EO_L_REF = "Stewart et al. (2023), SSL4EO-L, https://arxiv.org/abs/2306.09424"

# (sensor key, product, bands, recipe, {method: sha256 prefix from torchgeo's file names})
_SSL4EO_L = [
    ("tm", "toa", _TM_TOA, "ssl4eo_l_toa_uint8", {"moco": "a1c967d8", "simclr": "7c2d9799"}),
    ("etm", "toa", _ETM_TOA, "ssl4eo_l_toa_uint8", {"moco": "26d19bcf", "simclr": "34fb12cb"}),
    ("etm", "sr", _ETM_SR, "ssl4eo_l_sr_uint8", {"moco": "eaa4674e", "simclr": "a14c466a"}),
    (
        "oli_tirs",
        "toa",
        _OLI_TIRS_TOA,
        "ssl4eo_l_toa_uint8",
        {"moco": "c7c2cceb", "simclr": "ad43e9a4"},
    ),
    ("oli", "sr", _OLI_SR, "ssl4eo_l_sr_uint8", {"moco": "c9b8898d", "simclr": "4e8f6102"}),
]

_REGISTRY: dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry, *, overwrite: bool = False) -> WeightsEntry:
    """Add ``entry`` to the registry (e.g. weights of your own) and return it."""
    if entry.name in _REGISTRY and not overwrite:
        raise WeightsError(
            f"Weights {entry.name!r} are already registered; pass overwrite=True to replace them."
        )
    if len(entry.bands) != entry.in_chans:
        raise WeightsError(
            f"Weights {entry.name!r} list {len(entry.bands)} bands but in_chans={entry.in_chans}."
        )
    _REGISTRY[entry.name] = entry
    return entry


for _sensor, _product, _bands, _recipe, _hashes in _SSL4EO_L:
    for _method, _prefix in _hashes.items():
        _file = f"vits16_landsat_{_sensor}_{_product}_{_method}-{_prefix}.pth"
        register_weights(
            WeightsEntry(
                name=f"ssl4eo_l_{_sensor}_{_product}_{_method}",
                arch="vit_small_patch16_224",
                in_chans=len(_bands),
                bands=_bands,
                recipe=_recipe,
                filename=_file,
                sha256=_prefix,
                url=_SSL4EO_L_BASE + _file,
                input_size=224,
                license="CC0-1.0",
                reference=_SSL4EO_L_REF,
                extra={"dataset": "SSL4EO-L", "ssl_method": _method},
            )
        )

register_weights(
    WeightsEntry(
        name="deit_small_imagenet",
        arch="vit_small_patch16_224",
        in_chans=3,
        bands=_OLI_SR_RGB,
        recipe="ssl4eo_l_sr_uint8",
        filename="deit_small_patch16_224-cd65a155.pth",
        sha256="cd65a155",
        url="https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth",
        input_size=224,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        license="Apache-2.0",
        reference="Touvron et al. (2021), DeiT, https://arxiv.org/abs/2012.12877",
        extra={"dataset": "ImageNet-1k", "timm_tag": "deit_small_patch16_224.fb_in1k"},
    )
)
register_weights(
    WeightsEntry(
        name="resnet50_imagenet",
        arch="resnet50",
        in_chans=3,
        bands=_OLI_SR_RGB,
        recipe="ssl4eo_l_sr_uint8",
        filename="resnet50-11ad3fa6.pth",
        sha256="11ad3fa6",
        url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        input_size=None,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        license="BSD-3-Clause",
        reference="torchvision ResNet50_Weights.IMAGENET1K_V2",
        extra={"dataset": "ImageNet-1k"},
    )
)
del _sensor, _product, _bands, _recipe, _hashes, _method, _prefix, _file


def get_weights_entry(name: str) -> WeightsEntry:
    """The registry entry called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"No weights registered as {name!r}; registered: {sorted(_REGISTRY)}. "
            "Use one of these, or pass a timm architecture with `weights_path`."
        ) from None


def default_cache_dir() -> Path:
    """``$EOCAUSAL_CACHE/weights`` if set, else ``~/.cache/eocausal/weights``."""
    root = os.environ.get("EOCAUSAL_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "eocausal"
    return base / "weights"


def list_weights(cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Registered weights and whether their file is present in ``cache_dir``.

    Returns
    -------
    DataFrame
        Columns ``name, arch, in_chans, bands, recipe, filename, sha256, present, url``.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    rows = []
    for e in _REGISTRY.values():
        rows.append(
            {
                "name": e.name,
                "arch": e.arch,
                "in_chans": e.in_chans,
                "bands": ",".join(e.bands),
                "recipe": e.recipe,
                "filename": e.filename,
                "sha256": e.sha256,
                "present": (cache / e.filename).is_file(),
                "url": e.url,
            }
        )
    return pd.DataFrame(rows)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> str:
    """Check the sha256 of ``path`` against ``expected`` and return the full digest.

    ``expected`` is either a full 64-character digest (compared exactly) or a
    shorter hex prefix (the digest must start with it, as ``torch.hub`` checks
    the ``-<prefix>.pth`` of published file names).

    Raises
    ------
    WeightsError
        If the file is missing or the digest does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {str(path)!r} does not exist.")
    expected = expected.lower()
    if not expected or any(c not in "0123456789abcdef" for c in expected) or len(expected) > 64:
        raise WeightsError(f"Pinned sha256 {expected!r} for {str(path)!r} is not a hex digest.")
    actual = file_sha256(path)
    if not actual.startswith(expected):
        kind = "sha256" if len(expected) == 64 else f"sha256 prefix ({len(expected)} hex digits)"
        raise WeightsError(
            f"Weights file {str(path)!r} is corrupt or not the registered file: expected "
            f"{kind} {expected}, got {actual}. Delete it and run `eocausal weights fetch` again."
        )
    return actual


def fetch_weights(
    name: str, cache_dir: str | os.PathLike | None = None, *, overwrite: bool = False
) -> Path:
    """Download the registered weights ``name`` into ``cache_dir`` (the only download).

    The file is written to a temporary name, its sha256 verified, then renamed
    into place, so an interrupted download never leaves a file that looks valid.
    """
    entry = get_weights_entry(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / entry.filename
    if target.is_file() and not overwrite:
        verify_sha256(target, entry.sha256)
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", dir=cache)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        verify_sha256(tmp, entry.sha256)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"Could not download {entry.url} for {name!r}: {exc}") from exc
    return target


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint (plain, or under 'state_dict'/'model')."""
    for key in ("state_dict", "model", "teacher"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"Weights file {str(path)!r} does not hold a state dict of tensors.")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(
                f"Weights file {str(path)!r} entry {k!r} is {type(v).__name__}, not a tensor."
            )
        out[k.removeprefix("module.")] = v
    return out


def load_state_dict(path: str | os.PathLike, *, sha256: str | None = None) -> dict:
    """Read a state dict safely from ``path`` (``.safetensors`` or a torch file).

    Torch files are read with ``torch.load(weights_only=True)``; no pickle code runs.
    When ``sha256`` is given the file is verified first.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Weights file {str(path)!r} does not exist; run `eocausal weights fetch NAME` "
            "or pass the right `weights_path`."
        )
    if sha256 is not None:
        verify_sha256(path, sha256)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:  # unpickling errors, truncated files, ...
        raise WeightsError(f"Could not read weights file {str(path)!r} safely: {exc}") from exc
    return _unwrap_state_dict(obj, path)


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
        A registered weights name (see :func:`list_weights`), ``"mosaiks"``
        (random convolutional features, no weights), or any timm architecture.
    weights_path : path, optional
        Local weights file. For a registered name it defaults to
        ``cache_dir / entry.filename``; for a timm architecture it is required
        unless ``random_weights=True``.
    cache_dir : path, optional
        Directory of fetched weights; default :func:`default_cache_dir`.
    in_chans : int, optional
        Number of input bands. Must equal the registered ``in_chans`` for a
        registry name; required for a timm architecture and for ``"mosaiks"``.
    sha256 : str, optional
        Expected sha256 (full or prefix) of ``weights_path`` for a timm
        architecture; registry entries carry their own.
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
        Missing file, hash mismatch, keys that do not fit the model, or
        conflicting arguments.
    """
    import timm  # imported here: the embedding job and MOSAIKS do not need it

    if name == "mosaiks":
        from eocausal.encode.mosaiks import MosaiksEncoder

        if in_chans is None:
            raise WeightsError("`in_chans` is required for the 'mosaiks' encoder.")
        return MosaiksEncoder(in_chans, **kwargs)

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
        digest = verify_sha256(path, entry.sha256)
        state = load_state_dict(path)
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
    mean = kwargs.pop("mean", None)
    std = kwargs.pop("std", None)
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)
    digest = None
    if weights_path is not None:
        path = Path(weights_path)
        digest = verify_sha256(path, sha256) if sha256 is not None else None
        state = load_state_dict(path)
        digest = digest or file_sha256(path)
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
