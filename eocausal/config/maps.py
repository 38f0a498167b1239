"""Configurations of the map workflow: an outcome model and a region map
(``eocausal fit-outcome``, ``eocausal map``) and many trials against one map
(``eocausal trials``).

Example
-------
>>> from eocausal.config import load_map_config
>>> cfg = load_map_config("configs/wealth_map.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from eocausal.config.loading import Strict as _Strict
from eocausal.config.loading import check_run_dir, load_yaml, resolver, validate
from eocausal.config.sections import EncoderConfig, FeaturesConfig, ImageryConfig

__all__ = [
    "LabelsConfig",
    "MapRunConfig",
    "OutcomeConfig",
    "RegionConfig",
    "TrialConfig",
    "TrialsConfig",
    "load_map_config",
    "load_trials_config",
]


class LabelsConfig(_Strict):
    """Labelled locations (e.g. DHS-like survey clusters) with the outcome to map.

    ``true_lon_col``/``true_lat_col``: the undisplaced coordinates, when the analyst holds
    them (survey programmes publish displaced ones). The map's calibration pairs are then
    the map sampled at the true locations, as trial units are; with displaced coordinates
    the calibration slope is biased toward zero and corrections over-correct.
    """

    path: Path
    id_col: str = "cluster_id"
    target_col: str = "wealth"
    lon_col: str = "lon"
    lat_col: str = "lat"
    crs: str = "EPSG:4326"
    group_col: str | None = None
    true_lon_col: str | None = None
    true_lat_col: str | None = None

    @model_validator(mode="after")
    def _true_pair(self) -> LabelsConfig:
        if (self.true_lon_col is None) != (self.true_lat_col is None):
            raise ValueError("give both `true_lon_col` and `true_lat_col`, or neither")
        return self


class OutcomeConfig(_Strict):
    """The outcome model (:class:`eocausal.outcome.OutcomeModel`) and its spatial cross-fitting."""

    model: Literal["ridge", "hist_gradient_boosting", "mlp"] = "ridge"
    n_folds: Annotated[int, Field(ge=2, le=20)] = 5
    calibration_size: Annotated[float, Field(gt=0, lt=1)] = 0.2
    block_km: Annotated[float, Field(gt=0)] = 10.0


class RegionConfig(_Strict):
    """The region to map: exactly one of a bounding box, polygons, or the imagery footprint."""

    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = None
    bbox_crs: str = "EPSG:4326"
    polygons: Path | None = None
    footprint: bool = False
    cell_size_m: Annotated[float, Field(gt=0)] = 1000.0
    tile_cells: Annotated[int, Field(ge=4, le=4096)] = 64
    support_k: Annotated[int, Field(ge=1)] = 10
    support_quantile: Annotated[float, Field(gt=0, lt=1)] = 0.99
    #: Map this imagery (another date; same sensor, bands and recipe) with the model fitted on
    #: `imagery.paths`; None maps `imagery.paths` itself.
    imagery: Annotated[list[Path], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_region(self) -> RegionConfig:
        given = [self.bbox is not None, self.polygons is not None, self.footprint]
        if sum(given) != 1:
            raise ValueError("give exactly one of `bbox`, `polygons` or `footprint: true`")
        return self


class MapRunConfig(_Strict):
    """An outcome model on labelled locations and, with ``region``, its map."""

    run_dir: Path = Path("runs/map")
    seed: int = 0
    labels: LabelsConfig
    imagery: ImageryConfig
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    outcome: OutcomeConfig = Field(default_factory=OutcomeConfig)
    region: RegionConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MapRunConfig:
        if self.imagery.source not in ("raster", "stac"):
            raise ValueError("maps need `imagery.source: raster` or `stac` (a region has no pre-cut chips)")
        if not self.imagery.paths:
            raise ValueError(f"`imagery.source: {self.imagery.source}` needs `imagery.paths`")
        known = {s.name for s in self.imagery.scales}
        unknown = [s for s in (self.features.scales or []) if s not in known]
        if unknown:
            raise ValueError(f"features.scales names unknown scales {unknown}; known: {sorted(known)}")
        return self


class TrialConfig(_Strict):
    """One trial whose outcome is read from the map at its units."""

    name: str
    units: Path
    id_col: str = "unit_id"
    treatment_col: str = "treated"
    lon_col: str = "lon"
    lat_col: str = "lat"
    propensity: Annotated[float, Field(gt=0, lt=1)] = 0.5
    cluster_col: str | None = None
    true_ate: float | None = None


class TrialsConfig(_Strict):
    """Several trials against one map artifact (``eocausal trials``)."""

    run_dir: Path = Path("runs/trials")
    seed: int = 0
    map: Path
    method: Literal["auto", "linear", "tweedie"] = "linear"
    radius_m: Annotated[float, Field(gt=0)] | None = None
    #: The same model's map of imagery from before the trials: the outcome is then the change
    #: of the map at each unit (needs `method: linear`).
    baseline_map: Path | None = None
    n_bootstrap: Annotated[int, Field(ge=10)] = 200
    trials: Annotated[list[TrialConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _names_unique(self) -> TrialsConfig:
        names = [t.name for t in self.trials]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"trial names must be unique; repeated: {repeated}")
        if self.baseline_map is not None and self.method != "linear":
            raise ValueError(
                f"`baseline_map` needs `method: linear` (the intercept cancels in a change only "
                f"for the linear correction); got `method: {self.method}`"
            )
        return self


def _resolve_run_dir(cfg: Any, resolve) -> None:
    cfg.run_dir = resolve(cfg.run_dir, "run_dir", must_exist=False).resolve()
    check_run_dir(cfg.run_dir)


def parse_map_config(data: Any, *, base_dir: str | Path = ".") -> MapRunConfig:
    """Validate a map configuration; relative paths resolve against ``base_dir``."""
    cfg = validate(MapRunConfig, data, example="configs/wealth_map.yaml")
    resolve = resolver(Path(base_dir).resolve())
    _resolve_run_dir(cfg, resolve)
    cfg.labels.path = resolve(cfg.labels.path, "labels.path")
    cfg.imagery.paths = [resolve(p, f"imagery.paths.{i}") for i, p in enumerate(cfg.imagery.paths)]
    cfg.encoder.weights_path = resolve(cfg.encoder.weights_path, "encoder.weights_path")
    cfg.encoder.cache_dir = resolve(cfg.encoder.cache_dir, "encoder.cache_dir", must_exist=False)
    if cfg.region is not None:
        cfg.region.polygons = resolve(cfg.region.polygons, "region.polygons")
        if cfg.region.imagery is not None:
            cfg.region.imagery = [resolve(p, f"region.imagery.{i}") for i, p in enumerate(cfg.region.imagery)]
    return cfg


def parse_trials_config(data: Any, *, base_dir: str | Path = ".") -> TrialsConfig:
    """Validate a trials configuration; relative paths resolve against ``base_dir``."""
    cfg = validate(TrialsConfig, data, example="configs/wealth_trials.yaml")
    resolve = resolver(Path(base_dir).resolve())
    _resolve_run_dir(cfg, resolve)
    cfg.map = resolve(cfg.map, "map")
    cfg.baseline_map = resolve(cfg.baseline_map, "baseline_map")
    for i, t in enumerate(cfg.trials):
        t.units = resolve(t.units, f"trials.{i}.units")
    return cfg


def load_map_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> MapRunConfig:
    """Read and validate a map configuration file (see :func:`eocausal.config.load_config`)."""
    data, base = load_yaml(path, overrides)
    return parse_map_config(data, base_dir=base)


def load_trials_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> TrialsConfig:
    """Read and validate a trials configuration file (see :func:`eocausal.config.load_config`)."""
    data, base = load_yaml(path, overrides)
    return parse_trials_config(data, base_dir=base)
