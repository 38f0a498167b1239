"""A randomized trial placed on a simulated scene, with known unit-level effects.

.. math::

    Y_i = \\mu(x_i) + W_i \\tau(x_i) + \\varepsilon_i,\\qquad
    W_i \\sim \\text{Bernoulli}(0.5),\\qquad \\varepsilon_i \\sim N(0, 1),

    \\tau(x) = 1 + a_L\\, z(L(x)) + a_R\\, z(R(x)),

where :math:`L(x)` is the built-up fraction within 1 km of the unit (a local
feature) and :math:`R(x)` the regional greenness averaged over 6 km (a
regional feature), each standardised over the units (:math:`z`). No single
chip scale shows both: a 1 km chip resolves roofs but its greenness is
dominated by the mid-scale vegetation pattern; a 6 km chip averages that
pattern away but dilutes the roofs around the unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy import ndimage

from eocausal.simulate.scene import Scene, make_scene, write_scene

__all__ = ["SimulatedStudy", "simulate_trial", "make_demo_study"]


@dataclass
class SimulatedStudy:
    """Paths and table of a simulated study.

    Attributes
    ----------
    scene_path : Path
        The GeoTIFF.
    units_path : Path
        CSV of units: ids, lon/lat (WGS84), x/y (UTM), treatment, outcome,
        covariates, village (cluster), propensity and the true effect ``tau_true``.
    units : DataFrame
        The same table.
    """

    scene_path: Path
    units_path: Path
    units: pd.DataFrame


def _window_mean(values: np.ndarray, size: int) -> np.ndarray:
    return ndimage.uniform_filter(values.astype(np.float64), size=size, mode="constant")


def simulate_trial(
    scene: Scene,
    *,
    n_units: int = 2000,
    seed: int = 0,
    effect_local: float = 0.9,
    effect_regional: float = 0.9,
    noise_sd: float = 1.0,
    share_uniform: float = 0.3,
) -> pd.DataFrame:
    """Place a two-arm randomized trial on ``scene``.

    Parameters
    ----------
    scene : Scene
        From :func:`eocausal.simulate.scene.make_scene`.
    n_units : int, default=2000
        Number of units; about ``share_uniform`` of them are placed uniformly
        over the scene (some fall in the nodata margin and must be reported as
        excluded downstream), the rest around village centres.
    seed : int, default=0
        Seed of the placement, covariates, assignment and noise.
    effect_local, effect_regional : float, default=0.9
        Coefficients :math:`a_L, a_R` of the standardised local and regional features in tau.
    noise_sd : float, default=1.0
        Standard deviation of the outcome noise.

    Returns
    -------
    DataFrame
        One row per unit; ``tau_true`` holds the true effect.
    """
    rng = np.random.default_rng(seed)
    h, w = scene.shape
    px = scene.pixel_size
    n_uniform = int(round(share_uniform * n_units))
    n_village = n_units - n_uniform
    village = rng.integers(0, len(scene.village_xy), size=n_village)
    xy_v = scene.village_xy[village] + rng.normal(0, 12.0, size=(n_village, 2))
    xy_u = rng.uniform(0, 1, size=(n_uniform, 2)) * np.array([w, h])
    cols, rows = np.concatenate([xy_v, xy_u]).T
    cols = np.clip(cols, 0, w - 1)
    rows = np.clip(rows, 0, h - 1)
    cell = 200  # 6 km grid cells as clusters for units outside villages
    cluster = np.concatenate(
        [
            [f"village_{v:02d}" for v in village],
            [f"cell_{int(r) // cell}_{int(c) // cell}" for c, r in xy_u],
        ]
    )
    order = rng.permutation(n_units)
    cols, rows, cluster = cols[order], rows[order], cluster[order]
    ri, ci = rows.astype(int), cols.astype(int)

    local_size = int(round(1000 / px)) | 1
    regional_size = int(round(6000 / px)) | 1
    built_1km = _window_mean(scene.built, local_size)[ri, ci]
    green_6km = _window_mean(scene.greenness_regional, regional_size)[ri, ci]
    z_local = (built_1km - built_1km.mean()) / built_1km.std()
    z_regional = (green_6km - green_6km.mean()) / green_6km.std()

    hh_size = rng.poisson(5, size=n_units).astype(float)
    age = rng.uniform(18, 35, size=n_units).round()
    female = rng.integers(0, 2, size=n_units)
    tau = 1.0 + effect_local * z_local + effect_regional * z_regional
    mu = (
        1.0
        + 1.2 * z_regional
        + 0.8 * z_local
        + 0.15 * (hh_size - 5)
        + 0.03 * (age - 26)
        + 0.2 * female
    )
    propensity = np.full(n_units, 0.5)
    treated = (rng.random(n_units) < propensity).astype(int)
    outcome = mu + treated * tau + rng.normal(0, noise_sd, size=n_units)

    x = scene.transform.c + (cols + 0.5) * scene.transform.a
    y = scene.transform.f + (rows + 0.5) * scene.transform.e
    lon, lat = Transformer.from_crs(scene.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return pd.DataFrame(
        {
            "unit_id": [f"u{i:05d}" for i in range(n_units)],
            "lon": np.round(lon, 7),
            "lat": np.round(lat, 7),
            "x": x,
            "y": y,
            "treated": treated,
            "outcome": outcome,
            "hh_size": hh_size,
            "age": age,
            "female": female,
            "village": cluster,
            "propensity": propensity,
            "built_1km": built_1km,
            "green_6km": green_6km,
            "tau_true": tau,
        }
    )


def make_demo_study(
    out_dir: str | Path, *, seed: int = 0, n_units: int = 2000, scene_size: int = 1024
) -> SimulatedStudy:
    """Write the built-in study (scene GeoTIFF and units CSV) into ``out_dir``.

    The same seed writes the same files. Generation takes a few seconds.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(scene_size, seed=seed)
    scene_path = write_scene(scene, out_dir / "scene.tif")
    units = simulate_trial(scene, n_units=n_units, seed=seed + 1)
    units_path = out_dir / "units.csv"
    units.to_csv(units_path, index=False)
    return SimulatedStudy(scene_path, units_path, units)
