"""Figures of a run: CATE distribution and CATE map (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eocausal.atomic import atomic_path  # noqa: E402

__all__ = ["plot_cate_distribution", "plot_cate_map", "plot_salience", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save as PNG (atomic rename) and close the figure."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return Path(path)


def plot_cate_distribution(
    tau_hat: np.ndarray, tau_true: np.ndarray | None = None, *, ax=None
) -> Figure:
    """Histogram of estimated CATEs on held-out units, with the true effects when known."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
    else:
        fig = ax.figure
    bins = np.histogram_bin_edges(
        np.concatenate([tau_hat, tau_true]) if tau_true is not None else tau_hat, bins=30
    )
    ax.hist(tau_hat, bins=bins, alpha=0.75, label="estimated (held-out)", color="#0969da")
    if tau_true is not None:
        ax.hist(tau_true, bins=bins, alpha=0.45, label="true", color="#cf222e")
        r = np.corrcoef(tau_hat, tau_true)[0, 1]
        ax.set_title(f"CATE distribution (corr. with truth {r:.2f})", fontsize=10)
    else:
        ax.set_title("CATE distribution", fontsize=10)
    ax.axvline(float(np.mean(tau_hat)), color="k", lw=1, ls="--", label="mean estimate")
    ax.set_xlabel("treatment effect")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    return fig


def plot_cate_map(
    map_path: str | os.PathLike,
    *,
    background: str | os.PathLike | None = None,
    rgb_bands: tuple[str, str, str] = ("red", "green", "blue"),
    points_xy: np.ndarray | None = None,
    ax=None,
) -> Figure:
    """The CATE GeoTIFF drawn over an RGB rendering of the imagery, units as dots.

    The background is warped to the map's CRS when it has another one; ``points_xy``
    must be in the map's CRS.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 5.2))
    else:
        fig = ax.figure
    with rasterio.open(map_path) as src:
        cate = src.read(1, masked=True)
        b = src.bounds
        map_crs = src.crs
    extent = (b.left, b.right, b.bottom, b.top)
    if background is not None:
        from contextlib import ExitStack

        from rasterio.vrt import WarpedVRT

        with ExitStack() as stack:
            bg = stack.enter_context(rasterio.open(background))
            if map_crs is not None and bg.crs is not None and bg.crs != map_crs:
                bg = stack.enter_context(WarpedVRT(bg, crs=map_crs))
            names = list(bg.descriptions)
            idx = [names.index(n) + 1 for n in rgb_bands] if all(n in names for n in rgb_bands) else [1, 2, 3]
            out_shape = (3, min(bg.height, 512), min(bg.width, 512))
            rgb = bg.read(idx, out_shape=out_shape, masked=True).astype(float)
            bb = bg.bounds
        lo, hi = np.nanpercentile(rgb.filled(np.nan), [2, 98])
        rgb = np.clip((rgb.filled(lo) - lo) / max(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)
        ax.imshow(rgb, extent=(bb.left, bb.right, bb.bottom, bb.top))
    im = ax.imshow(cate, extent=extent, cmap="RdYlBu_r", alpha=0.6 if background is not None else 1)
    if points_xy is not None and len(points_xy):
        ax.scatter(points_xy[:, 0], points_xy[:, 1], s=2, c="k", alpha=0.5, label="study units")
        ax.legend(fontsize=8, loc="lower right")
    fig.colorbar(im, ax=ax, shrink=0.8, label="estimated CATE")
    ax.set_title("Estimated CATE over the imagery", fontsize=10)
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.tick_params(labelsize=7)
    return fig


def plot_salience(chips: list[np.ndarray], salience: list[np.ndarray], units: list[list[str]],
                  band_names: list[str]) -> Figure:
    """Per image type, its most typical units: the chip (RGB or first band) and |salience|.

    ``chips[k]`` has shape (m, C, H, W) and ``salience[k]`` (m, H, W) for type ``k``: the
    absolute gradient of the type's log-probability with respect to the pixels, summed over
    bands (:meth:`eocausal.image_types.ImageTypeModel.salience`).
    """
    lower = [b.lower() for b in band_names]
    rgb = [lower.index(b) for b in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(lower) else None
    n_types, m = len(chips), max(len(c) for c in chips)
    fig, axes = plt.subplots(n_types, 2 * m, figsize=(1.9 * 2 * m, 2.0 * n_types), squeeze=False)
    for k in range(n_types):
        for j in range(m):
            ax_img, ax_sal = axes[k, 2 * j], axes[k, 2 * j + 1]
            for ax in (ax_img, ax_sal):
                ax.set_xticks([])
                ax.set_yticks([])
            if j >= len(chips[k]):
                ax_img.axis("off")
                ax_sal.axis("off")
                continue
            chip = chips[k][j]
            img = chip[rgb].transpose(1, 2, 0) if rgb is not None else chip[0]
            lo, hi = np.percentile(img, [2, 98])
            ax_img.imshow(np.clip((img - lo) / (hi - lo + 1e-12), 0, 1), cmap=None if rgb else "gray")
            ax_img.set_title(f"type {k}: {units[k][j]}", fontsize=7)
            ax_sal.imshow(salience[k][j], cmap="magma")
            ax_sal.set_title("|salience|", fontsize=7)
    fig.tight_layout()
    return fig
