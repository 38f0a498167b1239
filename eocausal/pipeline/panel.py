"""The panel design: image propensities of ever being treated, then TWFE and Hajek IPW.

Units observed over several periods (``estimate.design: panel``): the propensity of each
unit comes from its image features and covariates (or is known), and weights the two-way
fixed-effects regression and the Hajek IPW of the unit-level change
(:func:`eocausal.estimate.panel_effects`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from eocausal.config import RunConfig
from eocausal.embeddings import Embeddings
from eocausal.pipeline.study import Log, PreparedStudy, _nolog

__all__ = ["panel_stage"]


def panel_stage(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, *, log: Log = _nolog) -> dict[str, Any]:
    """Panel design: image propensities of ever being treated, then TWFE and Hajek IPW.

    The propensity of a unit (known, a column, or cross-fitted from its image features and
    covariates) weights the two-way fixed-effects regression and the Hajek IPW of the
    unit-level change (:func:`eocausal.estimate.panel_effects`).
    """
    from eocausal.estimate import estimate_propensity, overlap_diagnostics, panel_effects
    from eocausal.features import MultiScaleFeatures

    s, f, ev = cfg.study, cfg.features, cfg.evaluate
    ids = emb.unit_ids
    units = study.units.subset(ids)
    T = units.treatment.astype(int)
    covariates = units.covariates if f.include_covariates else None
    if s.propensity is not None:
        propensity = np.full(len(ids), float(s.propensity))
    elif s.propensity_col is not None:
        propensity = study.table.loc[ids, s.propensity_col].to_numpy(float)
    else:
        log("propensity of ever being treated from the image features and covariates (cross-fitted) ...")
        X = MultiScaleFeatures(scales=f.scales, pca_components=f.pca_components,
                               standardize=f.standardize, random_state=cfg.seed).fit(emb, covariates).transform(emb, covariates).X
        propensity = estimate_propensity(X, T, n_folds=cfg.estimate.n_folds, clusters=units.clusters,
                                         sample_weight=units.weights, seed=cfg.seed)
    panel = study.panel[study.panel[s.id_col].isin(set(ids.tolist()))]
    log(f"panel effects on {len(panel)} unit-periods (TWFE and Hajek IPW with image propensities) ...")
    effects = panel_effects(
        panel,
        unit_col=s.id_col,
        time_col=study.time_col,
        treatment_col=s.treatment_col,
        outcome_col=s.outcome_col,
        propensity=pd.Series(propensity, index=pd.Index(ids, name=s.id_col)),
        cluster_col=s.cluster_col,
        weight_col=s.weight_col,
        n_bootstrap=ev.n_bootstrap,
        seed=cfg.seed,
    )
    block = effects.to_dict()
    if s.true_effect_col is not None:
        treated_rows = panel[s.treatment_col].astype(int) == 1
        block["truth"] = float(panel.loc[treated_rows, s.true_effect_col].mean())
    n_treated = int(T.sum())
    return {
        "study": {
            "design": "panel",
            "n_treated": n_treated,
            "n_control": int(len(T) - n_treated),
            "n_periods": int(panel[study.time_col].nunique()),
        },
        "panel": block,
        "overlap": overlap_diagnostics(propensity, T, warn=False).to_dict(),
    }
