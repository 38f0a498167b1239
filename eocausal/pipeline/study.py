"""The units stage: the study units (simulated for the built-in studies), the imagery source
and the chip spec, checked once, before any chip is cut.

A panel (one row per unit and period) is reduced here to one row per unit (location,
time-invariant covariates, whether the programme ever reached it); the long table is
kept for the panel estimators.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.config import RunConfig
from eocausal.errors import ConfigError, EocausalError
from eocausal.pipeline.folder import file_fingerprint, fingerprint

__all__ = ["PANEL_TIME_COL", "PreparedStudy", "build_imagery", "check_design", "check_encoder", "check_split",
           "prepare_study",
           "single_arm_warning_once"]

Log = Callable[[str], None]

#: period column of the built-in panel (:func:`eocausal.simulate.make_panel_study`)
PANEL_TIME_COL = "period"


def _nolog(message: str) -> None:
    return None


@dataclass
class PreparedStudy:
    """Units, their raw table, the imagery source and chip spec of a run."""

    units: Any  # StudyUnits
    table: pd.DataFrame
    source: Any
    spec: Any
    imagery_paths: list[Path]
    description: str
    exclusions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"unit_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )
    panel: pd.DataFrame | None = None
    time_col: str | None = None
    units_path: Path | None = None

    def units_key(self) -> str:
        """Fingerprint of the units table file (any change in it changes the estimates)."""
        return fingerprint(file_fingerprint(self.units_path))

    def locations_key(self) -> str:
        """Fingerprint of what determines the chips: unit ids and locations (or image keys)."""
        u = self.units
        if u.gdf is not None:
            xy = np.column_stack([u.gdf.geometry.x.to_numpy(), u.gdf.geometry.y.to_numpy()])
            where: Any = {"crs": u.gdf.crs.to_string(), "xy": np.round(xy, 9).tolist()}
        else:
            where = {"image_key": [str(k) for k in u.image_key]}
        return fingerprint({"ids": u.unit_id.tolist(), **where})

    def imagery_key(self) -> str:
        """Fingerprint of the imagery files (content hash; size and mtime when large)."""
        return fingerprint([file_fingerprint(p) for p in self.imagery_paths])



def check_encoder(cfg: RunConfig) -> None:
    """Reject an encoder the embedding stage would reject, before any chip is cut."""
    e = cfg.encoder
    if e.name == "mosaiks":
        if e.weights_path is not None:
            raise ConfigError(
                "config field `encoder.weights_path`: MOSAIKS has no weights (its filters are random, "
                "seeded by `seed`); remove the field, or name a pretrained encoder in `encoder.name`"
            )
        return
    from eocausal.encode import get_weights_entry

    try:
        get_weights_entry(e.name)
        return
    except EocausalError:
        pass
    import timm

    if not timm.is_model(e.name):
        raise ConfigError(
            f"config field `encoder.name`: {e.name!r} is not 'mosaiks', a registered weights name "
            "(see `eocausal weights list`) or a timm architecture; check its spelling"
        )
    if e.weights_path is None:
        raise ConfigError(
            f"config field `encoder.weights_path`: the timm architecture {e.name!r} needs a local "
            "weights file (or use a registered weights name, see `eocausal weights list`)"
        )
    if e.weights_sha256 is None:
        raise ConfigError(
            f"config field `encoder.weights_sha256`: pin the sha256 of {str(e.weights_path)!r} "
            "(64 hex digits, e.g. from `sha256sum`) so that a changed or corrupted file is refused"
        )


#: a declared propensity is refused when the treated share is this many SEs away from it
_SHARE_Z = 5.0


def _ids_text(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def check_split(cfg: RunConfig, T: np.ndarray, clusters: np.ndarray | None) -> None:
    """Both halves of the honest split must hold enough units (clusters) for the models and RATE."""
    from eocausal.evaluate import HonestSplit
    from eocausal.evaluate.rate import MIN_CLUSTERS

    ev, k = cfg.evaluate, cfg.estimate.n_folds
    what = "units" if clusters is None else "clusters"
    try:
        parts = HonestSplit(test_size=ev.test_size, seed=cfg.seed).split(T, clusters)
    except EocausalError as err:
        raise ConfigError(f"config field `evaluate.test_size`: {ev.test_size} cannot split these "
                          f"{what} ({err}); choose a value nearer 0.5") from None
    for name, idx in zip(("training", "held-out"), parts):
        groups = idx.size if clusters is None else np.unique(clusters[idx]).size
        smaller = int(min(T[idx].sum(), idx.size - T[idx].sum()))
        if groups < max(k, MIN_CLUSTERS) or smaller < k:
            raise ConfigError(
                f"config field `evaluate.test_size`: {ev.test_size} leaves {groups} {what} ({smaller} "
                f"units in the smaller arm) in the {name} half; its models need at least "
                f"{max(k, MIN_CLUSTERS)} {what} and {k} units per arm (`estimate.n_folds` = {k}, "
                "RATE's bootstrap 4); choose a test_size nearer 0.5 or lower `estimate.n_folds`"
            )


def check_design(cfg: RunConfig, units: Any, table: pd.DataFrame) -> None:
    """Both arms present; a declared propensity consistent with the observed treated share.

    The treated share of n units (of C clusters) has SE sqrt(p(1-p)/n) under the declared
    probability p (C replaces n when clusters are given, a conservative design effect); a
    share more than 5 SEs away cannot come from that design.
    """
    s = cfg.study
    if units.treatment is None:
        return
    T = units.treatment.astype(float)
    n1, n = int(T.sum()), T.size
    if n1 in (0, n):
        arm = "treated" if n1 == n else "control"
        raise ConfigError(
            f"config field `study.treatment_col`: all {n} units of {s.treatment_col!r} are {arm}; "
            "effects need units in both arms"
        )
    n_eff = n if units.clusters is None else len(np.unique(np.asarray(units.clusters).astype(str)))
    share = n1 / n
    if s.propensity is not None:
        p = float(s.propensity)
        z = (share - p) / np.sqrt(p * (1 - p) / n_eff)
        if abs(z) > _SHARE_Z:
            raise ConfigError(
                f"config field `study.propensity`: {p} is declared but {share:.1%} of the {n} units "
                f"are treated ({abs(z):.0f} standard errors away); set it to the design's assignment "
                "probability, or remove it to estimate propensities from the images and covariates"
            )
    elif s.propensity_col is not None:
        e = pd.to_numeric(table[s.propensity_col], errors="coerce").to_numpy(float)
        bad = ~(np.isfinite(e) & (e > 0) & (e < 1))
        if bad.any():
            raise ConfigError(
                f"config field `study.propensity_col`: {int(bad.sum())} units have a propensity outside "
                f"(0, 1) or missing in {s.propensity_col!r} (units {_ids_text(table.index.to_numpy()[bad])}); "
                "a unit that could not have been in both arms carries no information about the effect"
            )
        z = (share - e.mean()) / np.sqrt(np.mean(e * (1 - e)) / n_eff)
        if abs(z) > _SHARE_Z:
            raise ConfigError(
                f"config field `study.propensity_col`: the propensities in {s.propensity_col!r} average "
                f"{e.mean():.3f} but {share:.1%} of the units are treated ({abs(z):.0f} standard errors "
                "away); check that the column holds P(treated) and not P(control) or another quantity"
            )


@contextmanager
def single_arm_warning_once(study: PreparedStudy) -> Iterator[None]:
    """Warn once about clusters holding one arm only (for the whole study), not per fit."""
    from eocausal.errors import OverlapWarning
    from eocausal.validation import check_clusters

    units = study.units
    if units.clusters is not None and units.treatment is not None:
        check_clusters(units.clusters, T=units.treatment.astype(int))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ clusters hold units of one arm only",
                                category=OverlapWarning)
        yield


def build_imagery(cfg: Any, imagery_paths: list[Path]) -> tuple[Any, Any]:
    """The imagery source and chip spec of ``cfg.imagery`` (bands and recipe of a registered encoder)."""
    from eocausal.imagery import ChipSpec, PrecutChipSource, RasterSource, Scale, StacSource

    im = cfg.imagery
    if im.source in ("raster", "simulated"):
        source = RasterSource([str(p) for p in imagery_paths])
    elif im.source == "stac":
        source = StacSource(str(imagery_paths[0]), bands=im.bands)
    else:
        source = PrecutChipSource.from_npz(
            str(im.precut), images_key=im.precut_images_key, keys_key=im.precut_keys_key
        )
    bands, recipe = im.bands, im.recipe
    if cfg.encoder.name != "mosaiks":
        # a registered encoder knows its bands and scaling recipe; the config may not repeat them
        from eocausal.encode import get_weights_entry

        try:
            entry = get_weights_entry(cfg.encoder.name)
        except EocausalError:
            entry = None
        if entry is not None:
            bands = bands or list(entry.bands)
            if recipe == "none":
                recipe = entry.recipe
            elif recipe != entry.recipe:
                raise ConfigError(
                    f"config field `imagery.recipe`: {recipe!r} differs from the recipe the "
                    f"weights {entry.name!r} were trained with ({entry.recipe!r}); remove it or set it to {entry.recipe!r}"
                )
    spec = ChipSpec(
        [Scale(c.name, size_px=c.size_px, size_km=c.size_km, out_px=c.out_px) for c in im.scales],
        bands=bands,
        recipe=recipe,
        dates=im.dates,
        min_valid_fraction=im.min_valid_fraction,
        qa_mask=im.qa_mask,
    )
    return source, spec


def prepare_study(cfg: RunConfig, *, log: Log = _nolog) -> PreparedStudy:
    """Load (or simulate) the units and build the imagery source and chip spec."""
    from eocausal.units import StudyUnits, read_units_table

    check_encoder(cfg)
    s = cfg.study
    imagery_paths = list(cfg.imagery.paths)
    time_col = s.time_col
    if s.simulate is not None and s.simulate.design == "panel":
        from eocausal.simulate import make_panel_study

        log(f"simulating the built-in panel ({s.simulate.n_units} units x {s.simulate.n_periods} periods) ...")
        sim = make_panel_study(
            cfg.run_dir / "study",
            seed=cfg.seed,
            n_units=s.simulate.n_units,
            n_periods=s.simulate.n_periods,
            scene_size=s.simulate.scene_size,
        )
        units_path = sim.units_path
        imagery_paths = [sim.scene_path]
        time_col = time_col or PANEL_TIME_COL
        description = (
            "Built-in panel: a simulated Landsat-like scene and a programme placed where the "
            f"images show more settlement; {s.simulate.n_units} units observed over "
            f"{s.simulate.n_periods} periods with an imputed outcome; the true effect is known."
        )
    elif s.simulate is not None:
        from eocausal.simulate import make_demo_study

        log(f"simulating the built-in study ({s.simulate.n_units} units) ...")
        study = make_demo_study(
            cfg.run_dir / "study",
            seed=cfg.seed,
            n_units=s.simulate.n_units,
            scene_size=s.simulate.scene_size,
        )
        units_path = study.units_path
        imagery_paths = [study.scene_path]
        description = (
            "Built-in study: a simulated Landsat-like scene (6 bands, 30 m, UTM 36N) and a "
            f"randomized trial of {s.simulate.n_units} units whose effect depends on a local "
            "(1 km) and a regional (6 km) image feature; the true effects are known."
        )
    else:
        units_path = s.units
        description = f"Units from {units_path}."
    table = read_units_table(units_path, id_col=s.id_col)
    covariates = [c for c in s.covariate_cols if c not in set(s.drop_covariates)]
    missing_cols = [c for c in covariates if c not in table.columns]
    if missing_cols:
        raise ConfigError(f"config field `study.covariate_cols`: columns {missing_cols} are not in {units_path}")
    excluded = pd.DataFrame({"unit_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    if s.missing_covariates == "exclude" and covariates:
        values = table[covariates].apply(pd.to_numeric, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float)).all(axis=1)
        if bad.any():
            reasons = [
                "missing covariate " + ", ".join(c for c in covariates if not np.isfinite(float(v[c])))
                for _, v in values[bad].iterrows()
            ]
            excluded = pd.DataFrame({"unit_id": table.loc[bad, s.id_col].astype(str).to_numpy(), "reason": reasons})
            table = table.loc[~bad].reset_index(drop=True)
            log(f"{int(bad.sum())} units excluded for missing covariates (study.missing_covariates: exclude)")
    outcome_col = s.outcome_col if cfg.debias is None else cfg.debias.predicted_col
    if cfg.debias is not None and cfg.debias.map is not None:
        from eocausal.pipeline.correction import MAP_PREDICTION_COL, predicted_from_map

        table, off_map = predicted_from_map(cfg, table)
        if len(off_map):
            log(f"{len(off_map)} units excluded: no value on the map {cfg.debias.map}")
        excluded = pd.concat([excluded, off_map], ignore_index=True)
        outcome_col = MAP_PREDICTION_COL
    panel = None
    if cfg.estimate.design == "panel":
        table, panel = _panel_unit_rows(table, cfg, time_col, units_path)
    geo = cfg.imagery.source != "precut"
    try:
        units = StudyUnits.from_frame(
            table,
            id_col=s.id_col,
            treatment_col=s.treatment_col,
            outcome_col=None if panel is not None else outcome_col,
            covariate_cols=covariates or None,
            cluster_col=s.cluster_col,
            weight_col=s.weight_col,
            lon_col=s.lon_col if geo else None,
            lat_col=s.lat_col if geo else None,
            crs=s.crs if geo else None,
            image_key_col=s.image_key_col,
        )
    except EocausalError as err:
        raise type(err)(f"{Path(units_path).name}: {err}") from None
    for col in (s.propensity_col, s.true_effect_col):
        if col is not None and col not in table.columns:
            raise ConfigError(f"config field `study`: column {col!r} is not in {units_path}")
    table = table.assign(**{s.id_col: table[s.id_col].astype(str)}).set_index(s.id_col)
    check_design(cfg, units, table)

    source, spec = build_imagery(cfg, imagery_paths)
    return PreparedStudy(units, table, source, spec, imagery_paths, description, excluded, panel, time_col,
                         Path(units_path))


def _panel_unit_rows(table: pd.DataFrame, cfg: RunConfig, time_col: str, path: Any
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per unit of a long panel (for chips and propensities), and the checked panel.

    The unit row carries the unit's location, its time-invariant covariates and, as the
    treatment, whether the programme ever reached it.
    """
    s = cfg.study
    needed = [s.id_col, time_col, s.treatment_col, s.outcome_col]
    missing = [c for c in needed if c is None or c not in table.columns]
    if missing:
        raise ConfigError(
            f"config field `study`: the panel needs columns {needed} (id, `time_col`, "
            f"`treatment_col`, `outcome_col`); {missing} are not in {path}"
        )
    panel = table.assign(**{s.id_col: table[s.id_col].astype(str)})
    dup = panel.duplicated([s.id_col, time_col])
    if dup.any():
        rows = panel.loc[dup, [s.id_col, time_col]].head(5).to_dict(orient="records")
        raise ConfigError(
            f"config field `study.time_col`: {int(dup.sum())} rows repeat a (unit, period) pair "
            f"in {path}, e.g. {rows}; keep one row per unit and period"
        )
    coords = [c for c in (s.lon_col, s.lat_col, s.image_key_col) if c is not None and c in panel.columns]
    moving = panel.groupby(s.id_col)[coords].nunique(dropna=False).gt(1).any(axis=1) if coords else None
    if moving is not None and moving.any():
        bad = moving[moving].index[:5].tolist()
        raise ConfigError(
            f"config field `study`: the location ({coords}) changes over time for {int(moving.sum())} "
            f"units of the panel in {path} (e.g. {bad}); a panel unit has one location"
        )
    panel = panel.sort_values([s.id_col, time_col], kind="stable").reset_index(drop=True)
    ever = panel.groupby(s.id_col, sort=False)[s.treatment_col].max()
    units = panel.drop_duplicates(s.id_col).reset_index(drop=True)
    units[s.treatment_col] = units[s.id_col].map(ever).to_numpy()
    return units, panel


