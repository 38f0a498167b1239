"""Imagery: sources, multi-scale chip specification and the streaming chip reader.

Typical use::

    from eocausal.units import StudyUnits
    from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale

    units = StudyUnits.read("units.csv", treatment_col="treated", outcome_col="y")
    spec = ChipSpec([Scale("small", size_px=64, out_px=64), Scale("large", size_km=10, out_px=64)],
                    bands=["SR_B4", "SR_B3", "SR_B2"], recipe="c2_sr")
    dataset = ChipDataset(units, RasterSource(["a.tif", "b.tif"]), spec)
    dataset.exclusions  # units excluded before reading, with reasons
"""

from eocausal.imagery.bands import RECIPES, apply_recipe, qa_pixel_invalid
from eocausal.imagery.cache import ChipCache
from eocausal.imagery.chips import ChipDataset, ChipSpec, Scale, resample
from eocausal.imagery.preview import write_chip_preview
from eocausal.imagery.sources import (
    CallableSource,
    GeoSource,
    KeyedSource,
    Layer,
    PrecutChipSource,
    RasterSource,
    StacSource,
)

__all__ = [
    "RECIPES",
    "CallableSource",
    "ChipCache",
    "ChipDataset",
    "ChipSpec",
    "GeoSource",
    "KeyedSource",
    "Layer",
    "PrecutChipSource",
    "RasterSource",
    "Scale",
    "StacSource",
    "apply_recipe",
    "qa_pixel_invalid",
    "resample",
    "write_chip_preview",
]
