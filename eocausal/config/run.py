"""The run configuration (``eocausal run``, ``chips``, ``embed``, ``evaluate``), validated by pydantic.

A configuration describes one whole run: the study units, the imagery and chip scales,
the encoder, the features, the design and CATE learner, the evaluation and the optional
debiasing of a predicted outcome. How files are read and errors reported:
:mod:`eocausal.config.loading`; an example: :mod:`eocausal.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from eocausal.config.loading import Strict as _Strict
from eocausal.config.loading import check_run_dir, load_yaml, resolver, validate
from eocausal.config.sections import EncoderConfig, FeaturesConfig, ImageryConfig
from eocausal.errors import ConfigError, EocausalError

__all__ = [
    "DebiasConfig",
    "EstimateConfig",
    "EvaluateConfig",
    "ImageTypesConfig",
    "MapConfig",
    "RunConfig",
    "SimulateConfig",
    "StudyConfig",
    "load_config",
    "parse_config",
]


class SimulateConfig(_Strict):
    """The built-in simulated study: a scene GeoTIFF and, on it, a randomized trial with
    known tau (``design: trial``) or a programme-placement panel with a known effect
    (``design: panel``, see :func:`eocausal.simulate.make_panel_study`)."""

    design: Literal["trial", "panel"] = "trial"
    n_units: Annotated[int, Field(ge=50)] = 2000
    n_periods: Annotated[int, Field(ge=2, le=50)] = 6
    scene_size: Annotated[int, Field(ge=256, le=8192)] = 1024


class StudyConfig(_Strict):
    """Where the units come from and which columns mean what."""

    simulate: SimulateConfig | None = None
    units: Path | None = None
    id_col: str = "unit_id"
    treatment_col: str | None = "treated"
    outcome_col: str | None = "outcome"
    covariate_cols: list[str] = Field(default_factory=list)
    drop_covariates: list[str] = Field(default_factory=list)
    cluster_col: str | None = None
    weight_col: str | None = None
    lon_col: str | None = "lon"
    lat_col: str | None = "lat"
    crs: str | None = None
    image_key_col: str | None = None
    propensity: Annotated[float, Field(gt=0, lt=1)] | None = None
    propensity_col: str | None = None
    true_effect_col: str | None = None
    time_col: str | None = None
    missing_covariates: Literal["error", "exclude"] = "error"

    @model_validator(mode="after")
    def _one_source(self) -> StudyConfig:
        if (self.simulate is None) == (self.units is None):
            raise ValueError("give exactly one of `simulate` (built-in study) or `units` (a file)")
        if self.propensity is not None and self.propensity_col is not None:
            raise ValueError("give at most one of `propensity` and `propensity_col`")
        return self


class EstimateConfig(_Strict):
    """The design and the CATE learner.

    ``design: cross_section`` (one row per unit): CATE, ATE and RATE. ``design: panel``
    (one row per unit and period, ``study.time_col``): two-way fixed effects and Hajek
    IPW with image propensities (see :func:`eocausal.estimate.panel_effects`).

    Large n: ``max_samples`` (share of units per tree of the learner's forests;
    ``auto`` = ``min(0.45, 20000 / n)``, so 0.45 up to 44,444 units and at most
    20,000 units per tree beyond) and ``final_model`` (the DR learner's final
    stage; ``auto`` = gradient boosting from 20,000 units on, the honest forest
    below) are resolved per fit from its number of units; ``results.json`` records
    the resolved values under ``cate.learner_settings``. See
    :mod:`eocausal.estimate.cate`.
    """

    design: Literal["cross_section", "panel"] = "cross_section"
    learner: Literal["causal_forest", "dr_learner", "t_learner"] = "causal_forest"
    n_estimators: Annotated[int, Field(ge=4)] = 400
    min_samples_leaf: Annotated[int, Field(ge=1)] = 10
    max_samples: Literal["auto"] | float = "auto"
    final_model: Literal["auto", "forest", "hgb"] = "auto"
    n_folds: Annotated[int, Field(ge=2)] = 3
    backend: Literal["local", "dask"] = "local"
    scheduler: str | None = None

    @field_validator("max_samples", mode="before")
    @classmethod
    def _max_samples(cls, value: Any) -> Any:
        if value == "auto" or (
            isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 0.5
        ):
            return value
        raise ValueError(
            f"must be 'auto' or a number in (0, 0.5], the share of units each tree draws "
            f"(honest forests draw from half of the units); got {value!r}"
        )

    @model_validator(mode="after")
    def _scheduler(self) -> EstimateConfig:
        if (self.backend == "dask") != (self.scheduler is not None):
            raise ValueError(
                "`backend: dask` needs `scheduler` (an address such as 'tcp://10.0.0.1:8786', "
                "or 'local' for a cluster on this machine), and `scheduler` is used only with it"
            )
        if self.final_model != "auto" and self.learner != "dr_learner":
            raise ValueError(
                f"`final_model: {self.final_model}` is the DR learner's final stage and is used "
                f"only with `learner: dr_learner` (got `learner: {self.learner}`); remove it"
            )
        return self


class EvaluateConfig(_Strict):
    """Honest evaluation of heterogeneity.

    ``protocol: single_split``: the RATE of the CATE model fitted on a training half,
    scored on the held-out half. ``protocol: sequential_cv``: in addition, grf's
    sequential cross-fitted RATE test over ``n_folds`` folds of all analysed units
    (:func:`eocausal.evaluate.rate_sequential_cv`), reported as the headline test;
    per-unit CATEs, the calibration test and the scale comparison still come from the
    single split.
    """

    protocol: Literal["single_split", "sequential_cv"] = "single_split"
    n_folds: Annotated[int, Field(ge=2, le=20)] = 5
    target: Literal["AUTOC", "QINI"] = "AUTOC"
    n_bootstrap: Annotated[int, Field(ge=10)] = 200
    test_size: Annotated[float, Field(gt=0, lt=1)] = 0.5
    compare_scales: bool = True
    combinations: Literal["singles+all", "singles+pairs+all", "all"] = "singles+pairs+all"


class DebiasConfig(_Strict):
    """Correction of a predicted (ML-mapped) outcome with a labelled calibration set.

    The study's outcome is the prediction: either a column of the units table
    (``predicted_col``, with the calibration pairs in ``calibration``) or a map
    artifact made by ``eocausal map`` (``map``: the map is sampled at each unit, its
    value or, with ``radius_m``, its mean over the valid cells within that radius,
    and the correction uses the map's calibration split, bootstrapped by its spatial
    blocks). Units the map does not cover are excluded with that reason. The
    corrected outcome flows into the ATE, CATE and RATE estimates, and the report
    shows naive and corrected side by side (plus PPI when some study units carry a
    fresh label in ``fresh_label_col``).
    """

    predicted_col: str | None = None
    calibration: Path | None = None
    map: Path | None = None
    radius_m: Annotated[float, Field(gt=0)] | None = None
    calibration_predicted_col: str = "predicted"
    calibration_truth_col: str = "truth"
    method: Literal["auto", "linear", "tweedie", "none"] = "auto"
    sigma_source: Literal["calibration", "validation_residuals"] = "calibration"
    residuals_col: str | None = None
    density_source: Literal["target_predictions", "calibration_predictions"] = "target_predictions"
    fresh_label_col: str | None = None

    @model_validator(mode="after")
    def _source(self) -> DebiasConfig:
        if self.map is None and (self.predicted_col is None or self.calibration is None):
            raise ValueError(
                "`debias` needs the predicted outcome: `map` (a map artifact folder from "
                "`eocausal map`), or `predicted_col` (a column of the units) with `calibration` (a CSV)"
            )
        if self.map is not None and (self.predicted_col is not None or self.calibration is not None):
            raise ValueError(
                "`debias.map` brings its own predictions and calibration pairs: drop `predicted_col` "
                "and `calibration`, or drop `map`"
            )
        if self.map is not None and self.residuals_col is not None:
            raise ValueError("`debias.residuals_col` names a column of `calibration`; with `map` the calibration "
                             "pairs are the map's: drop `residuals_col` (and `sigma_source`)")
        if self.radius_m is not None and self.map is None:
            raise ValueError("`debias.radius_m` is the radius over which `debias.map` is averaged: give `map`")
        return self

    @model_validator(mode="after")
    def _residuals(self) -> DebiasConfig:
        if (self.sigma_source == "validation_residuals") != (self.residuals_col is not None):
            raise ValueError(
                "`sigma_source: validation_residuals` needs `residuals_col` (a column of the "
                "calibration file), and `residuals_col` is used only with it"
            )
        return self


class ImageTypesConfig(_Strict):
    """The image-type heterogeneity model (causalimages-style), fitted on one scale.

    ``input: chips`` (default) reads that scale's chips with a small CNN and the report
    shows salience maps (which pixels make a unit's type); ``input: embeddings`` reads
    the embeddings (faster; no pixels, so no salience).
    """

    enabled: bool = False
    input: Literal["chips", "embeddings"] = "chips"
    scale: str | None = None
    n_types: Annotated[int, Field(ge=2, le=10)] = 2
    epochs: Annotated[int, Field(ge=1)] = 150
    hidden: Annotated[int, Field(ge=2)] = 32


class MapConfig(_Strict):
    """A grid of CATE predictions over the imagery, written as a GeoTIFF."""

    enabled: bool = True
    grid: Annotated[int, Field(ge=4, le=512)] = 40


class RunConfig(_Strict):
    """A whole run."""

    run_dir: Path = Path("runs/run")
    seed: int = 0
    study: StudyConfig
    imagery: ImageryConfig
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    debias: DebiasConfig | None = None
    image_types: ImageTypesConfig = Field(default_factory=ImageTypesConfig)
    map: MapConfig = Field(default_factory=MapConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        simulated = self.study.simulate is not None
        if simulated and self.imagery.source != "simulated":
            raise ValueError("the built-in study needs `imagery.source: simulated`")
        if not simulated and self.imagery.source == "simulated":
            raise ValueError("`imagery.source: simulated` needs `study.simulate`")
        if self.imagery.source == "precut" and self.imagery.precut is None:
            raise ValueError("`imagery.source: precut` needs `imagery.precut` (an .npz file)")
        if self.imagery.source in ("raster", "stac") and not simulated and not self.imagery.paths:
            raise ValueError(f"`imagery.source: {self.imagery.source}` needs `imagery.paths`")
        known_scales = {s.name for s in self.imagery.scales}
        if self.image_types.scale is not None and self.image_types.scale not in known_scales:
            raise ValueError(f"image_types.scale {self.image_types.scale!r} is not a scale; known: {sorted(known_scales)}")
        if self.estimate.design == "panel":
            if self.study.time_col is None and not (simulated and self.study.simulate.design == "panel"):
                raise ValueError("`estimate.design: panel` needs `study.time_col` (the period column)")
            if self.debias is not None:
                raise ValueError(
                    "`debias` is not supported with `estimate.design: panel` yet; correct the "
                    "predicted outcome before the run, or use `estimate.design: cross_section`"
                )
        if simulated and self.study.simulate.design == "panel" and self.estimate.design != "panel":
            raise ValueError("`study.simulate.design: panel` needs `estimate.design: panel`")
        if self.features.scales is not None:
            known = {s.name for s in self.imagery.scales}
            unknown = [s for s in self.features.scales if s not in known]
            if unknown:
                raise ValueError(f"features.scales names unknown scales {unknown}; known: {sorted(known)}")
            repeated = sorted({s for s in self.features.scales if self.features.scales.count(s) > 1})
            if repeated:
                raise ValueError(f"features.scales repeats {repeated}; list each scale once")
        return self


def _resolve_paths(cfg: RunConfig, base: Path) -> None:
    """Make relative paths absolute against ``base`` and check inputs and the run folder."""
    from eocausal.units import check_units_file

    resolve = resolver(base)
    # Outputs and inputs alike are found beside the config file (the CLI makes --run-dir absolute).
    cfg.run_dir = resolve(cfg.run_dir, "run_dir", must_exist=False).resolve()
    check_run_dir(cfg.run_dir)
    cfg.study.units = resolve(cfg.study.units, "study.units")
    if cfg.study.units is not None:
        try:
            check_units_file(cfg.study.units)
        except EocausalError as err:
            raise ConfigError(f"config field `study.units`: {err}") from None
    cfg.imagery.paths = [
        resolve(p, f"imagery.paths.{i}") for i, p in enumerate(cfg.imagery.paths)
    ]
    cfg.imagery.precut = resolve(cfg.imagery.precut, "imagery.precut")
    cfg.encoder.weights_path = resolve(cfg.encoder.weights_path, "encoder.weights_path")
    cfg.encoder.cache_dir = resolve(cfg.encoder.cache_dir, "encoder.cache_dir", must_exist=False)
    if cfg.debias is not None:
        cfg.debias.calibration = resolve(cfg.debias.calibration, "debias.calibration")
        cfg.debias.map = resolve(cfg.debias.map, "debias.map")


def parse_config(data: Any, *, base_dir: str | Path = ".") -> RunConfig:
    """Validate a configuration given as a mapping.

    Relative paths, ``run_dir`` included, resolve against ``base_dir``; input files must
    exist and ``run_dir`` must be a folder that can be written or created.
    """
    cfg = validate(RunConfig, data)
    _resolve_paths(cfg, Path(base_dir).resolve())
    return cfg


def load_config(path: str | Path, *, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a YAML configuration file.

    Relative paths in the file, ``run_dir`` included, resolve against the file's folder.

    Parameters
    ----------
    path : str or Path
        The YAML file: UTF-8, at most 1 MB, read with PyYAML's safe loader; aliases
        (``*name``) may add at most 10,000 values when expanded.
    overrides : dict, optional
        Top-level keys replacing those of the file (e.g. ``{"run_dir": ...}``; give an
        absolute ``run_dir``, as a relative one resolves against the file's folder).

    Raises
    ------
    ConfigError
        With the dotted path of the offending field, or the file and what is wrong
        with it; values are echoed in at most 80 characters.
    """
    data, base = load_yaml(path, overrides)
    return parse_config(data, base_dir=base)
