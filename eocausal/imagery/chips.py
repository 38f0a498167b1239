"""Former home of the chip specification, resampling and reader; kept for old imports.

The code lives in :mod:`eocausal.imagery.spec` (:class:`ChipSpec`,
:class:`Scale`), :mod:`eocausal.imagery.resampling` (:func:`resample`,
:func:`resample_weights`) and :mod:`eocausal.imagery.dataset`
(:class:`ChipDataset`); import from :mod:`eocausal.imagery`.
"""

from eocausal.imagery.dataset import ChipDataset
from eocausal.imagery.resampling import resample, resample_weights
from eocausal.imagery.spec import ChipSpec, Scale

__all__ = ["ChipDataset", "ChipSpec", "Scale", "resample", "resample_weights"]
