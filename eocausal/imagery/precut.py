"""Pre-cut chips held in memory or an ``.npz`` file: :class:`PrecutChipSource`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eocausal.errors import BandError, ChipReadError, ImageryError
from eocausal.imagery.keyed import KeyedSource, key_strings

__all__ = ["PrecutChipSource"]


class PrecutChipSource(KeyedSource):
    """Pre-cut chips in memory, keyed by image key (units -> chips many-to-one).

    Parameters
    ----------
    images : ndarray of shape (K, C, H, W)
    keys : array-like of shape (K,)
        Unique keys (compared as strings with the units' ``image_key``).
    band_names : sequence of str, optional
        Default ``B1``, ``B2``, ...
    nodata : float, optional
        Pixel value marking invalid pixels (in every band).
    pixel_size_m : float, optional
        Ground pixel size, needed for scales given in kilometres.
    """

    def __init__(
        self,
        images: np.ndarray,
        keys: Any,
        band_names: Sequence[str] | None = None,
        *,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.ndim != 4:
            raise ImageryError(f"Pre-cut images must have shape (K, C, H, W); got {images.shape}.")
        keys = key_strings(keys)
        if keys.shape != (images.shape[0],):
            raise ImageryError(
                f"Got {keys.shape[0]} keys for {images.shape[0]} pre-cut images; give one key per image."
            )
        values, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            raise ImageryError(
                f"Pre-cut image keys must be unique; repeated: {values[counts > 1][:10].tolist()}."
            )
        if band_names is None:
            band_names = [f"B{i + 1}" for i in range(images.shape[1])]
        if len(band_names) != images.shape[1]:
            raise BandError(
                f"Got {len(band_names)} band names for pre-cut images with {images.shape[1]} bands."
            )
        self.images = images
        self.keys = keys
        self.band_names = [str(b) for b in band_names]
        self.nodata = nodata
        self.pixel_size_m = pixel_size_m
        self.description = f"the pre-cut chips ({images.shape[0]} images of {images.shape[1:]})"
        self._index = {k: i for i, k in enumerate(keys)}

    @classmethod
    def from_npz(
        cls,
        path: str | os.PathLike,
        *,
        images_key: str = "images",
        keys_key: str = "image_keys",
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> PrecutChipSource:
        """Load chips from an ``.npz`` file (no pickle) holding images and keys."""
        path = Path(path)
        if not path.exists():
            raise ImageryError(f"Pre-cut chip file not found: {path}.")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in (images_key, keys_key) if k not in data.files]
                if missing:
                    raise ImageryError(
                        f"{path} lacks array(s) {missing}; it holds {data.files}. Name its arrays "
                        "in `imagery.precut_images_key` and `imagery.precut_keys_key` "
                        "(images_key=, keys_key=)."
                    )
                images, keys = data[images_key], data[keys_key]
        except (OSError, ValueError) as exc:
            raise ChipReadError(f"Could not read pre-cut chip file {path}: {exc}") from exc
        return cls(images, keys, band_names, nodata=nodata, pixel_size_m=pixel_size_m)

    def has(self, keys: np.ndarray) -> np.ndarray:
        return np.array([k in self._index for k in key_strings(keys)], dtype=bool)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = [self._index[k] for k in key_strings(keys)]
        values = self.images[idx]
        valid = np.ones((len(idx),) + values.shape[-2:], dtype=bool)
        if self.nodata is not None:
            valid &= ~np.any(values == self.nodata, axis=1)
        return values, valid
