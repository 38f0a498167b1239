"""Evaluation of heterogeneous effects: RATE / TOC exactly as grf, honest protocols,
calibration and best linear projection, and the comparison of image scales.

Never imports torch.

References
----------
Yadlowsky, Fleming, Shah, Brunskill, Wager (2021), "Evaluating treatment
prioritization rules via rank-weighted average treatment effects".
Wager (2024), "Sequential validation of treatment heterogeneity".
Chernozhukov, Demirer, Duflo, Fernandez-Val, "Generic machine learning inference
on heterogeneous treatment effects in randomized experiments".
Zhu, Jerzak, Daoud (2025), "Optimizing multi-scale representations to detect
effect heterogeneity using Earth observation and computer vision", CLeaR.
"""

from eocausal.evaluate.calibration import (
    BLPResult,
    CalibrationResult,
    best_linear_projection,
    calibration_test,
    cluster_robust_hc3,
)
from eocausal.evaluate.honest import (
    SequentialCVRATE,
    SingleSplitRATE,
    rate_sequential_cv,
    rate_single_split,
)
from eocausal.evaluate.plots import plot_rates, plot_scale_comparison, plot_toc
from eocausal.evaluate.protocol import HonestSplit
from eocausal.evaluate.rate import (
    DEFAULT_Q,
    RATEComparison,
    RATEResult,
    compare_priorities,
    rate,
    rate_difference,
    rate_shared_draws,
)
from eocausal.evaluate.scales import (
    ScaleComparison,
    ScaleFits,
    compare_scales,
    fit_scale_combinations,
    scale_combinations,
    score_scale_combinations,
)

__all__ = [
    "DEFAULT_Q",
    "BLPResult",
    "HonestSplit",
    "CalibrationResult",
    "RATEComparison",
    "RATEResult",
    "ScaleComparison",
    "ScaleFits",
    "SequentialCVRATE",
    "SingleSplitRATE",
    "best_linear_projection",
    "calibration_test",
    "cluster_robust_hc3",
    "compare_priorities",
    "compare_scales",
    "fit_scale_combinations",
    "plot_rates",
    "plot_scale_comparison",
    "plot_toc",
    "rate",
    "rate_difference",
    "rate_sequential_cv",
    "rate_shared_draws",
    "rate_single_split",
    "scale_combinations",
    "score_scale_combinations",
]
