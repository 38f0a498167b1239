"""Chips produced by a user function of image keys: :class:`CallableSource`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from eocausal.errors import BandError, ConfigError, ImageryError
from eocausal.imagery.keyed import KeyedSource

__all__ = ["CallableSource"]


class CallableSource(KeyedSource):
    """Chips produced by a user function of image keys.

    Parameters
    ----------
    fn : callable
        ``fn(keys: ndarray of shape (n,)) -> ndarray of shape (n, C, H, W)``.
        An ``OSError``, ``KeyError`` or ``ValueError`` raised by ``fn``
        excludes the unit (the message becomes the reason).
    band_names : sequence of str, optional
        Default ``B1``, ``B2``, ... (C is learnt from the first call).
    nodata : float, optional
    pixel_size_m : float, optional
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        *,
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        pixel_size_m: float | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableSource needs a callable, got {type(fn).__name__}.")
        self.fn = fn
        self.band_names = list(band_names) if band_names is not None else []
        self.nodata = nodata
        self.pixel_size_m = pixel_size_m
        self.description = f"the callable {getattr(fn, '__name__', repr(fn))}"

    def has(self, keys: np.ndarray) -> np.ndarray:
        return np.ones(len(keys), dtype=bool)

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys)
        values = np.asarray(self.fn(keys))
        if values.ndim != 4 or values.shape[0] != len(keys):
            raise ImageryError(
                f"{self.description} returned shape {values.shape} for {len(keys)} keys; "
                "it must return (n, C, H, W)."
            )
        if not self.band_names:
            self.band_names = [f"B{i + 1}" for i in range(values.shape[1])]
        elif len(self.band_names) != values.shape[1]:
            raise BandError(
                f"{self.description} returned {values.shape[1]} bands for band_names {self.band_names}."
            )
        valid = np.ones((len(keys),) + values.shape[-2:], dtype=bool)
        if self.nodata is not None:
            valid &= ~np.any(values == self.nodata, axis=1)
        return values, valid
