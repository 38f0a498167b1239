"""YAML configurations, validated by pydantic.

- :mod:`~eocausal.config.run`: a whole run (``eocausal run``/``chips``/``embed``/``evaluate``):
  study units, imagery and chip scales, encoder, features, learner, evaluation, debiasing.
- :mod:`~eocausal.config.maps`: an outcome model and its region map (``eocausal fit-outcome``,
  ``eocausal map``), and many trials against one map (``eocausal trials``).
- :mod:`~eocausal.config.loading`: safe reading (UTF-8, at most 1 MB, aliases adding at most
  10,000 values) and one-line errors with the dotted path of the offending field.

Unknown keys and wrong types are rejected with the field's path and the value received (at
most 80 characters); relative paths, ``run_dir`` included, resolve against the file's folder;
input files must exist and ``run_dir`` must be a folder that can be written or created.

Example
-------
>>> from eocausal.config import load_config
>>> cfg = load_config("configs/demo.yaml")  # doctest: +SKIP
>>> cfg.imagery.scales[0].name  # doctest: +SKIP
'1km'
"""

from eocausal.config.maps import (
    LabelsConfig,
    MapRunConfig,
    OutcomeConfig,
    RegionConfig,
    TrialConfig,
    TrialsConfig,
    load_map_config,
    load_trials_config,
    parse_map_config,
    parse_trials_config,
)
from eocausal.config.run import (
    DebiasConfig,
    EstimateConfig,
    EvaluateConfig,
    ImageTypesConfig,
    MapConfig,
    RunConfig,
    SimulateConfig,
    StudyConfig,
    load_config,
    parse_config,
)
from eocausal.config.sections import EncoderConfig, FeaturesConfig, ImageryConfig, ScaleConfig

__all__ = [
    "DebiasConfig",
    "EncoderConfig",
    "EstimateConfig",
    "EvaluateConfig",
    "FeaturesConfig",
    "ImageTypesConfig",
    "ImageryConfig",
    "LabelsConfig",
    "MapConfig",
    "MapRunConfig",
    "OutcomeConfig",
    "RegionConfig",
    "RunConfig",
    "ScaleConfig",
    "SimulateConfig",
    "StudyConfig",
    "TrialConfig",
    "TrialsConfig",
    "load_config",
    "load_map_config",
    "load_trials_config",
    "parse_config",
    "parse_map_config",
    "parse_trials_config",
]
