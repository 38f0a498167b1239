"""The evaluation stage: every number of the report, computed from the estimate artifact.

- ATE: AIPW with the all-units model's cross-fitted nuisances, Hajek IPW with the image
  propensity (observational designs), the (weighted) difference in means; on a corrected
  outcome each with the correction's uncertainty added (calibration bootstrap);
- heterogeneity: the RATE of every scale combination on the held-out half with shared
  bootstrap draws and the multi-scale gain (:func:`~eocausal.evaluate.score_scale_combinations`),
  the sequential cross-fitted RATE test when asked, the honest calibration test of the
  run's CATEs, the best linear projection on the covariates;
- the image-type model when enabled, and the per-unit CATE table ``cate.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_csv
from eocausal.config import RunConfig
from eocausal.embeddings import Embeddings
from eocausal.pipeline.correction import Correction, correction_of
from eocausal.pipeline.estimate import Estimates
from eocausal.pipeline.study import Log, PreparedStudy, _nolog

__all__ = ["Evaluation", "evaluate_stage"]

_Z95 = 1.959963984540054


@dataclass
class Evaluation:
    """The report's sections (JSON-ready) and the objects its figures are drawn from."""

    sections: dict[str, Any]
    scale_comparison: Any
    main_rate: Any
    salience: dict[str, Any] | None = None


def _ci_row(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d.get(k) for k in ("estimate", "std_err", "ci_lower", "ci_upper")}


def _with_correction_se(row: dict[str, Any], calibration_se: float) -> dict[str, Any]:
    """``row`` with SE = sqrt(sampling^2 + calibration^2) and its normal 95% interval."""
    sampling = float(row["std_err"])
    se = float(np.hypot(sampling, calibration_se))
    est = float(row["estimate"])
    return {**row, "std_err": se, "ci_lower": est - _Z95 * se, "ci_upper": est + _Z95 * se,
            "sampling_se": sampling, "calibration_se": float(calibration_se)}


def _difference_in_means(Y, T, clusters, weights) -> dict[str, Any]:
    """(Weighted) Neyman difference in means with a (cluster-robust) SE, a model-free comparator.

    mean_w(Y | W=1) - mean_w(Y | W=0): AIPW with the weighted treated share as propensity
    and the weighted arm means as outcome regressions.
    """
    from eocausal.estimate import aipw_ate

    w = np.ones(len(Y)) if weights is None else weights
    p = float(np.sum(w * T) / np.sum(w))
    mu1 = np.sum(w * T * Y) / np.sum(w * T)
    mu0 = np.sum(w * (1 - T) * Y) / np.sum(w * (1 - T))
    res = aipw_ate(Y, T, p, mu0=np.full(len(Y), mu0), mu1=np.full(len(Y), mu1),
                   clusters=clusters, sample_weight=weights, warn_overlap=False)
    return _ci_row(res.to_dict())


def _ate_section(est: Estimates, correction: Correction | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from eocausal.estimate import aipw_ate, hajek_ipw_ate, hajek_weights, overlap_diagnostics

    T, Y, e, w, cl = est.T, est.Y, est.propensity, est.weights, est.clusters
    estimated = est.info["propensity_source"] == "estimated"
    ate = aipw_ate(Y, T, e, outcome_hat=est.outcome_all, effect=est.effect_all, clusters=cl, sample_weight=w)
    rows = [{"method": "AIPW (cross-fitted)", **_ci_row(ate.to_dict())}]
    overlap = None
    if estimated:
        # observational design: Hajek IPW as the design-based comparator; its SE accounts for
        # the estimation of the propensity (projection on the logistic scores)
        overlap = overlap_diagnostics(e, T, warn=False).to_dict()
        ipw = hajek_ipw_ate(Y, T, e, clusters=cl, sample_weight=w, propensity_features=est.X_all,
                            warn_overlap=False)
        rows.append({"method": "Hajek IPW (image propensity)", **_ci_row(ipw.to_dict())})
    rows.append({"method": "difference in means", **_difference_in_means(Y, T, cl, w)})
    aipw = ate.to_dict()
    debias_block = None
    if correction is not None:
        # the correction refitted on resampled calibration pairs, every estimate recomputed
        # with nuisances and propensities held fixed (all three are linear in the outcome)
        w_all = np.ones(len(T)) if w is None else w
        linear = [hajek_weights(T, e, sample_weight=w)] if estimated else []
        linear.append(hajek_weights(T, float(np.sum(w_all * T) / np.sum(w_all)), sample_weight=w))

        def statistic(y: np.ndarray) -> np.ndarray:
            a = aipw_ate(y, T, e, outcome_hat=est.outcome_all, effect=est.effect_all,
                         sample_weight=w, warn_overlap=False).estimate
            return np.array([a] + [float(v @ y) for v in linear])

        boot = correction.bootstrap(statistic)
        rows = [_with_correction_se(row, cse) for row, cse in zip(rows, boot.std_err)]
        aipw = {**aipw, **{k: rows[0][k] for k in ("std_err", "ci_lower", "ci_upper", "sampling_se", "calibration_se")}}
        info = est.info["debias"]
        side = info["side_by_side"]
        table = [
            {"outcome": "naive (predicted), IPW", "estimate": side["naive"], "std_err": side["naive_se"]},
            {"outcome": f"corrected ({info['method']}), IPW", **_ci_row(side),
             "sampling_se": side["sampling_se"], "calibration_se": side["calibration_se"]},
            {"outcome": f"corrected ({info['method']}), AIPW", **rows[0]},
        ]
        if info.get("ppi") is not None:
            table.append({"outcome": "PPI++ (fresh labels)", **_ci_row(info["ppi"])})
        resampling = (info.get("map") or {}).get("calibration_resampling", "pairs")
        drawn = "" if resampling == "pairs" else f" of the map's {resampling}"
        debias_block = {
            **info, "rows": table,
            "se_note": "SEs of estimates on the corrected outcome (here, in the ATE table and the "
            "RATE table) are sqrt(sampling^2 + calibration^2): the sampling SE with the correction "
            "held fixed (cluster-robust, weighted) and the calibration SE from a bootstrap of the "
            f"calibration pairs ({boot.n_bootstrap} draws{drawn}) that refits the correction and recomputes "
            "the estimate with nuisances and propensities held fixed. The naive row treats the "
            "prediction as the outcome.",
        }
    if est.tau_true is not None:
        rows.append({"method": "truth (mean of tau_true)", "estimate": float(np.mean(est.tau_true))})
    note = ("AIPW with cross-fitted outcome and effect models"
            + (" and estimated propensities (cross-fitted from the image features and covariates)."
               if estimated else " and the known assignment probability.")
            + (" Cluster-robust SE." if cl is not None else ""))
    return {"rows": rows, "aipw": aipw, "note": note, "overlap": overlap}, debias_block


def _correct_rate_block(block: dict[str, Any], est: Estimates, correction: Correction, target: str) -> str:
    """Add the correction's uncertainty to every RATE (and the multi-scale gain) of ``block``.

    The RATE of each fixed ranking is recomputed on the doubly robust scores of each refitted
    correction, with the evaluation model's nuisances held fixed; the calibration SD is
    combined with the half-sample bootstrap SE, and ratios and p-values are recomputed.
    """
    from scipy.stats import norm

    from eocausal.estimate import dr_scores
    from eocausal.evaluate import rate

    names = list(est.priorities)
    gain = block.get("multiscale_gain")
    test = est.test
    w_test = est.part(est.weights, "test")

    def statistic(y: np.ndarray) -> np.ndarray:
        g = dr_scores(y[test], est.T[test], est.eval_propensity, est.eval_outcome, est.eval_effect)
        r = {n: rate(g, est.priorities[n], target=target, n_bootstrap=0, sample_weight=w_test).estimate
             for n in names}
        extra = [r[gain["best_multi"]] - r[gain["best_single"]]] if gain else []
        return np.array([r[n] for n in names] + extra)

    boot = correction.bootstrap(statistic)
    cse = dict(zip(names, boot.std_err))
    rows = [*block["table"], block["main"]] + ([gain] if gain else [])
    keys = [r["combination"] for r in block["table"]] + [block["main"]["name"]] + (["gain"] if gain else [])
    for row, key in zip(rows, keys):
        c = float(boot.std_err[-1]) if key == "gain" else float(cse[key])
        se = float(np.hypot(row["std_err"], c))
        ratio = row["estimate"] / se if se > 0 else None
        row.update(sampling_se=row["std_err"], calibration_se=c, std_err=se, ratio=ratio,
                   p_value=None if ratio is None else float(2.0 * norm.sf(abs(ratio))))
    return (
        "The outcome is a corrected prediction: each SE is sqrt(half-sample bootstrap SE^2 + "
        "calibration SE^2), the calibration SE from refitting the correction on "
        f"{boot.n_bootstrap} bootstrap resamples of the calibration pairs and recomputing each "
        "RATE with the rankings and the evaluation model's nuisances held fixed; ratios use "
        "this SE."
    )


def _rate_section(cfg: RunConfig, est: Estimates, correction: Correction | None, log: Log):
    from eocausal.evaluate import HonestSplit, ScaleFits, rate_sequential_cv, score_scale_combinations
    from eocausal.pipeline.estimate import make_learner

    ev = cfg.evaluate
    names = list(est.priorities)
    fits = ScaleFits(HonestSplit(test_size=ev.test_size, seed=cfg.seed),
                     [tuple(n.split("+")) for n in names], est.train, est.test, est.priorities,
                     est.eval_scores)
    scale_cmp = score_scale_combinations(fits, clusters=est.clusters, sample_weight=est.weights,
                                         target=ev.target, n_bootstrap=ev.n_bootstrap)
    main_rate = scale_cmp.results[est.info["all_name"]]
    sc = scale_cmp.to_dict()
    block: dict[str, Any] = {
        "target": ev.target, "n_eval": int(len(est.test)), "n_bootstrap": ev.n_bootstrap,
        "main": main_rate.to_dict(), "table": sc["table"], "multiscale_gain": sc.get("multiscale_gain"),
    }
    if block["multiscale_gain"] is not None:
        block["multiscale_gain_note"] = (
            "The best multi-scale and best single-scale combinations are chosen on the same "
            "held-out half on which their difference is measured, so the gain is optimistic."
        )
    if correction is not None:
        block["correction_note"] = _correct_rate_block(block, est, correction, ev.target)
    block["protocol"] = ev.protocol
    block["sequential_cv"] = None
    if ev.protocol == "sequential_cv":
        log(f"sequential cross-fitted RATE over {ev.n_folds} folds of all analysed units ...")
        known = float(cfg.study.propensity) if cfg.study.propensity is not None else est.propensity
        block["sequential_cv"] = rate_sequential_cv(
            make_learner(cfg, known), est.X_all, est.T, est.Y, n_folds=ev.n_folds,
            clusters=est.clusters, sample_weight=est.weights, target=ev.target,
            n_bootstrap=ev.n_bootstrap, seed=cfg.seed,
        ).to_dict()
    return block, scale_cmp, main_rate


def _cate_section(cfg: RunConfig, est: Estimates) -> dict[str, Any]:
    """Write cate.csv and summarise the run's CATEs."""
    ids, test, train, tau_true = est.ids, est.test, est.train, est.tau_true
    tau_hat = np.empty(len(ids))
    tau_hat[test] = est.tau_test
    tau_hat[train] = est.tau_train
    split = np.where(np.isin(np.arange(len(ids)), test), "held_out", "train")
    frame = pd.DataFrame({"unit_id": ids, "split": split, "tau_hat": tau_hat})
    # intervals for the model's expected prediction at x (bias not included), not for tau(x)
    frame.loc[test, "expected_tau_hat_lower"] = est.lower_test
    frame.loc[test, "expected_tau_hat_upper"] = est.upper_test
    if tau_true is not None:
        frame["tau_true"] = tau_true
    write_csv(frame, cfg.run_dir / "cate.csv", float_format="%.10g")
    settings = est.info.get("learner")
    block: dict[str, Any] = {
        "learner": cfg.estimate.learner,
        "learner_settings": settings,
        "n_train": int(len(train)),
        "n_held_out": int(len(test)),
        "mean_tau_hat_held_out": float(np.mean(est.tau_test)),
        "sd_tau_hat_held_out": float(np.std(est.tau_test)),
        "interval_note": (
            "cate.csv columns expected_tau_hat_lower/expected_tau_hat_upper (held-out units) are "
            "95% intervals for the model's expected prediction E[tau_hat(x)] (for the causal "
            "forest: the little-bags variance of Athey, Tibshirani and Wager 2019), NOT for "
            "tau(x): the model's bias is not included; in the benchmark design (n = 2,000) they "
            "contained tau(x) in 65% of cases (docs/benchmarks.md, 'Pointwise CATE intervals')."
        ),
    }
    if settings is not None and not settings["cate_model"]["intervals"]:
        why = settings["cate_model"]["final_model_reason"]
        block["interval_note"] = (
            "cate.csv columns expected_tau_hat_lower/expected_tau_hat_upper are empty: the DR "
            f"learner's final stage is gradient boosting ({why}), which has no variance "
            "estimate; set `estimate.final_model: forest` for intervals for the forest's "
            "expected prediction (slower at large n)."
        )
    if tau_true is not None:
        T, Y = est.T, est.Y
        block["corr_with_true_tau_held_out"] = float(np.corrcoef(est.tau_test, tau_true[test])[0, 1])
        block["mse_held_out"] = float(np.mean((est.tau_test - tau_true[test]) ** 2))
        dm = np.mean(Y[T == 1]) - np.mean(Y[T == 0])
        block["mse_constant_ate_held_out"] = float(np.mean((dm - tau_true[test]) ** 2))
    return block


#: units shown per image type in the salience figure
_SALIENCE_UNITS = 3


def _chips_of(study: PreparedStudy, ids: np.ndarray, scale: str) -> np.ndarray:
    """(n, C, H, W) chips of one scale for ``ids`` (first date of a time series), in that order."""
    from eocausal.imagery import ChipDataset

    dataset = ChipDataset(study.units.subset(ids), study.source, study.spec)
    chips: dict[str, np.ndarray] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        chip = item["chips"][scale].numpy()
        chips[str(item["unit_id"])] = chip[0] if chip.ndim == 4 else chip
    return np.stack([chips[u] for u in ids]).astype(np.float32)


def _image_types_section(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, est: Estimates,
                         log: Log) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The image-type model's summary and, on chips, the salience of its most typical units."""
    from eocausal.image_types import ImageTypeModel

    it = cfg.image_types
    scale = it.scale or emb.scales[0]
    log(f"image-type heterogeneity model on the {scale} {it.input} ...")
    units = study.units.subset(est.ids)
    covariates = units.covariates if cfg.features.include_covariates else None
    inputs = _chips_of(study, est.ids, scale) if it.input == "chips" else emb.subset(est.ids).block(scale)
    model = ImageTypeModel(n_types=it.n_types, hidden=it.hidden, epochs=it.epochs,
                           random_state=cfg.seed).fit(
        inputs, est.T, est.Y,
        covariates=covariates.to_numpy(float) if covariates is not None else None,
        sample_weight=est.weights, unit_ids=est.ids,
    )
    section = {"scale": scale, "input": it.input, **model.result().to_dict()}
    if it.input != "chips":
        return section, None
    picks, maps = [], []
    for k in range(it.n_types):
        top = np.argsort(-model.type_probabilities_[:, k], kind="stable")[:_SALIENCE_UNITS]
        picks.append(top)
        maps.append(np.abs(model.salience(inputs[top], k)).sum(axis=1))
    section["salience_units"] = [[str(est.ids[i]) for i in top] for top in picks]
    figure = {"chips": [inputs[top] for top in picks], "salience": maps,
              "units": section["salience_units"], "band_names": list(study.spec.bands or [])}
    return section, figure


def evaluate_stage(cfg: RunConfig, study: PreparedStudy, emb: Embeddings, est: Estimates, *,
                   log: Log = _nolog) -> Evaluation:
    """Every estimate and test of the report, from the fitted models' predictions."""
    from eocausal.evaluate import best_linear_projection, calibration_test

    correction = None
    if est.naive_Y is not None:
        correction = correction_of(cfg, est.naive_Y, est.Y, est.info["debias"]["method"])
    log("average effects, RATE and calibration on the held-out half ...")
    ate, debias_block = _ate_section(est, correction)
    rate_block, scale_cmp, main_rate = _rate_section(cfg, est, correction, log)
    test = est.test
    cl_test, w_test = est.part(est.clusters, "test"), est.part(est.weights, "test")
    # honest calibration test: the run's CATEs (training-half model) on the held-out units,
    # with the evaluation model's out-of-fold nuisances of those units
    calib = calibration_test(est.Y[test], est.T[test], est.eval_outcome, est.eval_propensity,
                             est.tau_test, clusters=cl_test, sample_weight=w_test)
    covariates = study.units.subset(est.ids).covariates if cfg.features.include_covariates else None
    blp = None
    if covariates is not None and covariates.shape[1] > 0:
        blp = best_linear_projection(est.eval_scores, covariates.iloc[test], clusters=cl_test,
                                     sample_weight=w_test).to_dict()
    sections = {
        "ate": ate,
        "rate": rate_block,
        "cate": _cate_section(cfg, est),
        "calibration": {
            "rows": calib.to_dict()["table"],
            "n": calib.n,
            "n_clusters": calib.n_clusters,
            "note": "The run's CATEs (the model fitted on the training half, as in cate.csv and "
            "the map) tested on the held-out half, with the evaluation model's out-of-fold "
            "outcome and propensity estimates of those units (grf's test_calibration; "
            "one-sided p-values, cluster-robust HC3 SEs).",
        },
        "best_linear_projection": blp,
        "debias": debias_block,
    }
    types, salience = (_image_types_section(cfg, study, emb, est, log) if cfg.image_types.enabled
                       else (None, None))
    sections["image_types"] = types
    return Evaluation(sections, scale_cmp, main_rate, salience)
