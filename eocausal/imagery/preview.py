"""A PNG of sample chips at every scale, to check what the encoder will see."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eocausal.atomic import atomic_path
from eocausal.errors import ConfigError
from eocausal.imagery.bands import resolve_bands

__all__ = ["write_chip_preview"]

_RGB_GUESSES = (
    ("red", "green", "blue"),
    ("sr_b4", "sr_b3", "sr_b2"),
    ("b4", "b3", "b2"),
)


def _default_bands(names: Sequence[str]) -> list[str]:
    lower = {n.lower(): n for n in names}
    for guess in _RGB_GUESSES:
        if all(g in lower for g in guess):
            return [lower[g] for g in guess]
    return list(names[:3]) if len(names) >= 3 else [names[0]]


def _rgb(chip: np.ndarray) -> np.ndarray:
    return np.repeat(chip, 3, axis=0) if chip.shape[0] == 1 else chip


def _limits(chips: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """(3, 2) 2nd and 98th percentiles per channel over the valid pixels of ``chips``."""
    limits = np.zeros((3, 2))
    for c in range(3):
        values = np.concatenate([_rgb(x)[c][m] for x, m in zip(chips, masks)] or [np.zeros(0)])
        if values.size:
            limits[c] = np.percentile(values, [2, 98])
    return limits


def _stretch(chip: np.ndarray, mask: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) in [0, 1] with one stretch per channel, grey where invalid."""
    rgb = _rgb(chip)
    out = np.full(rgb.shape[1:] + (3,), 0.5)
    for c in range(3):
        lo, hi = limits[c]
        scaled = (rgb[c] - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb[c])
        out[..., c] = np.where(mask, np.clip(scaled, 0, 1), 0.5)
    return out


def write_chip_preview(
    dataset: Any,
    path: str | os.PathLike,
    *,
    n_units: int = 6,
    bands: Sequence[str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a PNG grid of chips: one row per sampled unit, one column per scale.

    Parameters
    ----------
    dataset : ChipDataset
    path : path-like
        Output PNG (written atomically).
    n_units : int, default=6
        Units sampled at random (with ``seed``) among the items.
    bands : sequence of str, optional
        Three bands shown as RGB (or one as grey); default red/green/blue
        when named so, else the first three.
    seed : int, default=0

    Returns
    -------
    Path
        Invalid (masked) pixels are grey; a time series shows its first date;
        excluded units are titled with their reason. Each scale is stretched once
        (2-98 percentiles over the valid pixels of all its chips shown), so the chips
        of one scale can be compared.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n_units < 1:
        raise ConfigError(f"n_units must be at least 1, got {n_units}.")
    show = (
        resolve_bands(bands, dataset.band_names, where="the chip dataset")
        if bands
        else _default_bands(dataset.band_names)
    )
    if len(show) not in (1, 3):
        raise ConfigError(f"Preview bands must be 1 or 3 names, got {list(show)}.")
    pos = [dataset.band_names.index(b) for b in show]
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(dataset), size=min(n_units, len(dataset)), replace=False))
    scales = dataset.spec.scales
    fig, axes = plt.subplots(
        len(picks), len(scales), figsize=(2.2 * len(scales), 2.2 * len(picks)), squeeze=False
    )
    items = [dataset[int(i)] for i in picks]

    def first_date(item: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
        chip, mask = item["chips"][name].numpy(), item["masks"][name].numpy()
        return (chip[0], mask[0]) if chip.ndim == 4 else (chip, mask)

    limits = {}
    for s in scales:
        pairs = [first_date(item, s.name) for item in items]
        limits[s.name] = _limits([c[pos] for c, _ in pairs], [m for _, m in pairs])
    for row, item in enumerate(items):
        for col, s in enumerate(scales):
            chip, mask = first_date(item, s.name)
            ax = axes[row, col]
            ax.imshow(_stretch(chip[pos], mask, limits[s.name]), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            title = f"{item['unit_id']} | {s.name}"
            if item["excluded"]:
                title += "\n(excluded)"
            else:
                title += f"\nvalid {float(item['valid_fraction'][s.name]):.2f}"
            ax.set_title(title, fontsize=7)
    fig.suptitle(f"bands {', '.join(show)}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
