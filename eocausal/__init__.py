"""eocausal: causal inference with satellite imagery.

Study units and Landsat-class imagery in; multi-scale chips, encoder
embeddings, CATE and ATE estimates, honest heterogeneity evaluation (RATE as
in grf), debiased predicted outcomes, effect maps and reports out.

The public API is re-exported here lazily (PEP 562), so that importing the
causal stages (``eocausal.estimate``, ``eocausal.evaluate``,
``eocausal.features``, ``eocausal.debias``) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # units and imagery
    "StudyUnits": "eocausal.units",
    "Scale": "eocausal.imagery",
    "ChipSpec": "eocausal.imagery",
    "ChipDataset": "eocausal.imagery",
    "RasterSource": "eocausal.imagery",
    "StacSource": "eocausal.imagery",
    "PrecutChipSource": "eocausal.imagery",
    "CallableSource": "eocausal.imagery",
    # encoders and the embeddings artifact
    "MosaiksEncoder": "eocausal.encode",
    "build_encoder": "eocausal.encode",
    "embed": "eocausal.encode",
    "Embeddings": "eocausal.embeddings",
    # features and estimation
    "MultiScaleFeatures": "eocausal.features",
    "CausalForest": "eocausal.estimate",
    "DRLearner": "eocausal.estimate",
    "TLearner": "eocausal.estimate",
    "aipw_ate": "eocausal.estimate",
    "hajek_ipw_ate": "eocausal.estimate",
    # evaluation
    "rate": "eocausal.evaluate",
    "compare_scales": "eocausal.evaluate",
    "calibration_test": "eocausal.evaluate",
    "best_linear_projection": "eocausal.evaluate",
    # debiasing predicted outcomes
    "LinearCalibration": "eocausal.debias",
    "TweedieCorrection": "eocausal.debias",
    "debias_outcome": "eocausal.debias",
    "OutcomeModel": "eocausal.outcome",
    # maps, simulation, configuration, pipeline
    "RegionGrid": "eocausal.maps",
    "run_map_job": "eocausal.maps",
    "MapArtifact": "eocausal.maps",
    "sample_map": "eocausal.maps",
    "make_demo_study": "eocausal.simulate",
    "load_config": "eocausal.config",
    "run_pipeline": "eocausal.pipeline",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eocausal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
