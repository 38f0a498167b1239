"""The weights registry, and safe local loading of weights.

Weights are never downloaded implicitly. :func:`fetch_weights` is the only
function that touches the network (``eocausal weights fetch NAME``); every
other function reads a local file, checks its sha256 and loads it with
``torch.load(weights_only=True)`` (or safetensors). Building the timm model
around the weights is :func:`eocausal.encode.backbones.build_encoder`.

The registry follows torchgeo's weight enums: one entry per set of weights,
carrying the timm architecture, the number and names of the input bands, the
name of the pixel scaling recipe (applied by :mod:`eocausal.imagery` before
the chips reach the encoder), the file name, the pinned sha256 and the source
URL.

Trust model
-----------
A weights file is loaded only when its full 64-digit sha256 is known and
matches. The file is read once: the digest is computed on the bytes that are
then deserialised, so nothing can swap the file between check and load. Only
tensors are deserialised (torch's weights-only unpickler or safetensors); a
file holding other pickled Python objects is refused, never executed.

Where the full digest comes from:

* a timm architecture with a weights file of your own: the caller's
  ``sha256`` (config field ``encoder.weights_sha256``), which is required;
* registered weights pinned with a full digest: the registry entry;
* registered weights whose publisher gives only a hex prefix (torchgeo's
  SSL4EO-L files, torchvision and DeiT: 8 digits in the file name, 32 bits).
  The prefix is all there is to check a download against, and 32 bits catch
  corruption and mix-ups, but a file forged to match a 32-bit prefix costs
  about 2**32 hashes. So once :func:`fetch_weights` has verified the prefix it
  records the file's full digest beside it, in ``<file>.sha256``
  (``sha256sum`` format), and every later load requires that recorded digest:
  a file swapped or altered after the download is refused. A file without a
  record (copied in by hand, or fetched by an older eocausal) is refused with
  the fix: ``eocausal weights fetch NAME`` verifies it and writes the record.

Every digest known for a file must match: the registry pin, the record, and a
full ``sha256`` the caller pins for registered weights too. The record is trust
on first use: it proves the file is the one that passed the prefix check at
download, and whoever can rewrite the cache folder can rewrite the record with
it. To close that, pin the full digest in the configuration
(``encoder.weights_sha256``), taken once from a copy you trust.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from eocausal.atomic import file_sha256
from eocausal.atomic import write_text
from eocausal.errors import WeightsError

__all__ = [
    "WeightsEntry",
    "default_cache_dir",
    "fetch_weights",
    "file_sha256",
    "get_weights_entry",
    "list_weights",
    "load_state_dict",
    "record_sha256",
    "register_weights",
    "verify_sha256",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
        ``name-<prefix>.pth``) when the publisher pins only that; a prefix is
        checked at download, and loads then need the full digest recorded by
        :func:`fetch_weights` (see the module's trust model).
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
        Columns ``name, arch, in_chans, bands, recipe, filename, sha256, present,
        recorded, url``; ``recorded`` says whether ``<file>.sha256`` holds the
        file's full digest (written by :func:`fetch_weights`).
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
                "recorded": _record_path(cache / e.filename).is_file(),
                "url": e.url,
            }
        )
    return pd.DataFrame(rows)


def _check_pin(expected: str, path: Path) -> str:
    """``expected`` as lower-case hex (1 to 64 digits) or raise."""
    pin = str(expected).lower()
    if not pin or any(c not in "0123456789abcdef" for c in pin) or len(pin) > 64:
        raise WeightsError(f"Pinned sha256 {expected!r} for {str(path)!r} is not a hex digest.")
    return pin


def _mismatch(path: Path, pin: str, actual: str) -> WeightsError:
    kind = "sha256" if len(pin) == 64 else f"sha256 prefix ({len(pin)} hex digits)"
    return WeightsError(
        f"Weights file {str(path)!r} is corrupt or not the registered file: expected "
        f"{kind} {pin}, got {actual}. Delete it and run `eocausal weights fetch` again."
    )


def verify_sha256(path: str | os.PathLike, expected: str) -> str:
    """Check the sha256 of ``path`` against ``expected`` and return the full digest.

    ``expected`` is either a full 64-character digest (compared exactly) or a
    shorter hex prefix (the digest must start with it, as ``torch.hub`` checks
    the ``-<prefix>.pth`` of published file names). This is the download check;
    loading goes through :func:`load_state_dict`, which needs a full digest.

    Raises
    ------
    WeightsError
        If the file is missing or the digest does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {str(path)!r} does not exist.")
    pin = _check_pin(expected, path)
    actual = file_sha256(path)
    if not actual.startswith(pin):
        raise _mismatch(path, pin, actual)
    return actual


def _record_path(path: Path) -> Path:
    """``<file>.sha256``: where the full digest of a verified weights file is recorded."""
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    """The full digest recorded beside ``path``, or None when there is no record."""
    record = _record_path(path)
    if not record.is_file():
        return None
    fields = record.read_text(encoding="utf-8").split()
    digest = fields[0].lower() if fields else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise WeightsError(
            f"{str(record)!r} is not a sha256 record (expected '<64 hex digits>  {path.name}'); "
            "delete it and run `eocausal weights fetch NAME` to verify the file and record it again."
        )
    return digest


def _changed(path: Path, recorded: str, actual: str) -> WeightsError:
    return WeightsError(
        f"Weights file {str(path)!r} changed since its sha256 was recorded in "
        f"{str(_record_path(path))!r}: recorded {recorded}, now {actual}. Restore the original "
        "file, or delete both files and run `eocausal weights fetch NAME` again."
    )


def record_sha256(path: str | os.PathLike, expected: str) -> str:
    """Verify ``path`` against ``expected`` and record its full sha256 in ``<file>.sha256``.

    ``expected`` is the full digest or the prefix its publisher pins. An
    existing record must match the file (a file changed since it was recorded
    is refused, not re-recorded). :func:`fetch_weights` calls this; call it
    yourself for a registered file kept outside the cache.

    Returns
    -------
    str
        The full sha256 of the file.
    """
    path = Path(path)
    digest = verify_sha256(path, expected)
    recorded = _recorded_sha256(path)
    if recorded is None:
        write_text(f"{digest}  {path.name}\n", _record_path(path))
    elif recorded != digest:
        raise _changed(path, recorded, digest)
    return digest


def fetch_weights(
    name: str, cache_dir: str | os.PathLike | None = None, *, overwrite: bool = False
) -> Path:
    """Download the registered weights ``name`` into ``cache_dir`` (the only download).

    The file is written to a temporary name, its sha256 verified, then renamed
    into place, so an interrupted download never leaves a file that looks valid.
    Its full sha256 is then recorded in ``<file>.sha256`` (see the module's
    trust model); a file already in the cache is verified and recorded the same
    way, and refused if it changed since it was recorded.
    """
    entry = get_weights_entry(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / entry.filename
    if target.is_file() and not overwrite:
        record_sha256(target, entry.sha256)
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.filename}.", dir=cache)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        digest = verify_sha256(tmp, entry.sha256)
        record = _record_path(target)
        record.unlink(missing_ok=True)  # the old file's record goes before the file does
        os.replace(tmp, target)
        write_text(f"{digest}  {target.name}\n", record)
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


def _verified_bytes(path: Path, pins: Sequence[str], fix: str) -> tuple[bytes, str]:
    """Read ``path`` once and check it against every digest known for it.

    ``pins`` are full digests or prefixes; the recorded digest (``<file>.sha256``)
    is checked when present, and one of them must be a full digest.
    """
    if not path.is_file():
        raise WeightsError(
            f"Weights file {str(path)!r} does not exist; run `eocausal weights fetch NAME` "
            "or pass the right `weights_path`."
        )
    pins = [_check_pin(p, path) for p in pins]
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    for pin in pins:
        if not digest.startswith(pin):
            raise _mismatch(path, pin, digest)
    recorded = _recorded_sha256(path)
    if recorded is not None and recorded != digest:
        raise _changed(path, recorded, digest)
    if recorded is None and not any(len(p) == 64 for p in pins):
        shortest = min((len(p) for p in pins), default=0)
        raise WeightsError(
            f"Weights file {str(path)!r}: only a sha256 prefix ({shortest} hex digits) is pinned "
            f"and no full digest is recorded in {str(_record_path(path))!r}; a prefix is "
            f"checked at download only. {fix}"
        )
    return data, digest


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _unreadable(path: Path, exc: Exception, reason: str | None = None) -> WeightsError:
    reason = _first_line(str(exc)) if reason is None else reason
    detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return WeightsError(
        f"Could not read weights file {str(path)!r}: {detail}; it is truncated or not a "
        "torch or safetensors weights file."
    )


def _deserialize(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Tensors from the verified bytes of a ``.safetensors`` or torch file; no pickle code runs."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError:
            raise WeightsError(
                f"Reading {str(path)!r} needs the `safetensors` package (pip install "
                "safetensors; timm depends on it), or save the weights with torch.save."
            ) from None
        try:
            obj = load_safetensors(data)
        except Exception as exc:  # malformed header, truncated data
            raise _unreadable(path, exc) from exc
    else:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's weights-only unpickler wraps its reason in advice to retry unsafely
            reason = _first_line(str(exc).split("WeightsUnpickler error:")[-1])
            if reason.startswith("Unsupported operand"):  # not a pickle torch.save writes
                raise _unreadable(path, exc, reason) from None
            raise WeightsError(
                f"{path} holds pickled Python objects, which eocausal never loads; save a plain "
                "state_dict (torch.save(model.state_dict(), path)) or a safetensors file"
            ) from None
        except Exception as exc:  # truncated archives, files of other formats
            raise _unreadable(path, exc) from exc
    return _unwrap_state_dict(obj, path)


def _load_verified(
    path: Path, pins: Sequence[str], fix: str
) -> tuple[dict[str, torch.Tensor], str]:
    data, digest = _verified_bytes(path, pins, fix)
    return _deserialize(data, path), digest


def load_state_dict(path: str | os.PathLike, *, sha256: str) -> dict[str, torch.Tensor]:
    """Read a verified state dict from ``path`` (``.safetensors`` or a torch file).

    Parameters
    ----------
    path : path
        Weights file.
    sha256 : str
        Its full sha256 (64 hex digits), or a prefix when ``<file>.sha256``
        records the full digest (see the module's trust model).

    Returns
    -------
    dict of str -> Tensor

    Raises
    ------
    WeightsError
        Missing file, a digest that does not match, no full digest known, a
        file holding pickled Python objects, or a file that is not weights.

    Notes
    -----
    The file is read once and the digest computed on the bytes that are then
    deserialised (peak memory about twice the file size). Torch files go
    through ``torch.load(weights_only=True)``: no pickle code runs.
    """
    path = Path(path)
    fix = "Pin its full sha256 (64 hex digits, e.g. from `sha256sum`)."
    return _load_verified(path, [sha256], fix)[0]
