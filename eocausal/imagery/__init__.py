"""Imagery: sources, multi-scale chip specification and the streaming chip reader.

Typical use::

    from eocausal.units import StudyUnits
    from eocausal.imagery import ChipDataset, ChipSpec, RasterSource, Scale

    units = StudyUnits.read("units.csv", treatment_col="treated", outcome_col="y")
    spec = ChipSpec([Scale("small", size_px=64, out_px=64), Scale("large", size_km=10, out_px=64)],
                    bands=["SR_B4", "SR_B3", "SR_B2"], recipe="c2_sr")
    dataset = ChipDataset(units, RasterSource(["a.tif", "b.tif"]), spec)
    dataset.exclusions  # units excluded before reading, with reasons

Modules, one concept each: ``spec`` (Scale, ChipSpec), ``geometry`` (pixel of a
point, window sizes, padding), ``resampling``, ``layers`` (Layer grids),
``geosource`` (GeoSource), ``raster``, ``stac``, ``keyed``, ``precut``,
``callable`` (the sources), ``plan`` (reads planned before any pixel; degenerate
imagery rejected), ``dataset`` (ChipDataset), ``exclusions`` (reasons and their
counts), ``bands``, ``cache``, ``preview``. ``chips`` and ``sources`` re-export
their former contents.
"""

from eocausal.imagery.bands import RECIPES, apply_recipe, qa_pixel_invalid
from eocausal.imagery.cache import ChipCache
from eocausal.imagery.callable import CallableSource
from eocausal.imagery.dataset import ChipDataset
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.keyed import KeyedSource
from eocausal.imagery.layers import Layer
from eocausal.imagery.precut import PrecutChipSource
from eocausal.imagery.preview import write_chip_preview
from eocausal.imagery.raster import RasterSource
from eocausal.imagery.resampling import resample
from eocausal.imagery.spec import ChipSpec, Scale
from eocausal.imagery.stac import StacSource

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
