"""Debiasing effects estimated on predicted outcomes (maps predicted from imagery).

A map :math:`\\hat Y` predicted from imagery (a wealth index, a yield) shrinks
toward the mean, so treatment effects estimated on it are attenuated. This
package corrects the predicted outcome with a small labelled *calibration* set
(pairs of prediction and truth), following Pettersson, Jerzak and Daoud
(2026), gives standard errors that include the correction's own uncertainty,
and offers prediction-powered inference as the comparator when a few fresh
labels exist in the study population itself.

- :mod:`~eocausal.debias.corrections`: :class:`LinearCalibration`
  (:math:`\\hat Y = m + kY` inverted) and :class:`TweedieCorrection`
  (:math:`\\tilde Y = \\hat Y - \\sigma^2 \\frac{d}{d\\hat y}\\log\\hat p(\\hat Y)`).
- :mod:`~eocausal.debias.selection`: :func:`select_correction`, by
  cross-validated pseudo-contrasts of known size on the calibration set.
- :mod:`~eocausal.debias.outcome`: :func:`debias_outcome`, the corrected
  outcome per unit plus diagnostics.
- :mod:`~eocausal.debias.bootstrap`: :func:`correction_bootstrap`, the
  calibration SE of any statistic of the corrected outcome (refit the
  correction on resampled calibration pairs, recompute the statistic).
- :mod:`~eocausal.debias.inference`: :func:`debiased_ate` (naive and
  corrected Hajek IPW side by side) and :func:`debiased_aipw_ate`, each with
  ``std_err`` = sqrt(sampling² + calibration²), clusters and weights.
- :mod:`~eocausal.debias.ppi`: :func:`ppi_ate`, PPI++ for the ATE with
  cluster-robust SEs.

Never imports torch.

References
----------
.. [1] Pettersson, M. B., Jerzak, C. T., Daoud, A. (2026). One Map, Many
   Trials: Satellite-Based Causal Inference with Debiased Predicted Outcomes.
   AAAI 2026.
.. [2] Efron, B. (2011). Tweedie's formula and selection bias. JASA 106(496).
.. [3] Angelopoulos, A. N., Bates, S., Fannjiang, C., Jordan, M. I., Zrnic, T.
   (2023). Prediction-powered inference. Science 382(6671).
.. [4] Angelopoulos, A. N., Duchi, J. C., Zrnic, T. (2023). PPI++: Efficient
   prediction-powered inference. arXiv:2311.01453.
"""

from eocausal.debias.bootstrap import CorrectionBootstrap, correction_bootstrap
from eocausal.debias.corrections import METHODS, LinearCalibration, TweedieCorrection
from eocausal.debias.inference import DebiasedAIPW, DebiasedATE, debiased_aipw_ate, debiased_ate
from eocausal.debias.outcome import DebiasResult, debias_outcome
from eocausal.debias.ppi import PPIResult, ppi_ate
from eocausal.debias.selection import SelectionResult, select_correction

__all__ = [
    "METHODS",
    "CorrectionBootstrap",
    "DebiasResult",
    "DebiasedAIPW",
    "DebiasedATE",
    "LinearCalibration",
    "PPIResult",
    "SelectionResult",
    "TweedieCorrection",
    "correction_bootstrap",
    "debias_outcome",
    "debiased_aipw_ate",
    "debiased_ate",
    "ppi_ate",
    "select_correction",
]
