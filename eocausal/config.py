"""YAML run configurations, validated by pydantic.

A configuration describes one whole run: the study units, the imagery and
chip scales, the encoder, the features, the CATE learner, the evaluation and
the optional debiasing of a predicted outcome. Unknown keys and wrong types
are rejected with the dotted path of the offending field and the value received
(at most 80 characters); relative paths, ``run_dir`` included, are resolved against
the configuration file's folder; input files must exist and ``run_dir`` must be a
folder that can be written or created. The file itself must be UTF-8 YAML of at
most 1 MB whose aliases add at most 10,000 values (no "billion laughs").

Example
-------
>>> from eocausal.config import load_config
>>> cfg = load_config("configs/demo.yaml")  # doctest: +SKIP
>>> cfg.imagery.scales[0].name  # doctest: +SKIP
'1km'
"""

from __future__ import annotations

import difflib
import reprlib
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from eocausal.errors import ConfigError, EocausalError

__all__ = [
    "DebiasConfig",
    "EncoderConfig",
    "EstimateConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "ImageTypesConfig",
    "ImageryConfig",
    "MapConfig",
    "RunConfig",
    "ScaleConfig",
    "SimulateConfig",
    "StudyConfig",
    "load_config",
    "parse_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class ScaleConfig(_Strict):
    """One chip scale: a width in pixels or kilometres, and the output size."""

    name: str
    size_px: Annotated[int, Field(ge=1)] | None = None
    size_km: Annotated[float, Field(gt=0)] | None = None
    out_px: Annotated[int, Field(ge=4, le=1024)] = 32

    @model_validator(mode="after")
    def _one_size(self) -> ScaleConfig:
        if (self.size_px is None) == (self.size_km is None):
            raise ValueError(f"scale {self.name!r}: give exactly one of `size_px` or `size_km`")
        return self


class ImageryConfig(_Strict):
    """Imagery source and chip specification."""

    source: Literal["raster", "stac", "precut", "simulated"] = "raster"
    paths: list[Path] = Field(default_factory=list)
    precut: Path | None = None
    precut_images_key: str = "images"
    precut_keys_key: str = "image_keys"
    bands: list[str] | None = None
    recipe: str = "none"
    dates: list[str] | None = None
    qa_mask: bool = False
    min_valid_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    scales: Annotated[list[ScaleConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _names_unique(self) -> ImageryConfig:
        names = [s.name for s in self.scales]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scale names must be unique; repeated: {dup}")
        return self


class EncoderConfig(_Strict):
    """The image encoder and how the embedding job runs."""

    name: str = "mosaiks"
    n_features: Annotated[int, Field(ge=2)] = 256
    weights_path: Path | None = None
    #: sha256 (64 hex digits) that ``weights_path`` must have; required for a timm architecture
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    cache_dir: Path | None = None
    batch_size: Annotated[int, Field(ge=1)] = 64
    num_workers: Annotated[int, Field(ge=0)] = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: Annotated[int, Field(ge=1)] = 1
    strategy: str = "auto"
    precision: str | None = None
    # the temporal transformer is trained on an outcome (eocausal.encode.temporal_pool, API only)
    temporal: Literal["mean", "concat"] = "mean"


class FeaturesConfig(_Strict):
    """Multi-scale concatenation."""

    scales: list[str] | None = None
    pca_components: Annotated[int, Field(ge=1)] | None = 10
    standardize: bool = True
    include_covariates: bool = True


class EstimateConfig(_Strict):
    """The design and the CATE learner.

    ``design: cross_section`` (one row per unit): CATE, ATE and RATE. ``design: panel``
    (one row per unit and period, ``study.time_col``): two-way fixed effects and Hajek
    IPW with image propensities (see :func:`eocausal.estimate.panel_effects`).
    """

    design: Literal["cross_section", "panel"] = "cross_section"
    learner: Literal["causal_forest", "dr_learner", "t_learner"] = "causal_forest"
    n_estimators: Annotated[int, Field(ge=4)] = 400
    min_samples_leaf: Annotated[int, Field(ge=1)] = 10
    n_folds: Annotated[int, Field(ge=2)] = 3


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

    The study's outcome column is replaced by ``predicted_col``; the corrected
    outcome flows into the ATE and CATE estimates, and the report shows the naive
    and corrected ATE side by side (plus PPI when some study units carry a fresh
    label in ``fresh_label_col``).
    """

    predicted_col: str
    calibration: Path
    calibration_predicted_col: str = "predicted"
    calibration_truth_col: str = "truth"
    method: Literal["auto", "linear", "tweedie", "none"] = "auto"
    sigma_source: Literal["calibration", "validation_residuals"] = "calibration"
    residuals_col: str | None = None
    density_source: Literal["target_predictions", "calibration_predictions"] = "target_predictions"
    fresh_label_col: str | None = None

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


_MAX_CONFIG_BYTES = 1_000_000
#: the most nodes that aliases (``*name``) may add to a document when expanded
_MAX_ALIAS_NODES = 10_000
_ECHO_CHARS = 80
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, _ECHO_CHARS, _ECHO_CHARS


def _clip(text: str) -> str:
    """``text`` cut to at most 80 characters, with an ellipsis when cut."""
    return text if len(text) <= _ECHO_CHARS else text[: _ECHO_CHARS - 1] + "…"


def _echo(value: Any) -> str:
    """``value`` as a message may show it: at most 80 characters; large containers by type and length."""
    text = _REPR.repr(value)
    if isinstance(value, (dict, list, tuple, set)) and (len(value) > _REPR.maxlist or len(text) > _ECHO_CHARS):
        summary = f"a {type(value).__name__} of {len(value)} items"
        return f"{summary}: {text}" if len(summary) + len(text) + 2 <= _ECHO_CHARS else summary
    return _clip(text)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's annotation (``X``, ``X | None``, ``list[X]``)."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        return annotation if issubclass(annotation, BaseModel) else None
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """Say which keys the section at ``loc[:-1]`` knows, or the one ``loc[-1]`` was meant to be."""
    model: type[BaseModel] | None = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        model = None if field is None else _submodel(field.annotation)
    if model is None:
        return "check its spelling (see configs/demo.yaml for the known keys)"
    known = list(model.model_fields)
    key = str(loc[-1])
    close = difflib.get_close_matches(key, known, n=1) or [k for k in known if len(key) >= 3 and k.startswith(key)]
    if close:
        return f"did you mean `{close[0]}`?"
    return f"the known keys here are {', '.join(known)}"


def _format_error(err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    loc = ".".join(_clip(str(p)) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = f"unknown key; {_unknown_key_hint(first['loc'])}"
    elif first["type"] == "missing":
        msg = "required but missing; add it (see configs/demo.yaml for an example)"
    elif first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif "input" in first:
        msg = f"{msg} (got {_echo(first['input'])})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"config field `{loc}`" if loc else "config"
    return f"{where}: {msg}{more}"


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, since permissions alone do not tell)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _check_run_dir(run_dir: Path) -> None:
    """``run_dir`` must be a folder to write in, or one that can be created."""
    fix = "choose another `run_dir` in the config (or `--run-dir` on the command line)"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"config field `run_dir`: {str(run_dir)!r} is a file, not a folder; {fix}")
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"config field `run_dir`: {str(run_dir)!r} lies under {str(existing)!r}, which is a file; {fix}"
        )
    if not _writable(existing):
        raise ConfigError(
            f"config field `run_dir`: cannot create files in {str(existing)!r} (no permission or a "
            f"read-only file system); {fix}"
        )


def _resolve_paths(cfg: RunConfig, base: Path) -> None:
    """Make relative paths absolute against ``base`` and check inputs and the run folder."""
    from eocausal.units import check_units_file

    def resolve(p: Path | None, field: str, must_exist: bool = True) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        p = p if p.is_absolute() else (base / p)
        if must_exist and not p.exists():
            raise ConfigError(f"config field `{field}`: file {str(p)!r} does not exist")
        return p

    # Outputs and inputs alike are found beside the config file (the CLI makes --run-dir absolute).
    cfg.run_dir = resolve(cfg.run_dir, "run_dir", must_exist=False).resolve()
    _check_run_dir(cfg.run_dir)
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


def parse_config(data: Any, *, base_dir: str | Path = ".") -> RunConfig:
    """Validate a configuration given as a mapping.

    Relative paths, ``run_dir`` included, resolve against ``base_dir``; input files must
    exist and ``run_dir`` must be a folder that can be written or created.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"config: the top level must be a mapping of keys to values (got {_echo(data)}); "
            "start from configs/demo.yaml"
        )
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    _resolve_paths(cfg, Path(base_dir).resolve())
    return cfg


def _expansion(node: yaml.Node, path: Path) -> tuple[int, int]:
    """Nodes of the document once every alias is expanded, and distinct nodes (no construction)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                f"config file {str(path)!r}: an alias (*name) refers to a node that contains it, "
                "which would expand without end; remove the alias"
            )
        open_nodes.add(key)
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(c) for c in n.value)
        else:
            total = 1
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(node), len(sizes)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what the YAML syntax error is, in a few words."""
    if isinstance(err, yaml.reader.ReaderError):
        code = ord(err.character) if isinstance(err.character, str) else err.character
        return f" at character {err.position}: unacceptable character #x{code:04x} ({err.reason})"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None)
    return f"{where}: {_clip(problem)}" if problem else where


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, refusing huge files, non-UTF-8 text and alias bombs."""
    name = repr(str(path))
    size = path.stat().st_size
    if size > _MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {name} is {size:,} bytes, over the limit of {_MAX_CONFIG_BYTES:,} bytes for a "
            "configuration; check that this is the config file"
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        byte = err.object[err.start : err.start + 1].hex()
        raise ConfigError(
            f"config file {name} is not UTF-8 text: byte 0x{byte} at offset {err.start} cannot be "
            "decoded; save the file as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"config file {name} cannot be read ({err.strerror}); check its permissions") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        expanded, distinct = _expansion(node, path)
        if expanded - distinct > _MAX_ALIAS_NODES:
            count = f"{expanded:,}" if expanded < 10**12 else f"about 10^{len(str(expanded)) - 1}"
            raise ConfigError(
                f"config file {name}: its aliases (*name) would expand it to {count} values, over the "
                f"limit of {_MAX_ALIAS_NODES:,} added by aliases; write the values out or use fewer aliases"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {name} is not valid YAML{_yaml_problem(err)}") from None
    except RecursionError:
        raise ConfigError(f"config file {name} is nested too deeply to be a configuration") from None
    finally:
        if loader is not None:
            loader.dispose()


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
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give the YAML file (e.g. configs/demo.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = _read_yaml(path)
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_config(data, base_dir=path.parent)
