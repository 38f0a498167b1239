"""Effect estimation: CATE learners, average effects with cluster-robust inference, TWFE panels.

Never imports torch. Folds and splits come from :mod:`eocausal.splitting` only;
input checks live in :mod:`eocausal.validation` (both light, re-exported here).

References
----------
Athey, Tibshirani, Wager (2019), "Generalized random forests", Annals of Statistics.
Chernozhukov et al. (2018), "Double/debiased machine learning".
Kennedy (2023), "Towards optimal doubly robust estimation of heterogeneous causal effects".
"""

from eocausal.estimate.ate import (
    ATEResult,
    IPWResult,
    OverlapDiagnostics,
    aipw_ate,
    cluster_robust_se,
    dr_scores,
    hajek_ipw_ate,
    hajek_weights,
    overlap_diagnostics,
)
from eocausal.estimate.cate import CausalForest, DRLearner, TLearner
from eocausal.estimate.forest_settings import default_mtry, grf_mtry
from eocausal.estimate.nuisance import (
    crossfit_arm_outcomes,
    crossfit_outcome,
    default_outcome_model,
    estimate_propensity,
)
from eocausal.estimate.panel import PanelResult, twfe
from eocausal.estimate.panel_did import PanelEffect, PanelEffects, panel_effects
from eocausal.splitting import fold_splits, make_folds, split_units
from eocausal.validation import check_treatment_outcome

__all__ = [
    "ATEResult",
    "CausalForest",
    "DRLearner",
    "IPWResult",
    "OverlapDiagnostics",
    "PanelEffect",
    "PanelEffects",
    "PanelResult",
    "TLearner",
    "aipw_ate",
    "check_treatment_outcome",
    "cluster_robust_se",
    "crossfit_arm_outcomes",
    "crossfit_outcome",
    "default_mtry",
    "default_outcome_model",
    "dr_scores",
    "estimate_propensity",
    "fold_splits",
    "grf_mtry",
    "hajek_ipw_ate",
    "hajek_weights",
    "make_folds",
    "overlap_diagnostics",
    "panel_effects",
    "split_units",
    "twfe",
]
