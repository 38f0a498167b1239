"""Scaling recipes and QA_PIXEL bits against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.errors import BandError, ConfigError
from eocausal.imagery.bands import apply_recipe, qa_pixel_invalid, resolve_bands


def _one(values, names=("red",)):
    return np.asarray(values, dtype=np.float64).reshape(len(names), 1, -1)


def test_c2_sr():
    out = apply_recipe(_one([0, 7273, 10000, 43636]), "c2_sr", ["red"])
    np.testing.assert_allclose(
        out.ravel(), [-0.2, 7273 * 2.75e-5 - 0.2, 0.075, 43636 * 2.75e-5 - 0.2], rtol=0, atol=1e-7
    )
    assert out.dtype == np.float32


def test_ssl4eo_l_sr_uint8():
    # reflectance 0 -> 0, 0.15 -> floor(127.5) = 127, 0.3 -> 255, clipped outside [0, 0.3]
    dn = (np.array([0.0, 0.15, 0.3, -0.1, 0.5, 0.3 * 100 / 255]) + 0.2) / 2.75e-5
    out = apply_recipe(_one(dn), "ssl4eo_l_sr_uint8", ["red"]).ravel()
    np.testing.assert_allclose(out, np.array([0, 127, 255, 0, 255, 100]) / 255, rtol=1e-6)
    np.testing.assert_allclose(
        apply_recipe(_one([7272.7, 18181.9]), "ssl4eo_l_sr_uint8", ["red"]).ravel(),
        [0, 1],
        atol=1e-6,
    )


def test_ssl4eo_l_toa_uint8_thermal_and_reflective():
    values = np.array([[[0.2, 0.4]], [[283.15, 318.15]]])  # red reflectance, B10 temperature (K)
    out = apply_recipe(values, "ssl4eo_l_toa_uint8", ["B4", "B10"])
    np.testing.assert_allclose(out[0, 0], [127 / 255, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], [127 / 255, 1.0], rtol=1e-6)  # (283.15-248.15)/70 = 0.5


def test_none_and_unknown_recipe():
    np.testing.assert_array_equal(apply_recipe(_one([3, 4]), "none", ["a"]), np.float32([[[3, 4]]]))
    with pytest.raises(ConfigError, match="Unknown scaling recipe"):
        apply_recipe(_one([1]), "toa", ["a"])


def test_qa_pixel_bits():
    qa = np.array(
        [0, 1, 2, 4, 8, 16, 32, 64, 21824, 21824 | 8]
    )  # 21824: clear land on Landsat 8 C2
    np.testing.assert_array_equal(
        qa_pixel_invalid(qa), [False, True, True, False, True, True, False, False, False, True]
    )


def test_resolve_bands():
    assert resolve_bands(None, ["SR_B4", "SR_B3", "QA_PIXEL"], where="x") == ["SR_B4", "SR_B3"]
    assert resolve_bands(["sr_b3"], ["SR_B4", "SR_B3"], where="x") == ["SR_B3"]
    with pytest.raises(BandError, match=r"\['B9'\] not found in file.tif"):
        resolve_bands(["B9"], ["SR_B4"], where="file.tif")
