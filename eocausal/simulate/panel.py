"""A simulated programme-placement panel on the built-in scene, with a known effect.

Units (locations) are observed in ``n_periods`` periods. A programme (an aid
project) reaches the ever-treated units in one common adoption period
:math:`t_0`; placement favours built-up places, and the outcome's level and
trend depend on the same image feature, so only a comparison that adjusts for
what the images show recovers the effect:

.. math::

    G_i \\sim \\text{Bernoulli}(e_i),\\qquad
    e_i = \\operatorname{logistic}(\\kappa + s\\, z_i),\\qquad
    D_{it} = G_i\\, 1[t \\ge t_0],

    Y^*_{it} = \\alpha_i + \\gamma_t + b\\, z_i + \\lambda\\, z_i\\, \\frac{t}{T-1}
               + \\tau_i D_{it} + \\varepsilon_{it},\\qquad
    \\tau_i = \\tau + h\\, z_i,

    \\hat Y_{it} = Y^*_{it} + u_{it},

where :math:`z_i` is the built-up fraction within 1 km of the unit,
standardised over the units and computed from the scene exactly as the
built-in trial computes it (:func:`eocausal.simulate.simulate_trial`, column
``built_1km``); :math:`\\kappa` is solved so that the mean of :math:`e_i` is
``treated_share``; :math:`\\alpha_i \\sim N(0, 1)` are unit effects,
:math:`\\gamma_t \\sim N(0, 0.5^2)` common period shocks (one draw per period),
:math:`\\varepsilon_{it}` a within-unit AR(1) series (coefficient 0.5,
stationary sd ``noise_sd``), and :math:`u_{it} \\sim N(0, \\sigma_u^2)` the error of the
ML map that imputes the outcome (classical: mean zero, independent of
everything else, so it adds noise but no bias).

The unit effect :math:`\\alpha_i` absorbs the level term :math:`b z_i`, but
not the trend term :math:`\\lambda z_i t/(T-1)`: parallel trends hold only
conditionally on :math:`z`. With :math:`s, \\lambda > 0` the unweighted
two-way fixed-effects coefficient is biased upward by

.. math::

    \\frac{\\lambda}{T-1}\\,\\big(\\bar z_{G=1} - \\bar z_{G=0}\\big)\\,
    \\big(\\bar t_{\\text{post}} - \\bar t_{\\text{pre}}\\big)

in expectation given the units, and the cross-sectional post-period
difference in means by :math:`b` times the same imbalance in :math:`z` (plus
the trend part). Weighting the controls by :math:`e/(1-e)` balances :math:`z`
and recovers the ATT, :math:`\\frac{1}{n_1}\\sum_{G_i=1}\\tau_i`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

from eocausal.errors import InputDataError
from eocausal.simulate.scene import make_scene, write_scene
from eocausal.simulate.trial import simulate_trial

__all__ = ["SimulatedPanel", "make_panel_study", "simulate_panel"]

_AR = 0.5  # within-unit autocorrelation of the outcome noise
_PERIOD_SD = 0.5  # sd of the common period shocks


@dataclass
class SimulatedPanel:
    """Paths, table and truth of a simulated programme-placement panel.

    Attributes
    ----------
    scene_path : Path
        The GeoTIFF (the built-in scene: 6 bands, 30 m, EPSG:32636).
    units_path : Path
        Long CSV, one row per unit and period (columns in :func:`simulate_panel`).
    units : DataFrame
        The same table.
    true_att : float
        Mean true effect over the ever-treated units, :math:`\\frac{1}{n_1}\\sum_{G_i=1}\\tau_i`.
    true_ate : float
        Mean true effect over all units.
    adoption_period : int
        The period :math:`t_0` in which the programme reaches every ever-treated unit.
    """

    scene_path: Path
    units_path: Path
    units: pd.DataFrame
    true_att: float
    true_ate: float
    adoption_period: int


def _intercept_for_share(score: np.ndarray, share: float) -> float:
    """The κ with mean(logistic(κ + score)) = share."""
    return float(
        optimize.brentq(lambda k: special.expit(k + score).mean() - share, -30.0, 30.0, xtol=1e-12)
    )


def simulate_panel(
    sites: pd.DataFrame,
    *,
    n_periods: int = 6,
    adoption_period: int | None = None,
    seed: int = 0,
    effect: float = 1.0,
    effect_heterogeneity: float = 0.0,
    treated_share: float = 0.4,
    placement_strength: float = 1.0,
    level_confounding: float = 0.8,
    trend_confounding: float = 0.6,
    noise_sd: float = 0.5,
    prediction_sd: float = 0.3,
) -> pd.DataFrame:
    """Simulate the long panel on given sites (see the module docstring for the model).

    Parameters
    ----------
    sites : DataFrame
        One row per unit with ``unit_id``, ``lon``, ``lat``, ``x``, ``y``,
        ``village`` (cluster) and ``built_1km`` (built-up fraction within 1 km),
        as :func:`eocausal.simulate.simulate_trial` returns them.
    n_periods : int, default=6
        Periods ``0 .. n_periods - 1``; at least 2.
    adoption_period : int, default=None
        :math:`t_0`; ``None`` means ``n_periods // 2``. Must leave at least one
        period before and one from :math:`t_0` on.
    seed : int, default=0
        Seed of placement, unit effects, period shocks and noise.
    effect : float, default=1.0
        :math:`\\tau`, the effect at the mean of :math:`z`.
    effect_heterogeneity : float, default=0.0
        :math:`h`; with ``h != 0`` the ATT differs from the ATE.
    treated_share : float, default=0.4
        Expected share of ever-treated units (sets :math:`\\kappa`).
    placement_strength : float, default=1.0
        :math:`s`, the log-odds of placement per sd of :math:`z`.
    level_confounding, trend_confounding : float, default=0.8, 0.6
        :math:`b` and :math:`\\lambda`.
    noise_sd : float, default=0.5
        Stationary sd of the AR(1) outcome noise.
    prediction_sd : float, default=0.3
        :math:`\\sigma_u`, sd of the imputation error of the outcome map.

    Returns
    -------
    DataFrame
        Rows sorted by unit then period, columns ``unit_id``, ``period``,
        ``lon``, ``lat``, ``x``, ``y``, ``cluster``, ``treated`` (:math:`D_{it}`),
        ``ever_treated`` (:math:`G_i`), ``outcome`` (:math:`\\hat Y_{it}`, the
        imputed outcome), ``outcome_true`` (:math:`Y^*_{it}`), ``true_effect``
        (:math:`\\tau_i`, the same in every period of a unit), ``propensity_true``
        (:math:`e_i`), ``built_1km`` and ``z_built`` (:math:`z_i`).
    """
    missing = {"unit_id", "lon", "lat", "x", "y", "village", "built_1km"} - set(sites.columns)
    if missing:
        raise InputDataError(
            f"`sites` lacks columns {sorted(missing)}; pass the table of "
            "eocausal.simulate.simulate_trial (or one with the same columns)."
        )
    n_periods = int(n_periods)
    if n_periods < 2:
        raise InputDataError(f"`n_periods` must be at least 2; got {n_periods}.")
    t0 = n_periods // 2 if adoption_period is None else int(adoption_period)
    if not 1 <= t0 <= n_periods - 1:
        raise InputDataError(
            f"`adoption_period` must lie in [1, {n_periods - 1}] so that there is a period "
            f"before and after adoption; got {adoption_period!r}."
        )
    if not 0.0 < treated_share < 1.0:
        raise InputDataError(f"`treated_share` must lie in (0, 1); got {treated_share!r}.")
    n = len(sites)
    rng = np.random.default_rng(seed)
    built = sites["built_1km"].to_numpy(dtype=np.float64)
    z = (built - built.mean()) / built.std()

    score = placement_strength * z
    e = special.expit(_intercept_for_share(score, treated_share) + score)
    ever = (rng.random(n) < e).astype(np.int64)
    if ever.sum() in (0, n):
        raise InputDataError(
            f"All {n} units drew the same arm (treated_share={treated_share}); "
            "use more units or a `treated_share` further from 0 and 1."
        )
    tau = effect + effect_heterogeneity * z

    t = np.arange(n_periods)
    alpha = rng.normal(0.0, 1.0, size=n)
    gamma = rng.normal(0.0, _PERIOD_SD, size=n_periods)
    eps = np.empty((n, n_periods))
    eps[:, 0] = rng.normal(0.0, noise_sd, size=n)
    innovation_sd = noise_sd * np.sqrt(1.0 - _AR**2)
    for k in range(1, n_periods):
        eps[:, k] = _AR * eps[:, k - 1] + rng.normal(0.0, innovation_sd, size=n)
    D = ever[:, None] * (t[None, :] >= t0)
    y_true = (
        alpha[:, None]
        + gamma[None, :]
        + level_confounding * z[:, None]
        + trend_confounding * z[:, None] * (t[None, :] / (n_periods - 1))
        + tau[:, None] * D
        + eps
    )
    y_hat = y_true + rng.normal(0.0, prediction_sd, size=(n, n_periods))

    rep = np.repeat(np.arange(n), n_periods)
    return pd.DataFrame(
        {
            "unit_id": sites["unit_id"].to_numpy()[rep],
            "period": np.tile(t, n),
            "lon": sites["lon"].to_numpy()[rep],
            "lat": sites["lat"].to_numpy()[rep],
            "x": sites["x"].to_numpy()[rep],
            "y": sites["y"].to_numpy()[rep],
            "cluster": sites["village"].to_numpy()[rep],
            "treated": D.ravel().astype(np.int64),
            "ever_treated": ever[rep],
            "outcome": y_hat.ravel(),
            "outcome_true": y_true.ravel(),
            "true_effect": tau[rep],
            "propensity_true": e[rep],
            "built_1km": built[rep],
            "z_built": z[rep],
        }
    )


def make_panel_study(
    out_dir: str | Path,
    *,
    seed: int = 0,
    n_units: int = 600,
    n_periods: int = 6,
    scene_size: int = 512,
    effect: float = 1.0,
    **panel_options,
) -> SimulatedPanel:
    """Write a simulated programme-placement panel (scene GeoTIFF and long units CSV).

    The scene is the built-in one (:func:`eocausal.simulate.make_scene` with
    ``seed``), so the chip and encoder configuration of the built-in study
    applies unchanged; unit locations, clusters (``village``) and the 1 km
    built-up fraction are those of :func:`eocausal.simulate.simulate_trial`
    with ``seed + 1`` (about 30% of units are placed uniformly, and some of
    those fall in the scene's nodata margin, as in the built-in study). The
    panel follows :func:`simulate_panel` with ``seed + 2``.

    Parameters
    ----------
    out_dir : str or Path
    seed : int, default=0
        The same seed writes the same files.
    n_units : int, default=600
    n_periods : int, default=6
    scene_size : int, default=512
        Scene width and height in pixels (512 px = 15.4 km; about 1 s).
    effect : float, default=1.0
        :math:`\\tau` (the constant effect when ``effect_heterogeneity=0``).
    **panel_options
        Further keyword arguments of :func:`simulate_panel`
        (``adoption_period``, ``effect_heterogeneity``, ``treated_share``,
        ``placement_strength``, ``level_confounding``, ``trend_confounding``,
        ``noise_sd``, ``prediction_sd``).

    Returns
    -------
    SimulatedPanel

    Examples
    --------
    >>> import tempfile
    >>> from eocausal.simulate import make_panel_study
    >>> study = make_panel_study(tempfile.mkdtemp(), n_units=200, n_periods=4)
    >>> len(study.units), study.adoption_period, study.true_att
    (800, 2, 1.0)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = make_scene(scene_size, seed=seed)
    scene_path = write_scene(scene, out_dir / "scene.tif")
    sites = simulate_trial(scene, n_units=n_units, seed=seed + 1)
    units = simulate_panel(
        sites, n_periods=n_periods, seed=seed + 2, effect=effect, **panel_options
    )
    units_path = out_dir / "units.csv"
    units.to_csv(units_path, index=False)
    per_unit = units.drop_duplicates("unit_id")
    tau = per_unit["true_effect"].to_numpy()
    ever = per_unit["ever_treated"].to_numpy() == 1
    t0 = int(units.loc[units["treated"] == 1, "period"].min())
    return SimulatedPanel(
        scene_path=scene_path,
        units_path=units_path,
        units=units,
        true_att=float(tau[ever].mean()),
        true_ate=float(tau.mean()),
        adoption_period=t0,
    )
