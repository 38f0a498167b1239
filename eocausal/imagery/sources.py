"""Former home of the imagery sources; kept for old imports.

Georeferenced sources: :mod:`eocausal.imagery.geosource` (:class:`GeoSource`),
:mod:`eocausal.imagery.raster` (:class:`RasterSource`),
:mod:`eocausal.imagery.stac` (:class:`StacSource`), their grids in
:mod:`eocausal.imagery.layers` (:class:`Layer`). Keyed sources:
:mod:`eocausal.imagery.keyed` (:class:`KeyedSource`),
:mod:`eocausal.imagery.precut` (:class:`PrecutChipSource`),
:mod:`eocausal.imagery.callable` (:class:`CallableSource`). Import from
:mod:`eocausal.imagery`.
"""

from eocausal.imagery.callable import CallableSource
from eocausal.imagery.geometry import pad_window
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.keyed import KeyedSource
from eocausal.imagery.layers import Layer
from eocausal.imagery.precut import PrecutChipSource
from eocausal.imagery.raster import RasterSource
from eocausal.imagery.stac import StacSource

__all__ = [
    "CallableSource",
    "GeoSource",
    "KeyedSource",
    "Layer",
    "PrecutChipSource",
    "RasterSource",
    "StacSource",
    "pad_window",
]
