"""Band names, scaling recipes and Landsat QA_PIXEL masking.

All conversion of raw pixel values to encoder inputs happens here (one place
for each decision). A recipe maps raw values of shape (..., C, H, W) with the
band names of the C axis to float32 values.

Recipes
-------
``"none"``
    Values unchanged (as float32).
``"c2_sr"``
    Landsat Collection 2 Level-2 surface reflectance: ``DN * 0.0000275 - 0.2``.
``"ssl4eo_l_sr_uint8"``
    The SSL4EO-L input scaling for surface-reflectance weights: reflectance
    0-0.3 mapped to 0-255, truncated to uint8 (as the pretraining data were
    stored), then divided by 255. On Collection 2 DNs that is
    ``floor(clip((DN - 7272.73) / (18181.82 - 7272.73), 0, 1) * 255) / 255``.
``"ssl4eo_l_toa_uint8"``
    The SSL4EO-L scaling for top-of-atmosphere weights, on TOA reflectance
    (floats, as in the USGS/Earth Engine TOA products) and brightness
    temperature in kelvin for thermal bands: reflectance 0-0.4 and
    temperature 248.15-318.15 K mapped to 0-255, truncated to uint8, /255.
    Thermal bands are recognised by name (B6, B6_VCID_1/2, B10, B11, ST_B6,
    ST_B10, lwir, lwir11, lwir12).

References
----------
Stewart et al. (2023), "SSL4EO-L: Datasets and foundation models for Landsat
imagery", NeurIPS Datasets and Benchmarks. USGS, "Landsat 8-9 Collection 2
Level 2 Science Product Guide" (scale factors, QA_PIXEL bits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from eocausal.errors import BandError, ConfigError

__all__ = [
    "QA_BAND_NAMES",
    "QA_PIXEL_MASK_BITS",
    "RECIPES",
    "apply_recipe",
    "find_qa_band",
    "is_thermal_band",
    "qa_pixel_invalid",
    "resolve_bands",
]

C2_SR_SCALE = 0.0000275
C2_SR_OFFSET = -0.2
#: QA_PIXEL bits that make a pixel invalid: 0 fill, 1 dilated cloud, 3 cloud, 4 cloud shadow.
QA_PIXEL_MASK_BITS = (0, 1, 3, 4)
QA_BAND_NAMES = ("qa_pixel", "qa", "bqa")
_THERMAL = {
    "b6",
    "b6_vcid_1",
    "b6_vcid_2",
    "b10",
    "b11",
    "st_b6",
    "st_b10",
    "lwir",
    "lwir11",
    "lwir12",
}


def _to_uint8_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``floor(clip((v - low) / (high - low), 0, 1) * 255) / 255`` as float32."""
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0
    return (np.floor(scaled + 1e-6) / 255.0).astype(np.float32)


def _none(values: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    return values.astype(np.float32, copy=False)


def _c2_sr(values: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    # float32 is exact to ~1e-7 reflectance for 16-bit DNs
    return values.astype(np.float32) * np.float32(C2_SR_SCALE) + np.float32(C2_SR_OFFSET)


def _ssl4eo_l_sr_uint8(values: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    reflectance = values.astype(np.float64) * C2_SR_SCALE + C2_SR_OFFSET
    return _to_uint8_unit(reflectance, 0.0, 0.3)


def _ssl4eo_l_toa_uint8(values: np.ndarray, band_names: Sequence[str]) -> np.ndarray:
    values = values.astype(np.float64)
    out = np.empty(values.shape, dtype=np.float32)
    for c, name in enumerate(band_names):
        if is_thermal_band(name):
            out[..., c, :, :] = _to_uint8_unit(values[..., c, :, :], 248.15, 318.15)
        else:
            out[..., c, :, :] = _to_uint8_unit(values[..., c, :, :], 0.0, 0.4)
    return out


RECIPES: dict[str, Callable[[np.ndarray, Sequence[str]], np.ndarray]] = {
    "none": _none,
    "c2_sr": _c2_sr,
    "ssl4eo_l_sr_uint8": _ssl4eo_l_sr_uint8,
    "ssl4eo_l_toa_uint8": _ssl4eo_l_toa_uint8,
}


def is_thermal_band(name: str) -> bool:
    """Whether a Landsat band name denotes a thermal band."""
    return name.lower() in _THERMAL


def apply_recipe(values: np.ndarray, recipe: str, band_names: Sequence[str]) -> np.ndarray:
    """Scale raw values with a named recipe.

    Parameters
    ----------
    values : ndarray of shape (..., C, H, W)
        Raw pixel values (DN or reflectance).
    recipe : str
        One of :data:`RECIPES`.
    band_names : sequence of str of length C

    Returns
    -------
    ndarray of float32, same shape as ``values``
    """
    try:
        fn = RECIPES[recipe]
    except KeyError:
        raise ConfigError(
            f"Unknown scaling recipe {recipe!r}; choose one of {sorted(RECIPES)}."
        ) from None
    if values.ndim < 3 or values.shape[-3] != len(band_names):
        raise ConfigError(
            f"Recipe {recipe!r} got values of shape {values.shape} for {len(band_names)} band names."
        )
    return fn(values, band_names)


def qa_pixel_invalid(qa: np.ndarray, bits: Sequence[int] = QA_PIXEL_MASK_BITS) -> np.ndarray:
    """Pixels flagged by Landsat Collection 2 QA_PIXEL bits.

    Parameters
    ----------
    qa : ndarray of integers, any shape
        QA_PIXEL values.
    bits : sequence of int, default=(0, 1, 3, 4)
        Bits that invalidate a pixel (fill, dilated cloud, cloud, cloud shadow).

    Returns
    -------
    ndarray of bool, same shape as ``qa``
        True where any of ``bits`` is set.
    """
    flag = 0
    for b in bits:
        flag |= 1 << int(b)
    return (qa.astype(np.int64) & flag) != 0


def find_qa_band(band_names: Sequence[str]) -> str | None:
    """The name of a QA_PIXEL band among ``band_names`` (case-insensitive), or None."""
    for name in band_names:
        if name.lower() in QA_BAND_NAMES:
            return name
    return None


def resolve_bands(
    requested: Sequence[str] | None, available: Sequence[str], *, where: str
) -> list[str]:
    """Match requested band names to available ones (case-insensitive).

    Parameters
    ----------
    requested : sequence of str or None
        None selects every available band except a QA band.
    available : sequence of str
        Band names the source offers.
    where : str
        The source (file, catalog) named in errors.

    Returns
    -------
    list of str
        Names as spelled by the source, in the requested order.

    Raises
    ------
    BandError
        Naming every absent band and listing the available ones.
    """
    if requested is None:
        qa = find_qa_band(available)
        return [b for b in available if b != qa]
    lookup = {b.lower(): b for b in available}
    missing = [b for b in requested if b.lower() not in lookup]
    if missing:
        raise BandError(
            f"Band(s) {missing} not found in {where}; available bands: {list(available)}. "
            "Fix the config field `imagery.bands` (ChipSpec(bands=...)), or name the bands of the "
            "source (band_names=...)."
        )
    return [lookup[b.lower()] for b in requested]
