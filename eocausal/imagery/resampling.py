"""Resampling chips to ``out_px`` with a validity mask.

Separable, per axis: exact area averaging when shrinking (output pixel ``i``
averages input pixels over ``[i s, (i + 1) s)``, ``s = n_in / n_out``,
partial pixels weighted by overlap), bilinear interpolation with
half-pixel centres when enlarging (``x = (i + 0.5) / s' - 0.5`` clamped to
the edge; equal to ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)``). Invalid pixels get no weight: each output is the
weighted mean of valid inputs, and is valid when valid inputs carry at least
half of its weight.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["resample", "resample_weights"]


def resample_weights(n_in: int, n_out: int) -> np.ndarray:
    """Per-axis resampling matrix.

    Parameters
    ----------
    n_in, n_out : int

    Returns
    -------
    ndarray of float64, shape (n_out, n_in)
        Rows sum to 1. Area weights when ``n_out < n_in``, bilinear
        (half-pixel centres, edge-clamped) when ``n_out > n_in``, identity
        when equal.
    """
    if n_in == n_out:
        return np.eye(n_in)
    M = np.zeros((n_out, n_in))
    if n_out < n_in:
        s = n_in / n_out
        for i in range(n_out):
            a, b = i * s, (i + 1) * s
            j0, j1 = math.floor(a), min(math.ceil(b), n_in)
            for j in range(j0, j1):
                M[i, j] = max(0.0, min(b, j + 1) - max(a, j))
            M[i] /= s
        return M
    scale = n_in / n_out
    for i in range(n_out):
        x = max((i + 0.5) * scale - 0.5, 0.0)
        j0 = min(math.floor(x), n_in - 1)
        j1 = min(j0 + 1, n_in - 1)
        f = x - j0
        M[i, j0] += 1.0 - f
        M[i, j1] += f
    return M


@functools.lru_cache(maxsize=256)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse form of :func:`resample_weights`: indices and weights, each of shape (n_out, K)."""
    M = resample_weights(n_in, n_out)
    K = int(max(1, (M > 0).sum(axis=1).max()))
    idx = np.zeros((n_out, K), dtype=np.int64)
    wts = np.zeros((n_out, K))
    for i in range(n_out):
        nz = np.flatnonzero(M[i])
        idx[i, : nz.size], wts[i, : nz.size] = nz, M[i, nz]
    return idx, wts


def _along_rows(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, wts = _taps(x.shape[-2], n_out)
    return np.einsum("...okw,ok->...ow", x[..., idx, :], wts.astype(x.dtype))


def _along_cols(x: np.ndarray, n_out: int) -> np.ndarray:
    idx, wts = _taps(x.shape[-1], n_out)
    return np.einsum("...hok,ok->...ho", x[..., idx], wts.astype(x.dtype))


def resample(
    values: np.ndarray, valid: np.ndarray, out_h: int, out_w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resample chips with a validity mask (see the module notes).

    Parameters
    ----------
    values : ndarray of shape (..., C, h, w)
    valid : ndarray of bool, shape (..., h, w)
    out_h, out_w : int

    Returns
    -------
    values : ndarray of float32, shape (..., C, out_h, out_w)
        Zero where invalid.
    valid : ndarray of bool, shape (..., out_h, out_w)

    Notes
    -----
    With per-axis weight matrices :math:`M_y, M_x` (:func:`resample_weights`)
    and mask :math:`m`, the output is
    :math:`(M_y (x m) M_x^T) / (M_y m M_x^T)`, valid where the denominator
    is at least 0.5. The matrices are applied as sparse taps (no BLAS call,
    which oversubscribes threads inside data-loader workers).
    """
    h, w = values.shape[-2:]
    if (h, w) == (out_h, out_w):
        out = np.where(valid[..., None, :, :], values, 0).astype(np.float32)
        return out, valid.copy()
    if valid.all():  # the common case: no weights to renormalise
        out = _along_cols(_along_rows(values.astype(np.float32, copy=False), out_h), out_w)
        return out.astype(np.float32, copy=False), np.ones(valid.shape[:-2] + (out_h, out_w), bool)
    m = valid.astype(np.float32)
    x = np.where(valid[..., None, :, :], values, 0).astype(np.float32)
    num = _along_cols(_along_rows(x, out_h), out_w)
    den = _along_cols(_along_rows(m, out_h), out_w)
    out_valid = den >= 0.5 - 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(
            out_valid[..., None, :, :], num / np.where(den > 0, den, 1.0)[..., None, :, :], 0.0
        )
    return out.astype(np.float32, copy=False), out_valid
