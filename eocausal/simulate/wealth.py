"""A built-in wealth study: a survey to make a wealth map, and many trials that reuse it.

The imagery is generated FROM wealth, as in the simulation of "One Map, Many
Trials" (METHODS.md section 5, :math:`X = g(Y) + \\text{noise}`): a latent
wealth surface, then a Landsat-like scene (six bands, 30 m pixels,
EPSG:32636, nodata margin, written by :func:`eocausal.simulate.write_scene`)
RENDERED from it, pixel by pixel, with image noise that does not depend on
wealth. The baseline scene renders the wealth before the trials and the
endline scene renders the wealth after them, with the same noise. The wealth
map is made from the endline scene, so the survey and the trial outcomes are
endline wealth.

Wealth
------
.. math::

    Y_0(p) = \\operatorname{std}\\Big(\\sum_{s \\in \\{1, 3, 8\\}} a_s F_s(p) + a_v V(p)\\Big),

where :math:`F_s` is a Gaussian random field with unit variance and
correlation length (Gaussian kernel sigma) :math:`s` km, :math:`V` the
settlement structure (two towns and 60 villages, Gaussian bumps of
90-750 m, capped at 1), :math:`a = (0.3, 0.5, 0.7, 0.5)` and :math:`\\operatorname{std}`
standardises over the valid pixels (mean 0, SD 1).

Rendering
---------
Pixel :math:`p` with wealth :math:`y = Y(p)` is rendered as

.. math::

    \\text{roof}(p) = 1\\{U_p < \\rho(y)\\},\\quad
    \\rho(y) = \\max(0.005,\\, 0.08 + 0.035\\,y),\\qquad
    v(p) = \\operatorname{clip}_{[0, 1]}\\big(\\sigma(N_p) - 0.08\\,y\\big),

(:math:`\\sigma` the logistic function) with reflectance
:math:`\\big(v\\,r_{\\text{veg}} + (1 - v)\\,r_{\\text{soil}}\\big)\\,(1 + \\epsilon_p)`,
or the roof end member on roofs and the road end member on roads. The noise
:math:`U_p \\sim U(0, 1)`, the vegetation noise
:math:`N_p = a_G G_5(p) + 0.5 M(p) + 0.5 P(p)` (a 5 km regional field of weight
:math:`a_G` = ``regional_greenness``, 0 by default, a
240 m field, field parcels of 150-600 m), the roads (between the towns) and
:math:`\\epsilon_p \\sim N(0, 0.03^2)` are drawn once and shared by the
baseline and endline scenes; none depends on wealth. So the expected image of
a pixel, :math:`E[X(p) \\mid Y] = g(Y(p))`, is one function of the pixel's
own wealth, whatever made that wealth: the cross-sectional surface and a
treatment change the image through the same :math:`g`.

Trials
------
``n_trials`` disjoint square windows, each tiled by unit areas :math:`A_i`,
squares of 21 x 21 pixels (630 m: a village and its fields); a unit sits at
the centre of a whole area on the valid scene (``units_per_trial`` of them
drawn at random, or every one), treatment
:math:`W_i \\sim \\text{Bernoulli}(0.5)`. Unit :math:`i` of trial :math:`t`
has the effect :math:`\\tau_i = \\tau_t h_i`,
:math:`h_i \\sim U(0.5, 1.5)`, with :math:`\\tau_t` evenly spaced on
:math:`[0, 1]` (SD units of wealth) and shuffled over the trials (one trial
has no effect). Treatment raises wealth by :math:`\\tau_i` over the unit's
whole area:

.. math::

    Y_{\\text{end}}(p) = Y_0(p) + \\sum_j W_j \\tau_j 1\\{p \\in A_j\\},

and the endline scene renders :math:`Y_{\\text{end}}`. The areas are
disjoint, so there are no spillovers: the unit's endline outcome
:math:`Y_i = Y_{\\text{end}}(x_i)` (``wealth_true``) is
:math:`Y_0(x_i) + W_i \\tau_i`, and the trial's true ATE is
:math:`\\frac1n\\sum_i \\tau_i`. (An earlier design raised wealth on
300 m discs around units 430 m apart: the neighbours' discs made the
difference in means of even the TRUE change miss the true ATEs by a slope
of up to 1.14 in one run of 24 trials.)

Survey
------
``n_survey`` DHS-like clusters on the endline scene: 60 % drawn with
probability proportional to the roof share within 1 km (where people live),
40 % uniformly over valid pixels; urban when that share is at least 0.15. A
cluster's measured wealth is the mean over its households, spread over the
enumeration area: the mean of :math:`Y_{\\text{end}}` over the valid pixels
within 150 m of the TRUE location, plus :math:`\\eta \\sim N(0, 0.1^2)`. Published coordinates
are displaced as DHS does: uniform angle, uniform distance in [0, 2 km]
(urban) or [0, 5 km] (rural), 1 % of rural clusters in [0, 10 km]; a
displacement that leaves the valid scene is redrawn.

Why the linear correction is valid here, and what breaks it
-----------------------------------------------------------
The correction inverts :math:`E[\\hat Y \\mid Y] = m + kY`, fitted on
calibration pairs, and needs the map's response to a treatment-induced change
of :math:`Y` to be the same :math:`k`. A map :math:`\\hat Y(x) = f(X \\text{
around } x)` depends on wealth only through :math:`g` applied to the wealth
of the pixels its features see, because the noise is independent of wealth.
Take features that see a window around :math:`x` inside the unit's area
(chips of at most about 300 m, sampled at most 150 m from the unit). A
treatment then moves the wealth of the whole window by :math:`\\tau_i`,
which, cross-sectionally, happens whenever the unit's wealth is
:math:`\\tau_i` higher (wealth varies little within 300 m). So :math:`E[\\hat Y_i \\mid Y_i, W_i]` does not depend
on :math:`W_i`, the condition of the correction. It breaks when:

- the features see farther than the treatment's footprint (a 1 km chip: the
  unit's area fills 40 % of it, while cross-sectional wealth differences fill all
  of it, so the map responds to the treatment less than :math:`k` says);
- the calibration truth has another spatial support than what the features
  see: the treatment moves the whole chip, while cross-sectionally the map
  responds to the chip's mean wealth, so :math:`k` is the map's response
  times the regression slope of the chip's mean wealth on the truth. A point
  truth varies within the chip (slope below 1: the correction over-corrects);
  a mean over a disc wider than the chip weighs the chip's centre above the
  disc's rim (slope above 1: it under-corrects). The survey's cluster mean
  over 150 m, about the chips' size, sits between the two (see
  docs/benchmarks.md for the three measured);
- the calibration predictions are made away from the truth's location (DHS
  displacement): :math:`k` is then :math:`E[\\operatorname{corr}]` times
  smaller (the correlation of wealth over the displacement) and the
  correction over-corrects by its inverse. The 1 km field and the
  settlements decorrelate within the displacement, so calibrate on the map
  sampled at the clusters' TRUE locations when they are known;
- an image feature that does not depend on wealth is correlated with it in
  the one scene at hand by chance (here the 5 km regional greenness field,
  whose correlation with wealth at the trial units is -0.35 to +0.30 over
  seeds at 0.4): the map reads wealth partly from it, the calibration's :math:`k`
  absorbs that chance relation, and a programme changes wealth but not the
  feature, so the map's response to the treatment is the :math:`k` without it.
  It averages out over landscapes, not within one; the study leaves it out
  unless ``regional_greenness`` > 0 (docs/benchmarks.md measures both);
- the outcome has a part the image does not render (measurement noise of SD
  :math:`\\sigma` in the calibration truth attenuates :math:`k` by
  :math:`1/(1 + \\sigma^2)`, 1 % here; an invisible wealth component is the
  design this module replaced);
- :math:`g` (with the encoder and the model) is far from linear over the
  range where the survey and the trials differ in wealth (the rendering is
  linear in :math:`y` here, clipped only below :math:`y = -2.1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from scipy import ndimage

from eocausal.atomic import atomic_path, write_csv
from eocausal.errors import ConfigError
from eocausal.simulate.scene import (
    _ROAD,
    _ROOF,
    _SOIL,
    _VEGETATION,
    Scene,
    _parcels,
    _roads,
    _smooth_field,
    write_scene,
)

__all__ = ["WealthStudy", "make_wealth_study"]

PIXEL_M = 30.0
#: Gaussian-field sigmas (km) and weights of the wealth surface, then the settlements' weight.
FIELD_KM = (1.0, 3.0, 8.0)
FIELD_WEIGHTS = (0.3, 0.5, 0.7)
SETTLEMENT_WEIGHT = 0.5
#: Rendering: roof probability clip(ROOF_A + ROOF_B * y, ROOF_MIN, 1); vegetation clip(logistic(N) - GREEN_B * y, 0, 1).
ROOF_A, ROOF_B, ROOF_MIN = 0.08, 0.035, 0.005
GREEN_B = 0.08
VEG_NOISE = {"mid": 0.5, "parcels": 0.5}  # the regional field's weight is `regional_greenness`
ILLUMINATION_SD = 0.03
AREA_PX = 21  # a unit's area: a square of 21 x 21 pixels (630 m) centred on the unit
MAX_EFFECT = 1.0  # largest trial intensity tau_t (SD units of wealth)
SURVEY_SD = 0.1
CLUSTER_RADIUS_M = 150.0  # a survey cluster's households lie within this distance of its centre
_N_VILLAGES = 60
_URBAN_SHARE_1KM = 0.15
_SETTLEMENT_SHARE = 0.6
_DISPLACEMENT_M = {"urban": 2000.0, "rural": 5000.0, "rural_far": 10000.0}
_FAR_SHARE = 0.01


@dataclass
class WealthStudy:
    """Files and truth of the built-in wealth study.

    Attributes
    ----------
    scene_path : Path
        The ENDLINE scene GeoTIFF (rendered from endline wealth): make the
        wealth map from this one.
    baseline_scene_path : Path
        The scene rendered from the wealth before the trials (same noise).
    survey_path : Path
        CSV of survey clusters: ``cluster_id``, ``lon``, ``lat`` (DHS-displaced),
        ``true_lon``, ``true_lat``, ``urban`` (0/1), ``wealth`` (the cluster mean over 150 m around the
        true location, endline).
    trials : list of (str, Path)
        Trial names and CSV paths; each CSV has ``unit_id``, ``lon``, ``lat``,
        ``treated``, ``wealth_true`` (endline truth) and ``tau_true`` (the
        unit's own effect, also for control units).
    truth : DataFrame
        One row per trial: ``trial``, ``true_ate`` (mean ``tau_true``), ``n``,
        ``intensity`` (:math:`\\tau_t`).
    wealth_raster_path : Path
        The true endline wealth surface :math:`Y_{\\text{end}}` on the scene
        grid (float32, NaN outside the valid scene), for map accuracy.
    """

    scene_path: Path
    baseline_scene_path: Path
    survey_path: Path
    trials: list[tuple[str, Path]]
    truth: pd.DataFrame
    wealth_raster_path: Path


@dataclass
class _Noise:
    """Everything the rendering draws that does not depend on wealth (shared by both scenes)."""

    roof_draw: np.ndarray  # U_p
    veg_logit: np.ndarray  # N_p
    regional: np.ndarray  # G_5, standardised
    roads: np.ndarray
    illumination: np.ndarray  # 1 + eps_p
    valid: np.ndarray


@dataclass
class _World:
    """The whole simulated study in memory (what :func:`make_wealth_study` writes)."""

    baseline: Scene
    endline: Scene
    noise: _Noise
    wealth_base: np.ndarray
    wealth_end: np.ndarray
    units: pd.DataFrame  # all trials' units with `trial`, `row`, `col`, `tau_true`
    survey: pd.DataFrame
    truth: pd.DataFrame


def _logistic(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def roof_probability(wealth: np.ndarray) -> np.ndarray:
    """:math:`\\rho(y)`: probability that a pixel of wealth ``y`` (off roads) is a roof."""
    return np.clip(ROOF_A + ROOF_B * np.asarray(wealth, dtype=np.float64), ROOF_MIN, 1.0)


def _gaussian_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian field (kernel sigma ``sigma_px``), by FFT on a padded grid."""
    pad = min(int(3 * sigma_px), 2 * max(shape))
    big = (shape[0] + pad, shape[1] + pad)
    spectrum = ndimage.fourier_gaussian(np.fft.rfft2(rng.standard_normal(big)), sigma_px, n=big[1])
    field = np.fft.irfft2(spectrum, s=big)[: shape[0], : shape[1]]
    return (field - field.mean()) / field.std()


def _valid_margin(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An irregular nodata margin: a swath edge on the left and a ragged top."""
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    edge = 40 + 30 * np.sin(rr / 90.0) + 10 * _smooth_field(rng, shape, 20)
    return (cc > edge) & (rr > 12 + 6 * np.sin(cc / 37.0))


def _settlements(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Settlement structure V (towns and villages as Gaussian bumps), towns and village centres (col, row)."""
    h, w = shape
    towns = rng.uniform(0.2, 0.8, size=(2, 2)) * np.array([w, h])
    villages = rng.uniform(0.04, 0.96, size=(_N_VILLAGES, 2)) * np.array([w, h])
    centres = np.vstack([towns, villages])
    sigmas = np.concatenate([[25.0, 25.0], rng.uniform(3.0, 9.0, _N_VILLAGES)])
    heights = np.concatenate([[1.0, 1.0], rng.uniform(0.4, 1.0, _N_VILLAGES)])
    density = np.zeros(shape)
    for (x, y), s, a in zip(centres, sigmas, heights, strict=True):
        reach = int(4 * s) + 1
        r0, r1 = max(0, int(y) - reach), min(h, int(y) + reach + 1)
        c0, c1 = max(0, int(x) - reach), min(w, int(x) + reach + 1)
        rr, cc = np.mgrid[r0:r1, c0:c1]
        density[r0:r1, c0:c1] += a * np.exp(-((cc - x) ** 2 + (rr - y) ** 2) / (2 * s**2))
    return density, towns, villages


def _wealth_surface(rng: np.random.Generator, shape: tuple[int, int], valid: np.ndarray):
    density, towns, villages = _settlements(rng, shape)
    density = np.minimum(density, 1.0)  # a town's centre is not many SDs richer than a village's
    y = SETTLEMENT_WEIGHT * (density - density[valid].mean()) / density[valid].std()
    for km, a in zip(FIELD_KM, FIELD_WEIGHTS, strict=True):
        y = y + a * _gaussian_field(rng, shape, km * 1000.0 / PIXEL_M)
    return (y - y[valid].mean()) / y[valid].std(), towns, villages


def _noise(
    rng: np.random.Generator, shape: tuple[int, int], valid: np.ndarray, towns, regional_greenness: float
) -> _Noise:
    regional = _gaussian_field(rng, shape, 5000.0 / PIXEL_M / 2.0)
    veg = (
        regional_greenness * regional
        + VEG_NOISE["mid"] * _smooth_field(rng, shape, sigma=8)
        + VEG_NOISE["parcels"] * _parcels(rng, shape)
    )
    return _Noise(
        roof_draw=rng.random(shape),
        veg_logit=veg,
        regional=regional,
        roads=_roads(rng, shape, towns),
        illumination=1.0 + ILLUMINATION_SD * rng.standard_normal(shape),
        valid=valid,
    )


def _render(wealth: np.ndarray, noise: _Noise) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (6, h, w) float32 (NaN off the valid scene) and roof mask rendered from ``wealth``."""
    roof = (noise.roof_draw < roof_probability(wealth)) & ~noise.roads
    veg = np.clip(_logistic(noise.veg_logit) - GREEN_B * wealth, 0.0, 1.0)
    refl = veg[None] * _VEGETATION[:, None, None] + (1 - veg[None]) * _SOIL[:, None, None]
    refl = np.where(noise.roads[None], _ROAD[:, None, None], refl)
    refl = np.where(roof[None], _ROOF[:, None, None], refl)
    refl = refl * noise.illumination[None]
    return np.where(noise.valid[None], refl, np.nan).astype(np.float32), roof & noise.valid


def _disc_offsets(radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    reach = math.ceil(radius_px)
    dr, dc = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    inside = dr**2 + dc**2 <= radius_px**2
    return dr[inside], dc[inside]


def _treatment_change(shape: tuple[int, int], units: pd.DataFrame) -> np.ndarray:
    """:math:`\\sum_j W_j \\tau_j 1\\{p \\in A_j\\}` on the pixel grid (the areas are disjoint)."""
    half = AREA_PX // 2
    change = np.zeros(shape)
    on = units[(units["treated"] == 1) & (units["tau_true"] > 0)]
    for r, c, tau in on[["row", "col", "tau_true"]].itertuples(index=False):
        change[r - half : r + half + 1, c - half : c + half + 1] = tau
    return change


def _place_units(
    valid: np.ndarray, rng: np.random.Generator, n_trials: int, units_per_trial: int | None
) -> pd.DataFrame:
    """Units at the centres of the whole, valid unit areas tiling disjoint square windows."""
    h, w = valid.shape
    per_side = math.ceil(math.sqrt(n_trials))
    side = min(h, w) // per_side
    n_side = side // AREA_PX
    frames = []
    for t in range(n_trials):
        r0, c0 = (t // per_side) * side, (t % per_side) * side
        rows = r0 + AREA_PX * np.repeat(np.arange(n_side), n_side)
        cols = c0 + AREA_PX * np.tile(np.arange(n_side), n_side)
        whole = np.array([valid[r : r + AREA_PX, c : c + AREA_PX].all() for r, c in zip(rows, cols, strict=True)],
                         dtype=bool)
        ok = np.flatnonzero(whole)
        n = len(ok) if units_per_trial is None else units_per_trial
        if len(ok) < max(n, 4):
            raise ConfigError(
                f"trial window {t} of {side} px holds only {len(ok)} whole unit areas of {AREA_PX} px "
                f"for units_per_trial={units_per_trial}; increase `scene_size` or lower `n_trials` "
                "or `units_per_trial`."
            )
        pick = np.sort(rng.choice(ok, size=n, replace=False))
        frames.append(
            pd.DataFrame(
                {
                    "trial": f"trial_{t:02d}",
                    "unit_id": [f"t{t:02d}_u{i:04d}" for i in range(n)],
                    "row": rows[pick] + AREA_PX // 2,
                    "col": cols[pick] + AREA_PX // 2,
                    "treated": (rng.random(n) < 0.5).astype(np.int64),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _to_lonlat(transform, crs, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = transform.c + (np.asarray(cols, dtype=np.float64) + 0.5) * transform.a
    y = transform.f + (np.asarray(rows, dtype=np.float64) + 0.5) * transform.e
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return np.round(lon, 7), np.round(lat, 7)


def cluster_mean(wealth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean of ``wealth`` over the valid pixels within :data:`CLUSTER_RADIUS_M` of each pixel."""
    from scipy.signal import fftconvolve

    dr, dc = _disc_offsets(CLUSTER_RADIUS_M / PIXEL_M)
    reach = int(np.abs(dr).max())
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1))
    kernel[dr + reach, dc + reach] = 1.0
    total = fftconvolve(np.where(valid, wealth, 0.0), kernel, mode="same")
    count = fftconvolve(valid.astype(np.float64), kernel, mode="same")
    return np.where(valid, total / np.maximum(np.rint(count), 1.0), np.nan)


def _survey(
    scene: Scene, share_1km: np.ndarray, wealth: np.ndarray, rng: np.random.Generator, n: int
) -> pd.DataFrame:
    h, w = scene.shape
    valid_idx = np.flatnonzero(scene.valid)
    n_settle = round(_SETTLEMENT_SHARE * n)
    p = np.clip(share_1km.ravel()[valid_idx], 0.0, None)  # running sums leave -1e-17
    settle = rng.choice(valid_idx, size=n_settle, replace=False, p=p / p.sum())
    rest = rng.choice(np.setdiff1d(valid_idx, settle), size=n - n_settle, replace=False)
    pix = rng.permutation(np.concatenate([settle, rest]))
    rows, cols = np.unravel_index(pix, scene.shape)
    urban = share_1km[rows, cols] >= _URBAN_SHARE_1KM
    limit = np.where(urban, _DISPLACEMENT_M["urban"], _DISPLACEMENT_M["rural"])
    rural = np.flatnonzero(~urban)
    far = rural[rng.random(rural.size) < _FAR_SHARE]
    limit[far] = _DISPLACEMENT_M["rural_far"]
    px = scene.pixel_size
    dx, dy = np.zeros(n), np.zeros(n)
    todo = np.arange(n)
    while todo.size:  # redraw displacements that leave the valid scene
        angle = rng.uniform(0.0, 2.0 * np.pi, todo.size)
        dist = rng.uniform(0.0, 1.0, todo.size) * limit[todo]
        dx[todo], dy[todo] = dist * np.cos(angle), dist * np.sin(angle)
        c_new = np.floor(cols[todo] + 0.5 + dx[todo] / px).astype(int)
        r_new = np.floor(rows[todo] + 0.5 - dy[todo] / px).astype(int)
        inside = (r_new >= 0) & (r_new < h) & (c_new >= 0) & (c_new < w)
        ok = inside.copy()
        ok[inside] = scene.valid[r_new[inside], c_new[inside]]
        todo = todo[~ok]
    true_lon, true_lat = _to_lonlat(scene.transform, scene.crs, rows, cols)
    lon, lat = _to_lonlat(scene.transform, scene.crs, rows - dy / px, cols + dx / px)
    return pd.DataFrame(
        {
            "cluster_id": [f"c{i:04d}" for i in range(n)],
            "lon": lon,
            "lat": lat,
            "true_lon": true_lon,
            "true_lat": true_lat,
            "urban": urban.astype(np.int64),
            "wealth": cluster_mean(wealth, scene.valid)[rows, cols] + rng.normal(0.0, SURVEY_SD, n),
        }
    )


def _check_sizes(scene_size: int, n_survey: int, n_trials: int, units_per_trial: int | None) -> None:
    checks = {
        "scene_size": (scene_size, 128, "the scene must hold the trial windows and the margin"),
        "n_survey": (n_survey, 10, "a calibration split needs labelled clusters"),
        "n_trials": (n_trials, 1, "the study needs at least one trial"),
        "units_per_trial": (units_per_trial, 4, "each arm needs units"),
    }
    if units_per_trial is None:
        del checks["units_per_trial"]
    for name, (value, low, why) in checks.items():
        if not (isinstance(value, (int, np.integer)) and value >= low):
            raise ConfigError(f"`{name}` must be an int >= {low} ({why}); got {value!r}.")


def _scene(reflectance, roof, noise: _Noise, transform, villages) -> Scene:
    return Scene(reflectance, noise.valid, roof, noise.regional, transform, "EPSG:32636", villages)


def _simulate(
    *, seed: int, scene_size: int, n_survey: int, n_trials: int, units_per_trial: int | None,
    regional_greenness: float = 0.0,
) -> _World:
    """The study in memory; :func:`make_wealth_study` documents the arguments."""
    _check_sizes(scene_size, n_survey, n_trials, units_per_trial)
    if not (isinstance(regional_greenness, (int, float)) and 0 <= regional_greenness <= 2):
        raise ConfigError(f"`regional_greenness` must be a number in [0, 2]; got {regional_greenness!r}.")
    rng = np.random.default_rng([seed, 23])
    shape = (scene_size, scene_size)
    transform = from_origin(400_000.0, 300_000.0, PIXEL_M, PIXEL_M)
    valid = _valid_margin(shape, rng)
    wealth_base, towns, villages = _wealth_surface(rng, shape, valid)
    noise = _noise(rng, shape, valid, towns, regional_greenness)

    units = _place_units(valid, rng, n_trials, units_per_trial)
    names = [f"trial_{t:02d}" for t in range(n_trials)]
    intensity = dict(zip(names, rng.permutation(np.linspace(0.0, MAX_EFFECT, n_trials)), strict=True))
    units["tau_true"] = units["trial"].map(intensity).to_numpy() * rng.uniform(0.5, 1.5, len(units))
    wealth_end = wealth_base + _treatment_change(shape, units)

    baseline = _scene(*_render(wealth_base, noise), noise, transform, villages)
    endline = _scene(*_render(wealth_end, noise), noise, transform, villages)
    rows, cols = units["row"].to_numpy(), units["col"].to_numpy()
    units["wealth_true"] = wealth_end[rows, cols]
    units["lon"], units["lat"] = _to_lonlat(transform, endline.crs, rows, cols)
    size_1km = round(1000.0 / PIXEL_M) | 1
    share_1km = ndimage.uniform_filter(endline.built.astype(np.float64), size_1km, mode="constant")
    survey = _survey(endline, share_1km, wealth_end, rng, n_survey)
    truth = (
        units.groupby("trial", sort=True)
        .agg(true_ate=("tau_true", "mean"), n=("unit_id", "size"))
        .reset_index()
    )
    truth["intensity"] = truth["trial"].map(intensity)
    return _World(baseline, endline, noise, wealth_base, wealth_end, units, survey, truth)


def _write_surface(values: np.ndarray, scene: Scene, path: Path) -> Path:
    h, w = scene.shape
    profile = {
        "driver": "GTiff",
        "height": h,
        "width": w,
        "count": 1,
        "dtype": "float32",
        "crs": scene.crs,
        "transform": scene.transform,
        "nodata": np.nan,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    values = np.where(scene.valid, values, np.nan).astype(np.float32)
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(values, 1)
        dst.set_band_description(1, "wealth_true_endline")
    return path


def make_wealth_study(
    out_dir: str | Path,
    *,
    seed: int = 0,
    scene_size: int = 1024,
    n_survey: int = 600,
    n_trials: int = 24,
    units_per_trial: int | None = None,
    regional_greenness: float = 0.0,
) -> WealthStudy:
    """Write the built-in wealth study into ``out_dir`` (see the module docstring).

    Files: ``scene_endline.tif``, ``scene_baseline.tif``, ``wealth_true.tif``,
    ``survey.csv``, ``truth.csv`` and ``trials/<trial>.csv``. The same seed
    writes the same data; a few seconds at ``scene_size=1024``.

    Parameters
    ----------
    out_dir : path-like
        Created if missing.
    seed : int, default=0
        Seed of the wealth surface, the rendering noise, the units, the
        assignment, the effects, the survey and its displacement.
    scene_size : int, default=1024
        Scene width and height in 30 m pixels (1024 px = 30.7 km).
    n_survey : int, default=600
        Survey clusters.
    n_trials : int, default=24
        Trials, in disjoint windows of the scene (a grid of
        ``ceil(sqrt(n_trials))`` windows a side).
    units_per_trial : int, optional
        Units drawn from each trial window's whole unit areas; by default every
        one (81 in a full window at the defaults, fewer where a window meets the
        nodata margin).
    regional_greenness : float, default=0.0
        Weight :math:`a_G` of the 5 km regional field in the vegetation noise
        (see "Rendering"): greenness that does not depend on wealth but, in one
        finite scene, is correlated with it by chance, which breaks the linear
        correction within that scene (e.g. 0.4; the default leaves it out).

    Returns
    -------
    WealthStudy

    Raises
    ------
    ConfigError
        Sizes out of range, or trial windows too small for ``units_per_trial``.

    Examples
    --------
    >>> import tempfile
    >>> study = make_wealth_study(tempfile.mkdtemp(), scene_size=256, n_survey=50,
    ...                           n_trials=4, units_per_trial=10)
    >>> study.truth.columns.tolist(), len(study.trials)
    (['trial', 'true_ate', 'n', 'intensity'], 4)
    """
    out_dir = Path(out_dir)
    (out_dir / "trials").mkdir(parents=True, exist_ok=True)
    world = _simulate(
        seed=seed,
        scene_size=scene_size,
        n_survey=n_survey,
        n_trials=n_trials,
        units_per_trial=units_per_trial,
        regional_greenness=regional_greenness,
    )
    scene_path = write_scene(world.endline, out_dir / "scene_endline.tif")
    baseline_path = write_scene(world.baseline, out_dir / "scene_baseline.tif")
    wealth_path = _write_surface(world.wealth_end, world.endline, out_dir / "wealth_true.tif")
    survey_path = write_csv(world.survey, out_dir / "survey.csv")
    columns = ["unit_id", "lon", "lat", "treated", "wealth_true", "tau_true"]
    trials = []
    for name, frame in world.units.groupby("trial", sort=True):
        trials.append((str(name), write_csv(frame[columns], out_dir / "trials" / f"{name}.csv")))
    write_csv(world.truth, out_dir / "truth.csv")
    return WealthStudy(
        scene_path=scene_path,
        baseline_scene_path=baseline_path,
        survey_path=survey_path,
        trials=trials,
        truth=world.truth,
        wealth_raster_path=wealth_path,
    )
