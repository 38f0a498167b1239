"""Sources of chips that are already cut, looked up by each unit's ``image_key``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

__all__ = ["KeyedSource", "key_strings"]


class KeyedSource(ABC):
    """Base class of sources of pre-cut chips looked up by image key.

    Subclasses provide ``band_names``, ``pixel_size_m`` (or None),
    ``has(keys)`` and ``get(keys)``.
    """

    band_names: list[str]
    pixel_size_m: float | None
    description: str

    @abstractmethod
    def has(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key can be served; ndarray of bool, shape (n,)."""

    @abstractmethod
    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chips for ``keys``: values (n, C, H, W) and valid masks (n, H, W)."""


def key_strings(keys: Any) -> np.ndarray:
    """Image keys as strings; integral floats (``3.0``) become ``"3"``."""
    arr = np.asarray(keys)
    if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
        arr = arr.astype(np.int64)
    return arr.astype(str)
