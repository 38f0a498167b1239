"""Outcome models from imagery: the map model and its honest accuracy.

Predict an outcome (a wealth index, a yield) from imagery features at labelled
locations, with accuracy measured the way a map will be used: on spatial blocks
the model never saw.

- :func:`spatial_blocks`: block id per location on a square km grid (the groups).
- :class:`OutcomeModel`: ridge (MOSAIKS default), histogram gradient boosting
  or an MLP; a calibration split of whole groups held out, group K-fold
  cross-fitting on the rest, a final model for the map; per-fold and overall
  R², RMSE and shrinkage slope; safe ``save``/``load`` (npz + JSON, no pickle).
- :func:`outcome_metrics`: R², RMSE, and the slope and intercept of the
  prediction regressed on the truth.

Never imports torch.
"""

from eocausal.outcome.blocks import spatial_blocks
from eocausal.outcome.metrics import outcome_metrics
from eocausal.outcome.model import OutcomeModel

__all__ = ["OutcomeModel", "outcome_metrics", "spatial_blocks"]
