"""The estimate stage: features, one propensity, the corrected outcome, and the fitted models.

Fits, on the analysed units (those with embeddings):

- multi-scale features of all units (PCA and standardisation use images only);
- the propensity used by every estimate: known, a column, or cross-fitted from the
  image features and covariates;
- the corrected outcome when the outcome is a prediction (``debias``);
- on one honest split (:class:`~eocausal.evaluate.HonestSplit`): the CATE model of every
  scale combination on the training part (the all-scales one is the run's CATE model)
  and the evaluation model cross-fitted on the held-out part;
- the cross-fitted model on all units (for the ATE).

The artifact ``estimate/estimates.npz`` (numpy arrays only, no pickle) holds every
out-of-sample prediction the later stages use; ``estimate/estimate.json`` the debiasing
diagnostics and the names. Fitted econml forests have no safe serialisation, so the run's
CATE model is refitted from the config and seed when a later stage needs it in another
process (:func:`refit_run_model`; deterministic, checked against the saved predictions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import atomic_path, write_json
from eocausal.config import RunConfig
from eocausal.embeddings import Embeddings
from eocausal.errors import EocausalError
from eocausal.pipeline.correction import map_source, run_debias
from eocausal.pipeline.folder import file_fingerprint, fingerprint, is_current, write_manifest
from eocausal.pipeline.study import Log, PreparedStudy, _nolog, check_split

__all__ = ["Estimates", "estimate_stage", "learner_record", "load_estimates", "make_learner",
           "refit_run_model"]

_OPTIONAL = ("clusters", "weights", "tau_true", "naive_Y")


def make_learner(cfg: RunConfig, propensity: Any):
    """The configured CATE learner (unfitted) with ``propensity`` (float, per-unit array or None).

    The n-dependent settings (``estimate.max_samples``, ``estimate.final_model``) are
    passed as configured; ``"auto"`` leaves them to the learner's rules, resolved at
    each fit from its number of units (:func:`eocausal.estimate.forest_settings.auto_max_samples`,
    :func:`eocausal.estimate.forest_settings.auto_final_model`), so the training-half model and
    the all-units model may resolve differently. :func:`learner_record` reads back
    what they chose.
    """
    from eocausal.estimate import CausalForest, DRLearner, TLearner

    e = cfg.estimate
    if e.learner == "causal_forest":
        return CausalForest(
            n_estimators=e.n_estimators,
            min_samples_leaf=e.min_samples_leaf,
            max_samples=e.max_samples,
            n_folds=e.n_folds,
            propensity=propensity,
            random_state=cfg.seed,
        )
    if e.learner == "dr_learner":
        return DRLearner(max_samples=e.max_samples, final_model=e.final_model, n_folds=e.n_folds,
                         propensity=propensity, random_state=cfg.seed)
    return TLearner(max_samples=e.max_samples, n_folds=e.n_folds, propensity=propensity,
                    random_state=cfg.seed)


def learner_record(cfg: RunConfig, cate_model: Any, ate_model: Any) -> dict[str, Any]:
    """The learner and the settings its fits resolved, for ``estimate.json`` and ``results.json``.

    ``cate_model`` is the run's CATE model (training half), ``ate_model`` the
    all-units model; each entry is :func:`eocausal.estimate.forest_settings.resolved_settings`.
    """
    from eocausal.estimate.forest_settings import resolved_settings

    return {"name": cfg.estimate.learner, "cate_model": resolved_settings(cate_model),
            "ate_model": resolved_settings(ate_model)}


@dataclass
class Estimates:
    """The estimate artifact: out-of-sample predictions of every fitted model.

    Attributes
    ----------
    ids : ndarray of str, shape (n,)
        Analysed units, in the order of every per-unit array.
    T, Y : ndarray of shape (n,)
        Treatment and the analysed outcome (corrected when the outcome is a prediction).
    propensity : ndarray of shape (n,)
        The propensity of every estimate; ``propensity_source`` says where it comes from
        (``"known"``, ``"column"`` or ``"estimated"``).
    X_all : ndarray of shape (n, p)
        Features of all units (for the ATE model, the propensity and sequential RATE).
    train, test : ndarray of int
        The honest split: training part and held-out (evaluation) part.
    priorities : dict of str -> ndarray of shape (n_test,)
        Per scale combination, the training-part model's effects on the held-out units.
    eval_scores, eval_outcome, eval_propensity, eval_effect : ndarray of shape (n_test,)
        The evaluation model's out-of-fold DR scores, m̂, ê and τ̂ on the held-out units.
    tau_test, lower_test, upper_test : ndarray of shape (n_test,)
        The run's CATE model on the held-out units, with intervals for its expected prediction
        (NaN when the model has none: the DR learner's gradient-boosting final stage).
    tau_train : ndarray of shape (n_train,)
        The run's CATE model's out-of-bag effects on its training units.
    outcome_all, effect_all : ndarray of shape (n,)
        The all-units model's out-of-fold m̂ and τ̂ (AIPW).
    clusters, weights, tau_true, naive_Y : ndarray or None
    info : dict
        Names (``all_name``, ``combinations`` with their number of scales), ``compare``,
        ``propensity_source``, the debiasing block and ``learner``, the settings the
        learner's fits resolved (:func:`learner_record`).
    run_model : FittedCombination or None
        The run's CATE model and its features, in memory only (see :func:`refit_run_model`).
    """

    ids: np.ndarray
    T: np.ndarray
    Y: np.ndarray
    propensity: np.ndarray
    X_all: np.ndarray
    train: np.ndarray
    test: np.ndarray
    priorities: dict[str, np.ndarray]
    eval_scores: np.ndarray
    eval_outcome: np.ndarray
    eval_propensity: np.ndarray
    eval_effect: np.ndarray
    tau_test: np.ndarray
    lower_test: np.ndarray
    upper_test: np.ndarray
    tau_train: np.ndarray
    outcome_all: np.ndarray
    effect_all: np.ndarray
    clusters: np.ndarray | None = None
    weights: np.ndarray | None = None
    tau_true: np.ndarray | None = None
    naive_Y: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    run_model: Any = field(default=None, repr=False)

    def save(self, folder) -> None:
        """Write ``estimates.npz`` and ``estimate.json`` into ``folder`` atomically."""
        arrays = {k: v for k, v in self.__dict__.items()
                  if isinstance(v, np.ndarray) and k not in ("clusters",)}
        if self.clusters is not None:
            arrays["clusters"] = self.clusters.astype(str)
        for name, values in self.priorities.items():
            arrays[f"priority::{name}"] = values
        with atomic_path(folder / "estimates.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_json(self.info, folder / "estimate.json")

    @classmethod
    def load(cls, folder, key: str) -> Estimates:
        """Read the artifact written by :meth:`save` (no pickle)."""
        with np.load(folder / "estimates.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        priorities = {k.split("::", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith("priority::")}
        info = json.loads((folder / "estimate.json").read_text())
        return cls(priorities=priorities, info=info, key=key, **arrays)

    def part(self, values: np.ndarray | None, which: str) -> np.ndarray | None:
        """``values`` on the ``"train"`` or ``"test"`` rows (None stays None)."""
        return None if values is None else values[getattr(self, which)]


def estimate_key(cfg: RunConfig, study: PreparedStudy, embed_key: str) -> str:
    """What determines the fitted models: the embeddings, the units table and the config."""
    ev = cfg.evaluate
    return fingerprint({
        "embeddings": embed_key,
        "units": study.units_key(),
        "study": cfg.study.model_dump(mode="json", exclude={"units"}),
        "features": cfg.features.model_dump(mode="json"),
        "estimate": cfg.estimate.model_dump(mode="json", exclude={"backend", "scheduler"}),
        "split": {"test_size": ev.test_size, "compare_scales": ev.compare_scales,
                  "combinations": ev.combinations},
        "debias": None if cfg.debias is None else {
            **cfg.debias.model_dump(mode="json", exclude={"calibration", "map"}),
            "calibration": None if cfg.debias.calibration is None else file_fingerprint(cfg.debias.calibration),
            "map": map_source(cfg),
            "n_bootstrap": ev.n_bootstrap,
        },
        "seed": cfg.seed,
    })


def _analysis_inputs(cfg: RunConfig, study: PreparedStudy, emb: Embeddings):
    ids = emb.unit_ids
    units = study.units.subset(ids)
    s = cfg.study
    covariates = units.covariates if cfg.features.include_covariates else None
    if s.propensity is not None:
        known: Any = float(s.propensity)
    elif s.propensity_col is not None:
        known = study.table.loc[ids, s.propensity_col].to_numpy(float)
    else:
        known = None
    tau_true = study.table.loc[ids, s.true_effect_col].to_numpy(float) if s.true_effect_col else None
    return units, covariates, known, tau_true


def _scale_embeddings(cfg: RunConfig, emb: Embeddings) -> Embeddings:
    f = cfg.features
    return emb if f.scales is None else Embeddings(emb.unit_ids, {s: emb.block(s) for s in f.scales}, emb.metadata)


def estimate_stage(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, embed_key: str, *,
                   log: Log = _nolog) -> Estimates:
    """Fit (or reuse, when the manifest is current) every model of the run.

    The cross-fitting folds run on ``estimate.backend`` (this machine, or the Dask
    cluster at ``estimate.scheduler``); the estimates do not depend on it.
    """
    from eocausal.estimate.backend import parallel_backend

    with parallel_backend(cfg.estimate.backend, cfg.estimate.scheduler):
        return _estimate_stage(cfg, study, emb, embed_key, log=log)


def _estimate_stage(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, embed_key: str, *,
                    log: Log = _nolog) -> Estimates:
    from eocausal.estimate import estimate_propensity
    from eocausal.evaluate import HonestSplit, fit_scale_combinations
    from eocausal.features import MultiScaleFeatures

    key = estimate_key(cfg, study, embed_key)
    out = cfg.run_dir / "estimate"
    if is_current(out, key, ["estimates.npz", "estimate.json"]):
        log("estimate: inputs unchanged, reusing the fitted models' predictions")
        return Estimates.load(out, key)
    units, covariates, known, tau_true = _analysis_inputs(cfg, study, emb)
    ids, f, ev = emb.unit_ids, cfg.features, cfg.evaluate
    T = units.treatment.astype(int)
    Y = units.outcome.astype(float)
    clusters = None if units.clusters is None else np.asarray(units.clusters).astype(str)
    weights = units.weights
    check_split(cfg, T, clusters)

    X_all = MultiScaleFeatures(scales=f.scales, pca_components=f.pca_components, standardize=f.standardize,
                               random_state=cfg.seed).fit(emb, covariates).transform(emb, covariates).X
    source = "known" if cfg.study.propensity is not None else "column" if known is not None else "estimated"
    if known is None:
        log("propensity of treatment from the image features and covariates (cross-fitted) ...")
        known = estimate_propensity(X_all, T, n_folds=cfg.estimate.n_folds, clusters=clusters,
                                    sample_weight=weights, seed=cfg.seed)
    propensity = np.broadcast_to(np.asarray(known, dtype=float), T.shape).copy()

    debias_block, naive_Y = None, None
    if cfg.debias is not None:
        debias_block, correction = run_debias(
            cfg, study, ids, T, Y, known, clusters, weights,
            X_all if source == "estimated" else None, log,
        )
        naive_Y, Y = Y, correction.corrected

    scale_emb = _scale_embeddings(cfg, emb)
    all_name = "+".join(scale_emb.scales)
    compare = ev.compare_scales and len(scale_emb.scales) > 1
    log("fitting the CATE model of every scale combination on the training half and the "
        "evaluation model on the held-out half ..." if compare else
        "fitting the CATE model on the training half and the evaluation model on the held-out half ...")
    fits = fit_scale_combinations(
        scale_emb, T, Y, learner=make_learner(cfg, known), covariates=covariates,
        combinations=ev.combinations if compare else "all", pca_components=f.pca_components,
        standardize=f.standardize, clusters=clusters, sample_weight=weights,
        protocol=HonestSplit(test_size=ev.test_size, seed=cfg.seed),
    )
    train, test = fits.train_index, fits.eval_index
    run_model = fits.fitted[all_name]
    cov_test = covariates.iloc[test] if covariates is not None else None
    X_test = run_model.features.transform(scale_emb.subset(ids[test]), cov_test).X
    lower, upper = run_model.model.effect_interval(X_test)
    evaluator = fits.evaluator

    log("average treatment effect model (cross-fitted on all analysed units) ...")
    all_model = make_learner(cfg, known).fit(X_all, T, Y, clusters=clusters, sample_weight=weights)

    est = Estimates(
        ids=np.asarray(ids, dtype=str), T=T, Y=Y, propensity=propensity, X_all=X_all, train=train,
        test=test, priorities=fits.priorities, eval_scores=fits.dr_scores,
        eval_outcome=np.asarray(evaluator.outcome_oof_, float),
        eval_propensity=np.broadcast_to(evaluator.propensity_oof_, test.shape).astype(float),
        eval_effect=np.asarray(evaluator.effect_oof_, float), tau_test=fits.priorities[all_name],
        lower_test=np.asarray(lower, float), upper_test=np.asarray(upper, float),
        tau_train=np.asarray(run_model.model.effect_oof_, float),
        outcome_all=np.asarray(all_model.outcome_oof_, float),
        effect_all=np.asarray(all_model.effect_oof_, float),
        clusters=clusters, weights=weights, tau_true=tau_true, naive_Y=naive_Y,
        info={
            "all_name": all_name,
            "compare": compare,
            "combinations": {name: len(c) for name, c in zip(fits.priorities, fits.combinations)},
            "propensity_source": source,
            "debias": debias_block,
            "learner": learner_record(cfg, run_model.model, all_model),
        },
        key=key, run_model=run_model,
    )
    out.mkdir(parents=True, exist_ok=True)
    est.save(out)
    write_manifest(out, key, {"embeddings": embed_key, "units": study.units_key()})
    return est


def load_estimates(cfg: RunConfig, study: PreparedStudy, embed_key: str) -> Estimates:
    """The estimate artifact of an earlier run, or an error saying which stage to run."""
    key = estimate_key(cfg, study, embed_key)
    out = cfg.run_dir / "estimate"
    if not is_current(out, key, ["estimates.npz", "estimate.json"]):
        raise EocausalError(
            f"the fitted models in {str(out)!r} are missing or stale for this config; run "
            "`eocausal run CONFIG` to fit them"
        )
    return Estimates.load(out, key)


def refit_run_model(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, est: Estimates):
    """The run's CATE model (training half, all scales) refitted from the config and seed.

    Fitted econml forests cannot be saved without pickle, so a later process refits the
    model on the same units, features and seed, then checks that its predictions on the
    held-out units equal those saved in the artifact (to 1e-6; threads may change the
    last bits).
    """
    from eocausal.evaluate import HonestSplit
    from eocausal.evaluate.scales import FittedCombination
    from eocausal.features import MultiScaleFeatures

    if est.run_model is not None:
        return est.run_model
    emb = emb.subset(est.ids)  # the artifact's unit order, whatever order ``emb`` came in
    units, covariates, _, _ = _analysis_inputs(cfg, study, emb)
    known = float(cfg.study.propensity) if cfg.study.propensity is not None else est.propensity
    f = cfg.features
    scale_emb = _scale_embeddings(cfg, emb)
    cov_train = covariates.iloc[est.train] if covariates is not None else None
    builder = MultiScaleFeatures(scales=list(scale_emb.scales), pca_components=f.pca_components,
                                 standardize=f.standardize, random_state=cfg.seed)
    emb_train = scale_emb.subset(est.ids[est.train])
    builder.fit(emb_train, cov_train)
    model = HonestSplit.fit_part(make_learner(cfg, known), builder.transform(emb_train, cov_train).X,
                                 est.T, est.Y, est.train, clusters=est.clusters, sample_weight=est.weights)
    cov_test = covariates.iloc[est.test] if covariates is not None else None
    check = model.effect(builder.transform(scale_emb.subset(est.ids[est.test]), cov_test).X)
    if not np.allclose(check, est.tau_test, rtol=1e-6, atol=1e-6):
        raise EocausalError(
            "refitting the run's CATE model did not reproduce its saved predictions "
            f"(largest difference {float(np.max(np.abs(check - est.tau_test))):.3g}); rerun "
            "`eocausal run CONFIG` to refit every stage"
        )
    est.run_model = FittedCombination(builder, model)
    return est.run_model


def covariates_at_training_means(cfg: RunConfig, study: PreparedStudy, est: Estimates,
                                 index: pd.Index) -> pd.DataFrame | None:
    """Covariates held at their training-half means for ``index`` (grid cells of a map)."""
    if not cfg.features.include_covariates or not cfg.study.covariate_cols:
        return None
    covariates = study.units.subset(est.ids).covariates
    if covariates is None:
        return None
    means = covariates.iloc[est.train].mean()
    return pd.DataFrame([means.to_numpy()] * len(index), columns=covariates.columns, index=index)
