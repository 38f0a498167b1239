"""A deterministic Landsat-like scene with spatial structure at several scales.

The scene is a real GeoTIFF: six uint16 bands (blue, green, red, nir08,
swir16, swir22) scaled like Landsat Collection 2 Level-2 surface reflectance
(DN = (reflectance + 0.2) / 0.0000275), 30 m pixels in UTM zone 36N
(EPSG:32636, northern Uganda), nodata = 0 in an irregular margin.

Structure, from fine to coarse:

* field parcels (rectangles of 150-600 m) of crop or bare soil;
* settlements: roofs clustered in villages and two towns, and laterite roads
  between towns;
* a mid-scale vegetation pattern (length scale about 300 m) that dominates
  what a 1 km chip shows of greenness;
* a regional greenness gradient (length scale about 5 km), visible only once
  chips are large enough to average the mid-scale pattern away.

The latent maps (built-up mask, regional greenness) are returned so that
trials placed on the scene can define effects from them with known truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine, from_origin
from scipy import ndimage

from eocausal.atomic import atomic_path

__all__ = ["Scene", "BAND_NAMES", "make_scene", "write_scene"]

BAND_NAMES = ("blue", "green", "red", "nir08", "swir16", "swir22")

# Surface reflectance of the land-cover end members, per band.
_VEGETATION = np.array([0.035, 0.075, 0.045, 0.38, 0.20, 0.09])
_SOIL = np.array([0.09, 0.13, 0.17, 0.24, 0.32, 0.26])
_ROOF = np.array([0.22, 0.24, 0.26, 0.28, 0.31, 0.29])
_ROAD = np.array([0.13, 0.17, 0.24, 0.27, 0.35, 0.31])

_SR_SCALE, _SR_OFFSET = 0.0000275, -0.2


@dataclass
class Scene:
    """A simulated scene and its latent maps.

    Attributes
    ----------
    reflectance : ndarray of shape (6, height, width), float32
        Surface reflectance; NaN in the nodata margin.
    valid : ndarray of shape (height, width), bool
        False in the nodata margin.
    built : ndarray of shape (height, width), bool
        Roof pixels.
    greenness_regional : ndarray of shape (height, width), float64
        The regional (length scale about 5 km) greenness component, standardised.
    transform : Affine
        Pixel to UTM coordinates.
    crs : str
        ``"EPSG:32636"``.
    village_xy : ndarray of shape (n_villages, 2)
        Village centres in pixel coordinates (col, row).
    """

    reflectance: np.ndarray
    valid: np.ndarray
    built: np.ndarray
    greenness_regional: np.ndarray
    transform: Affine
    crs: str
    village_xy: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.valid.shape

    @property
    def pixel_size(self) -> float:
        return float(self.transform.a)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian random field with unit variance and correlation length ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (field - field.mean()) / field.std()


def _parcels(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Rectangular field parcels (5-20 px a side) with one N(0, 1) value each."""
    h, w = shape
    rows = np.cumsum(rng.integers(5, 21, size=h))
    cols = np.cumsum(rng.integers(5, 21, size=w))
    row_id = np.searchsorted(rows, np.arange(h), side="right")
    col_id = np.searchsorted(cols, np.arange(w), side="right")
    values = rng.standard_normal((row_id.max() + 1, col_id.max() + 1))
    return values[row_id[:, None], col_id[None, :]]


def _roads(rng: np.random.Generator, shape: tuple[int, int], towns: np.ndarray) -> np.ndarray:
    """Two-pixel-wide gently curving roads between towns and to the scene edge."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    ends = [(towns[i], towns[j]) for i in range(len(towns)) for j in range(i + 1, len(towns))]
    ends += [(t, np.array([rng.uniform(0, w), 0.0 if t[1] > h / 2 else h - 1.0])) for t in towns]
    for a, b in ends:
        n = int(np.hypot(*(b - a)) * 2) + 2
        s = np.linspace(0, 1, n)
        bend = rng.normal(0, 0.08) * np.hypot(*(b - a)) * np.sin(np.pi * s)
        direction = (b - a) / max(np.hypot(*(b - a)), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        pts = a[None, :] + s[:, None] * (b - a)[None, :] + bend[:, None] * normal[None, :]
        cols = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
        rows = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
        mask[rows, cols] = True
    return ndimage.binary_dilation(mask, iterations=1)


def make_scene(size: int = 1024, *, seed: int = 0, pixel_size: float = 30.0) -> Scene:
    """Generate the scene in memory.

    Parameters
    ----------
    size : int, default=1024
        Width and height in pixels (1024 px = 30.7 km at 30 m).
    seed : int, default=0
        Seed of every random draw; the same seed gives the same scene.
    pixel_size : float, default=30.0
        Pixel size in metres.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    h, w = shape

    regional = _smooth_field(rng, shape, sigma=size / 12)  # ~2.5 km at 1024 px
    regional = (regional - regional.mean()) / regional.std()
    mid = _smooth_field(rng, shape, sigma=8)  # ~240 m
    parcels = _parcels(rng, shape)
    veg_logit = 0.9 * regional + 1.6 * mid + 1.0 * parcels
    veg = 1.0 / (1.0 + np.exp(-veg_logit))

    towns = rng.uniform(0.2, 0.8, size=(2, 2)) * np.array([w, h])
    n_villages = 60
    village_xy = rng.uniform(0.04, 0.96, size=(n_villages, 2)) * np.array([w, h])
    rr, cc = np.mgrid[0:h, 0:w]
    density = np.zeros(shape)
    for x, y in towns:
        density += 0.35 * np.exp(-((cc - x) ** 2 + (rr - y) ** 2) / (2 * 25.0**2))
    sizes = rng.uniform(3.0, 9.0, size=n_villages)
    for (x, y), s in zip(village_xy, sizes, strict=True):
        density += 0.45 * np.exp(-((cc - x) ** 2 + (rr - y) ** 2) / (2 * s**2))
    built = rng.random(shape) < np.clip(density, 0, 0.9)
    roads = _roads(rng, shape, towns)
    built &= ~roads

    refl = veg[None] * _VEGETATION[:, None, None] + (1 - veg[None]) * _SOIL[:, None, None]
    refl = np.where(roads[None], _ROAD[:, None, None], refl)
    refl = np.where(built[None], _ROOF[:, None, None], refl)
    refl = refl * (1 + 0.03 * rng.standard_normal(shape))[None]  # illumination/sensor noise

    # Irregular nodata margin: a swath edge along the left and a ragged top.
    edge = 40 + 30 * np.sin(rr / 90.0) + 10 * _smooth_field(rng, shape, 20)
    valid = (cc > edge) & (rr > 12 + 6 * np.sin(cc / 37.0))
    refl = np.where(valid[None], refl, np.nan).astype(np.float32)

    transform = from_origin(400_000.0, 300_000.0, pixel_size, pixel_size)
    return Scene(refl, valid, built, regional, transform, "EPSG:32636", village_xy)


def write_scene(scene: Scene, path: str | Path, *, blocksize: int = 256) -> Path:
    """Write the scene as a tiled, deflate-compressed uint16 GeoTIFF (nodata = 0).

    Band descriptions carry the band names, so bands can be selected by name.
    """
    path = Path(path)
    dn = np.round((np.nan_to_num(scene.reflectance, nan=0.0) - _SR_OFFSET) / _SR_SCALE)
    dn = np.clip(dn, 1, 65535).astype(np.uint16)
    dn[:, ~scene.valid] = 0
    h, w = scene.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": len(BAND_NAMES),
        "dtype": "uint16",
        "crs": scene.crs,
        "transform": scene.transform,
        "nodata": 0,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": "deflate",
        "predictor": 2,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(dn)
        for i, name in enumerate(BAND_NAMES, start=1):
            dst.set_band_description(i, name)
        dst.update_tags(
            eocausal_scene="simulated Landsat C2 L2 surface reflectance",
            scale=str(_SR_SCALE),
            offset=str(_SR_OFFSET),
        )
    return path
