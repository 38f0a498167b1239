"""Config -> stages -> artifacts: the only module that knows the whole order.

Stages, each callable alone on what the previous one saved in the run folder:

1. ``prepare``: the study units (simulated for the built-in study) and the imagery source;
2. ``chips``: the chip dataset, its exclusion table and a preview image;
3. ``embed``: the Embeddings artifact (``embeddings/embeddings.parquet``);
4. ``analyse``: features, CATE on a training half, RATE and scale comparison on the
   held-out half, ATE, calibration test, effect map;
5. ``report``: ``results.json`` and ``report.html`` with its figures.

Run folder layout::

    run_dir/
      config.yaml            the validated configuration, as run
      study/                 (built-in study) scene.tif, units.csv
      chips/                 exclusions.csv, preview.png
      embeddings/            shards/, embeddings.parquet, exclusions.csv
      map/                   cate.tif, grid embeddings
      cate.csv               per-unit CATE (held-out units: out-of-sample; training: out-of-bag)
      exclusions.csv         every excluded unit with its reason
      results.json           all numbers of the report
      run_log.json           timings (kept out of results.json so reruns compare equal)
      report.html, figures/
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from eocausal.config import RunConfig
from eocausal.embeddings import Embeddings
from eocausal.errors import ConfigError, EocausalError

__all__ = ["RunResult", "run_pipeline", "prepare_study", "run_chips", "run_embed", "PreparedStudy"]

Log = Callable[[str], None]

#: period column of the built-in panel (:func:`eocausal.simulate.make_panel_study`)
PANEL_TIME_COL = "period"


def _nolog(message: str) -> None:
    return None


@dataclass
class PreparedStudy:
    """Units, their raw table, the imagery source and chip spec of a run."""

    units: Any  # StudyUnits
    table: pd.DataFrame
    source: Any
    spec: Any
    imagery_paths: list[Path]
    description: str
    exclusions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"unit_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )
    panel: pd.DataFrame | None = None
    time_col: str | None = None


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    results: dict[str, Any]
    report_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _write_json(obj: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))
    tmp.replace(path)
    return path


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _round(value: Any, digits: int = 10) -> Any:
    """Round floats so that results.json is byte-stable across platforms' last bits."""
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v, digits) for v in value]
    if isinstance(value, float | np.floating):
        return float(round(float(value), digits))
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- stages
def prepare_study(cfg: RunConfig, *, log: Log = _nolog) -> PreparedStudy:
    """Load (or simulate) the units and build the imagery source and chip spec."""
    from eocausal.imagery import ChipSpec, PrecutChipSource, RasterSource, Scale, StacSource
    from eocausal.units import StudyUnits

    s = cfg.study
    imagery_paths = list(cfg.imagery.paths)
    time_col = s.time_col
    if s.simulate is not None and s.simulate.design == "panel":
        from eocausal.simulate import make_panel_study

        log(f"simulating the built-in panel ({s.simulate.n_units} units x {s.simulate.n_periods} periods) ...")
        sim = make_panel_study(
            cfg.run_dir / "study",
            seed=cfg.seed,
            n_units=s.simulate.n_units,
            n_periods=s.simulate.n_periods,
            scene_size=s.simulate.scene_size,
        )
        units_path = sim.units_path
        imagery_paths = [sim.scene_path]
        time_col = time_col or PANEL_TIME_COL
        description = (
            "Built-in panel: a simulated Landsat-like scene and a programme placed where the "
            f"images show more settlement; {s.simulate.n_units} units observed over "
            f"{s.simulate.n_periods} periods with an imputed outcome; the true effect is known."
        )
    elif s.simulate is not None:
        from eocausal.simulate import make_demo_study

        log(f"simulating the built-in study ({s.simulate.n_units} units) ...")
        study = make_demo_study(
            cfg.run_dir / "study",
            seed=cfg.seed,
            n_units=s.simulate.n_units,
            scene_size=s.simulate.scene_size,
        )
        units_path = study.units_path
        imagery_paths = [study.scene_path]
        description = (
            "Built-in study: a simulated Landsat-like scene (6 bands, 30 m, UTM 36N) and a "
            f"randomized trial of {s.simulate.n_units} units whose effect depends on a local "
            "(1 km) and a regional (6 km) image feature; the true effects are known."
        )
    else:
        units_path = s.units
        description = f"Units from {units_path}."
    if str(units_path).lower().endswith(".csv"):
        table = pd.read_csv(units_path, dtype={s.id_col: str})
    elif str(units_path).lower().endswith((".parquet", ".geoparquet")):
        table = pd.read_parquet(units_path)
    else:
        import geopandas as gpd

        table = gpd.read_file(units_path)
    covariates = [c for c in s.covariate_cols if c not in set(s.drop_covariates)]
    missing_cols = [c for c in covariates if c not in table.columns]
    if missing_cols:
        raise ConfigError(f"config field `study.covariate_cols`: columns {missing_cols} are not in {units_path}")
    excluded = pd.DataFrame({"unit_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    if s.missing_covariates == "exclude" and covariates:
        values = table[covariates].apply(pd.to_numeric, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float)).all(axis=1)
        if bad.any():
            reasons = [
                "missing covariate " + ", ".join(c for c in covariates if not np.isfinite(float(v[c])))
                for _, v in values[bad].iterrows()
            ]
            excluded = pd.DataFrame({"unit_id": table.loc[bad, s.id_col].astype(str).to_numpy(), "reason": reasons})
            table = table.loc[~bad].reset_index(drop=True)
            log(f"{int(bad.sum())} units excluded for missing covariates (study.missing_covariates: exclude)")
    panel = None
    if cfg.estimate.design == "panel":
        table, panel = _panel_unit_rows(table, cfg, time_col, units_path)
    geo = cfg.imagery.source != "precut"
    units = StudyUnits.from_frame(
        table,
        id_col=s.id_col,
        treatment_col=s.treatment_col,
        outcome_col=(None if panel is not None
                     else s.outcome_col if cfg.debias is None else cfg.debias.predicted_col),
        covariate_cols=covariates or None,
        cluster_col=s.cluster_col,
        weight_col=s.weight_col,
        lon_col=s.lon_col if geo else None,
        lat_col=s.lat_col if geo else None,
        crs=s.crs if geo else None,
        image_key_col=s.image_key_col,
    )
    for col in (s.propensity_col, s.true_effect_col):
        if col is not None and col not in table.columns:
            raise ConfigError(f"config field `study`: column {col!r} is not in {units_path}")
    table = table.assign(**{s.id_col: table[s.id_col].astype(str)}).set_index(s.id_col)

    im = cfg.imagery
    if im.source in ("raster", "simulated"):
        source = RasterSource([str(p) for p in imagery_paths])
    elif im.source == "stac":
        source = StacSource(str(imagery_paths[0]), bands=im.bands)
    else:
        source = PrecutChipSource.from_npz(
            str(im.precut), images_key=im.precut_images_key, keys_key=im.precut_keys_key
        )
    bands, recipe = im.bands, im.recipe
    if cfg.encoder.name != "mosaiks":
        # a registered encoder knows its bands and scaling recipe; the config may not repeat them
        from eocausal.encode import get_weights_entry

        try:
            entry = get_weights_entry(cfg.encoder.name)
        except EocausalError:
            entry = None
        if entry is not None:
            bands = bands or list(entry.bands)
            if recipe == "none":
                recipe = entry.recipe
            elif recipe != entry.recipe:
                raise ConfigError(
                    f"config field `imagery.recipe`: {recipe!r} differs from the recipe the "
                    f"weights {entry.name!r} were trained with ({entry.recipe!r}); remove it or set it to {entry.recipe!r}"
                )
    spec = ChipSpec(
        [Scale(c.name, size_px=c.size_px, size_km=c.size_km, out_px=c.out_px) for c in im.scales],
        bands=bands,
        recipe=recipe,
        dates=im.dates,
        min_valid_fraction=im.min_valid_fraction,
        qa_mask=im.qa_mask,
    )
    return PreparedStudy(units, table, source, spec, imagery_paths, description, excluded, panel, time_col)


def _panel_unit_rows(table: pd.DataFrame, cfg: RunConfig, time_col: str, path: Any
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per unit of a long panel (for chips and propensities), and the checked panel.

    The unit row carries the unit's location, its time-invariant covariates and, as the
    treatment, whether the programme ever reached it.
    """
    s = cfg.study
    needed = [s.id_col, time_col, s.treatment_col, s.outcome_col]
    missing = [c for c in needed if c is None or c not in table.columns]
    if missing:
        raise ConfigError(
            f"config field `study`: the panel needs columns {needed} (id, `time_col`, "
            f"`treatment_col`, `outcome_col`); {missing} are not in {path}"
        )
    panel = table.assign(**{s.id_col: table[s.id_col].astype(str)})
    dup = panel.duplicated([s.id_col, time_col])
    if dup.any():
        rows = panel.loc[dup, [s.id_col, time_col]].head(5).to_dict(orient="records")
        raise ConfigError(
            f"config field `study.time_col`: {int(dup.sum())} rows repeat a (unit, period) pair "
            f"in {path}, e.g. {rows}; keep one row per unit and period"
        )
    coords = [c for c in (s.lon_col, s.lat_col, s.image_key_col) if c is not None and c in panel.columns]
    moving = panel.groupby(s.id_col)[coords].nunique(dropna=False).gt(1).any(axis=1) if coords else None
    if moving is not None and moving.any():
        bad = moving[moving].index[:5].tolist()
        raise ConfigError(
            f"config field `study`: the location ({coords}) changes over time for {int(moving.sum())} "
            f"units of the panel in {path} (e.g. {bad}); a panel unit has one location"
        )
    panel = panel.sort_values([s.id_col, time_col], kind="stable").reset_index(drop=True)
    ever = panel.groupby(s.id_col, sort=False)[s.treatment_col].max()
    units = panel.drop_duplicates(s.id_col).reset_index(drop=True)
    units[s.treatment_col] = units[s.id_col].map(ever).to_numpy()
    return units, panel


def run_chips(
    cfg: RunConfig, study: PreparedStudy | None = None, *, scan: bool = False, log: Log = _nolog
):
    """Build the chip dataset; write its exclusion table and a preview image.

    With ``scan=True`` every unit's chips are read once, so the table also holds the
    units excluded at read time (too little valid imagery, unreadable files); without
    it, only those excluded before reading (outside all imagery) are known yet, and the
    embedding stage records the others.
    """
    from eocausal.imagery import ChipDataset, write_chip_preview

    study = study or prepare_study(cfg, log=log)
    dataset = ChipDataset(study.units, study.source, study.spec)
    out = cfg.run_dir / "chips"
    out.mkdir(parents=True, exist_ok=True)
    if scan:
        log(f"reading the chips of {len(dataset)} units to find every exclusion ...")
        table = dataset.scan_exclusions(num_workers=cfg.encoder.num_workers)
    else:
        table = dataset.exclusions
    table = pd.concat([study.exclusions, table], ignore_index=True)
    _write_csv(table, out / "exclusions.csv")
    preview = write_chip_preview(dataset, out / "preview.png", seed=cfg.seed)
    when = "in all" if scan else "before reading"
    log(f"chips: {len(dataset)} units, {len(table)} excluded {when}; preview {preview}")
    return dataset, preview


def _build_encoder(cfg: RunConfig, dataset):
    """The configured encoder; MOSAIKS filters are whitened on a seeded sample of the chips.

    Whitening uses images only (no treatment or outcome), so fitting it on all
    units leaks nothing into the causal estimates. The ridge added to the patch
    covariance is 1% of the chips' pixel variance, so that the threshold of 1
    in the rectifier is on the whitened scale whatever the reflectance units.
    """
    import torch

    from eocausal.encode import MosaiksEncoder, build_encoder

    e = cfg.encoder
    in_chans = len(dataset.band_names)
    if e.name != "mosaiks":
        return build_encoder(e.name, weights_path=e.weights_path, cache_dir=e.cache_dir, in_chans=in_chans)
    encoder = MosaiksEncoder(in_chans, n_features=e.n_features, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(dataset))
    sample = []
    for i in order:
        item = dataset[int(i)]
        if not item["excluded"]:
            sample.append(item)
        if len(sample) == 128:
            break
    if not sample:
        raise EocausalError("no unit has a valid chip; see the exclusion table for the reasons")
    # one encoder serves every scale; whiten on the scales of the largest output size
    size = max(sc.out_px for sc in dataset.spec.scales)
    chips = torch.cat(
        [
            torch.stack([it["chips"][sc.name] for it in sample]).flatten(0, -4)
            for sc in dataset.spec.scales
            if sc.out_px == size
        ]
    )
    return encoder.fit_whitening(chips, eps=1e-2 * float(chips.var()))


def run_embed(cfg: RunConfig, dataset=None, *, out_dir: Path | None = None, encoder=None,
              log: Log = _nolog, progress: bool = True):
    """Embed the units of ``dataset`` (built from the config when omitted); resumable."""
    from eocausal.encode import embed

    if dataset is None:
        dataset, _ = run_chips(cfg, log=log)
    encoder = encoder or _build_encoder(cfg, dataset)
    e = cfg.encoder
    result = embed(
        dataset,
        encoder,
        out_dir or (cfg.run_dir / "embeddings"),
        batch_size=e.batch_size,
        num_workers=e.num_workers,
        accelerator=e.accelerator,
        devices=e.devices,
        num_nodes=e.num_nodes,
        strategy=e.strategy,
        precision=e.precision,
        temporal=e.temporal,
        resume=True,
        progress=progress,
        seed=cfg.seed,
    )
    log(
        f"embeddings: {result.embeddings.n_units} units x {len(result.embeddings.scales)} scales "
        f"-> {result.out_dir}"
    )
    return result, encoder


def _make_learner(cfg: RunConfig, propensity: Any):
    from eocausal.estimate import CausalForest, DRLearner, TLearner

    e = cfg.estimate
    if e.learner == "causal_forest":
        return CausalForest(
            n_estimators=e.n_estimators,
            min_samples_leaf=e.min_samples_leaf,
            n_folds=e.n_folds,
            propensity=propensity,
            random_state=cfg.seed,
        )
    if e.learner == "dr_learner":
        return DRLearner(n_folds=e.n_folds, propensity=propensity, random_state=cfg.seed)
    return TLearner(n_folds=e.n_folds, propensity=propensity, random_state=cfg.seed)


def run_pipeline(cfg: RunConfig, *, log: Log = _nolog, progress: bool = True) -> RunResult:
    """Run every stage of ``cfg`` and write the run folder (see the module docstring)."""
    from eocausal.estimate import (
        aipw_ate,
        estimate_propensity,
        hajek_ipw_ate,
        hajek_weights,
        overlap_diagnostics,
    )
    from eocausal.evaluate import (
        best_linear_projection,
        calibration_test,
        compare_scales,
        plot_scale_comparison,
        plot_toc,
        rate_sequential_cv,
    )
    from eocausal.features import MultiScaleFeatures
    from eocausal.report import plot_cate_distribution, plot_cate_map, save_figure

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
    )

    study = prepare_study(cfg, log=log)
    if study.units.treatment is None or (study.units.outcome is None and study.panel is None):
        raise ConfigError("config field `study`: effects need `treatment_col` and `outcome_col`")
    timings["prepare"] = time.perf_counter() - t0
    dataset, preview = run_chips(cfg, study, log=log)
    timings["chips"] = time.perf_counter() - t0 - sum(timings.values())
    emb_result, encoder = run_embed(cfg, dataset, log=log, progress=progress)
    timings["embed"] = time.perf_counter() - t0 - sum(timings.values())

    # -- analysis units: those with an embedding; the others are reported, never dropped silently
    exclusions = pd.concat([study.exclusions, emb_result.exclusions], ignore_index=True)
    exclusions["unit_id"] = exclusions["unit_id"].astype(str)
    exclusions = exclusions.drop_duplicates("unit_id").sort_values("unit_id").reset_index(drop=True)
    _write_csv(exclusions, run_dir / "exclusions.csv")
    emb_ids = set(emb_result.embeddings.unit_ids.tolist())
    ids = np.array([u for u in study.units.unit_id if u in emb_ids], dtype=str)
    units = study.units.subset(ids)
    emb = emb_result.embeddings.subset(ids)
    if study.panel is not None:
        results = _analyse_panel(cfg, study, ids, units, emb, exclusions, encoder, emb_result, log)
        timings["panel"] = time.perf_counter() - t0 - sum(timings.values())
        figures = {"chips": (Path(preview), "Sample chips at every scale.")}
        return _finish(cfg, results, figures, timings, t0, log)
    T = units.treatment.astype(int)
    Y = units.outcome.astype(float)
    clusters = units.clusters
    weights = units.weights
    covariates = units.covariates if cfg.features.include_covariates else None
    s = cfg.study
    if s.propensity is not None:
        propensity: Any = float(s.propensity)
    elif s.propensity_col is not None:
        propensity = study.table.loc[ids, s.propensity_col].to_numpy(float)
    else:
        propensity = None
    tau_true = (
        study.table.loc[ids, s.true_effect_col].to_numpy(float)
        if s.true_effect_col is not None
        else None
    )

    # -- one propensity for every estimate: known, a column, or cross-fitted from the image
    # features and covariates of all analysed units (no outcome involved)
    f, ev = cfg.features, cfg.evaluate
    builder_all = MultiScaleFeatures(
        scales=f.scales, pca_components=f.pca_components, standardize=f.standardize
    ).fit(emb, covariates)
    X_all = builder_all.transform(emb, covariates).X
    estimated_propensity = propensity is None
    if estimated_propensity:
        log("propensity of treatment from the image features and covariates (cross-fitted) ...")
        propensity = estimate_propensity(
            X_all, T, n_folds=cfg.estimate.n_folds, clusters=clusters, sample_weight=weights,
            seed=cfg.seed,
        )

    debias_result = correction = None
    if cfg.debias is not None:
        debias_result, _, Y, correction = _debias(
            cfg, study, ids, T, Y, propensity, clusters, weights,
            X_all if estimated_propensity else None, log,
        )

    # -- honest protocol (eocausal.evaluate.compare_scales): one split; per combination of
    # scales, features and CATE model fitted on the training half, priorities on the held-out
    # half; one evaluation model fitted on the held-out half gives the doubly robust scores
    # that score every combination with the same bootstrap draws. The all-scales model is the
    # run's CATE model.
    scale_emb = emb if f.scales is None else Embeddings(ids, {s: emb.block(s) for s in f.scales}, emb.metadata)
    all_name = "+".join(scale_emb.scales)
    compare = ev.compare_scales and len(scale_emb.scales) > 1
    log(
        "fitting the CATE models of every scale combination on the training half and the "
        "evaluation model on the held-out half ..."
        if compare
        else "fitting the CATE model on the training half and the evaluation model on the held-out half ..."
    )
    scale_cmp = compare_scales(
        scale_emb,
        T,
        Y,
        learner=_make_learner(cfg, propensity),
        covariates=covariates,
        combinations=ev.combinations if compare else "all",
        pca_components=f.pca_components,
        standardize=f.standardize,
        clusters=clusters,
        sample_weight=weights,
        test_size=ev.test_size,
        target=ev.target,
        n_bootstrap=ev.n_bootstrap,
        seed=cfg.seed,
    )
    train, test = scale_cmp.train_index, scale_cmp.eval_index
    main_rate = scale_cmp.results[all_name]
    builder, model = scale_cmp.fitted[all_name].features, scale_cmp.fitted[all_name].model
    eval_model = scale_cmp.evaluator
    scores = eval_model.dr_scores_
    cov_test = covariates.iloc[test] if covariates is not None else None
    X_test = builder.transform(scale_emb.subset(ids[test]), cov_test).X
    tau_test = model.effect(X_test)
    lo_test, hi_test = model.effect_interval(X_test)

    def part(a: Any, idx: np.ndarray) -> Any:
        return a[idx] if isinstance(a, np.ndarray) else a

    sequential = None
    if ev.protocol == "sequential_cv":
        log(f"sequential cross-fitted RATE over {ev.n_folds} folds of all analysed units ...")
        sequential = rate_sequential_cv(
            _make_learner(cfg, propensity), X_all, T, Y, n_folds=ev.n_folds, clusters=clusters,
            sample_weight=weights, target=ev.target, n_bootstrap=ev.n_bootstrap, seed=cfg.seed,
        )

    timings["cate_and_rate"] = time.perf_counter() - t0 - sum(timings.values())

    # -- ATE on all analysed units (cross-fitted)
    log("average treatment effect (AIPW, cross-fitted on all analysed units) ...")
    all_model = _make_learner(cfg, propensity).fit(
        X_all, T, Y, clusters=clusters, sample_weight=weights
    )
    m_all, tau_all = all_model.outcome_oof_, all_model.effect_oof_
    ate = aipw_ate(Y, T, propensity, outcome_hat=m_all, effect=tau_all, clusters=clusters,
                   sample_weight=weights)
    ate_rows = [{"method": "AIPW (cross-fitted)", **_ci_row(ate.to_dict())}]
    overlap = None
    if estimated_propensity:
        # observational design: propensities from the image features and covariates
        # (cross-fitted ridge logistic), Hajek IPW as the design-based comparator; its SE
        # accounts for the estimation of the propensity (projection on the logistic scores)
        overlap = overlap_diagnostics(propensity, T, warn=False).to_dict()
        ipw = hajek_ipw_ate(Y, T, propensity, clusters=clusters, sample_weight=weights,
                            propensity_features=X_all, warn_overlap=False)
        ate_rows.append({"method": "Hajek IPW (image propensity)", **_ci_row(ipw.to_dict())})
    ate_rows.append({"method": "difference in means", **_difference_in_means(Y, T, clusters, weights)})
    debias_block = None
    if correction is not None:
        # every ATE row on the corrected outcome carries the correction's uncertainty: the
        # correction refitted on resampled calibration pairs, the estimate recomputed with
        # the nuisances and propensities held fixed, SE = sqrt(sampling^2 + calibration^2)
        w_all = np.ones(len(T)) if weights is None else weights
        linear = [hajek_weights(T, propensity, sample_weight=weights)] if estimated_propensity else []
        linear.append(hajek_weights(T, float(np.sum(w_all * T) / np.sum(w_all)), sample_weight=weights))

        def ate_statistic(y: np.ndarray) -> np.ndarray:
            aipw = aipw_ate(y, T, propensity, outcome_hat=m_all, effect=tau_all,
                            sample_weight=weights, warn_overlap=False).estimate
            return np.array([aipw] + [float(v @ y) for v in linear])

        boot = correction.bootstrap(ate_statistic)
        ate_rows = [_add_correction_se(row, row["std_err"], cse)
                    for row, cse in zip(ate_rows, boot.std_err)]
        side = debias_result["side_by_side"]
        rows = [
            {"outcome": "naive (predicted), IPW", "estimate": side["naive"], "std_err": side["naive_se"]},
            {"outcome": f"corrected ({debias_result['method']}), IPW", **_ci_row(side),
             "sampling_se": side["sampling_se"], "calibration_se": side["calibration_se"]},
            {"outcome": f"corrected ({debias_result['method']}), AIPW", **ate_rows[0]},
        ]
        if debias_result.get("ppi") is not None:
            rows.append({"outcome": "PPI++ (fresh labels)", **_ci_row(debias_result["ppi"])})
        debias_block = {
            "method": debias_result["method"], "rows": rows, **debias_result,
            "se_note": "SEs of estimates on the corrected outcome (here and in the ATE table) are "
            "sqrt(sampling^2 + calibration^2): the sampling SE with the correction held fixed "
            "(cluster-robust, weighted) and the calibration SE from a bootstrap of the calibration "
            f"pairs ({boot.n_bootstrap} draws) that refits the correction and recomputes the "
            "estimate with nuisances and propensities held fixed. The naive row treats the "
            "prediction as the outcome.",
        }
    if tau_true is not None:
        ate_rows.append({"method": "truth (mean of tau_true)", "estimate": float(np.mean(tau_true))})
    # honest calibration test: the run's CATEs (training-half model) on the held-out units,
    # with the evaluation model's out-of-fold nuisances of those units
    calib = calibration_test(
        Y[test],
        T[test],
        eval_model.outcome_oof_,
        eval_model.propensity_oof_,
        tau_test,
        clusters=part(clusters, test),
        sample_weight=part(weights, test),
    )
    blp = None
    if cov_test is not None and cov_test.shape[1] > 0:
        blp = best_linear_projection(
            scores,
            cov_test,
            clusters=part(clusters, test),
            sample_weight=part(weights, test),
        ).to_dict()
    timings["ate"] = time.perf_counter() - t0 - sum(timings.values())

    image_types_block = None
    if cfg.image_types.enabled:
        from eocausal.image_types import ImageTypeModel

        it = cfg.image_types
        scale = it.scale or emb.scales[0]
        log(f"image-type heterogeneity model on the {scale} embeddings ...")
        types = ImageTypeModel(
            n_types=it.n_types, hidden=it.hidden, epochs=it.epochs, random_state=cfg.seed
        ).fit(
            emb.block(scale),
            T,
            Y,
            covariates=covariates.to_numpy(float) if covariates is not None else None,
            sample_weight=weights,
            unit_ids=ids,
        )
        image_types_block = {"scale": scale, **types.result().to_dict()}
        timings["image_types"] = time.perf_counter() - t0 - sum(timings.values())

    # -- per-unit CATE: held-out units out-of-sample, training units out-of-bag
    tau_hat = np.empty(len(ids))
    tau_hat[test] = tau_test
    tau_hat[train] = model.effect_oof_
    split = np.where(np.isin(np.arange(len(ids)), test), "held_out", "train")
    cate_frame = pd.DataFrame({"unit_id": ids, "split": split, "tau_hat": tau_hat})
    # intervals for the model's expected prediction at x (bias not included), not for tau(x)
    cate_frame.loc[test, "expected_tau_hat_lower"] = lo_test
    cate_frame.loc[test, "expected_tau_hat_upper"] = hi_test
    if tau_true is not None:
        cate_frame["tau_true"] = tau_true
    _write_csv(cate_frame, run_dir / "cate.csv")

    cate_block: dict[str, Any] = {
        "learner": cfg.estimate.learner,
        "n_train": int(len(train)),
        "n_held_out": int(len(test)),
        "mean_tau_hat_held_out": float(np.mean(tau_test)),
        "sd_tau_hat_held_out": float(np.std(tau_test)),
        "interval_note": (
            "cate.csv columns expected_tau_hat_lower/expected_tau_hat_upper (held-out units) are "
            "95% intervals for the model's expected prediction E[tau_hat(x)] (for the causal "
            "forest: the little-bags variance of Athey, Tibshirani and Wager 2019), NOT for "
            "tau(x): the model's bias is not included, so they cover tau(x) less often than 95% "
            "(see docs/benchmarks.md, 'Pointwise CATE intervals')."
        ),
    }
    if tau_true is not None:
        cate_block["corr_with_true_tau_held_out"] = float(np.corrcoef(tau_test, tau_true[test])[0, 1])
        cate_block["mse_held_out"] = float(np.mean((tau_test - tau_true[test]) ** 2))
        cate_block["mse_constant_ate_held_out"] = float(np.mean((np.mean(Y[T == 1]) - np.mean(Y[T == 0]) - tau_true[test]) ** 2))
    timings["cate_table"] = time.perf_counter() - t0 - sum(timings.values())

    # -- effect map over the imagery
    figures: dict[str, tuple[Path, str]] = {}
    fig_dir = run_dir / "figures"
    map_path = None
    if cfg.map.enabled and cfg.imagery.source in ("raster", "simulated"):
        log(f"effect map on a {cfg.map.grid} x {cfg.map.grid} grid ...")
        map_path = _effect_map(cfg, study, encoder, builder, model, covariates, train, log, progress)
        units_xy = np.column_stack([units.gdf.to_crs(_raster_crs(study.imagery_paths[0])).geometry.x,
                                    units.gdf.to_crs(_raster_crs(study.imagery_paths[0])).geometry.y])
        figures["cate_map"] = (
            save_figure(
                plot_cate_map(map_path, background=study.imagery_paths[0], points_xy=units_xy),
                fig_dir / "cate_map.png",
            ),
            "CATE predicted on a grid over the imagery by the model fitted on the training half "
            "(tabular covariates held at their training means); dots are the study units; blank "
            "cells had too little valid imagery.",
        )
    timings["map"] = time.perf_counter() - t0 - sum(timings.values())

    # -- figures and results
    figures["toc"] = (
        save_figure(plot_toc(main_rate), fig_dir / "toc.png"),
        f"Targeting operator characteristic of the {all_name} ranking on held-out "
        "units, with a 95% band (clustered half-sample bootstrap).",
    )
    figures["cate_hist"] = (
        save_figure(
            plot_cate_distribution(tau_test, tau_true[test] if tau_true is not None else None),
            fig_dir / "cate_hist.png",
        ),
        "Distribution of estimated CATEs on the held-out half"
        + (" against the true effects." if tau_true is not None else "."),
    )
    if compare:
        figures["scales"] = (
            save_figure(plot_scale_comparison(scale_cmp), fig_dir / "scales.png"),
            "RATE ratio (estimate / SE) of every single scale and combination, same split and "
            "bootstrap draws.",
        )
    figures["chips"] = (Path(preview), "Sample chips at every scale.")

    rate_block: dict[str, Any] = {
        "target": ev.target,
        "n_eval": int(len(test)),
        "n_bootstrap": ev.n_bootstrap,
        "main": main_rate.to_dict(),
    }
    sc = scale_cmp.to_dict()
    rate_block["table"] = sc["table"]
    rate_block["multiscale_gain"] = sc.get("multiscale_gain")
    if rate_block["multiscale_gain"] is not None:
        rate_block["multiscale_gain_note"] = (
            "The best multi-scale and best single-scale combinations are chosen on the same "
            "held-out half on which their difference is measured, so the gain is optimistic."
        )
    if correction is not None:
        rate_block["correction_note"] = _correct_rate_block(
            rate_block, scale_cmp, correction, T, weights, test, ev.target
        )
    rate_block["protocol"] = ev.protocol
    rate_block["sequential_cv"] = sequential.to_dict() if sequential is not None else None

    n_treated = int(T.sum())
    results: dict[str, Any] = {
        "run_dir": str(run_dir),
        "study": {
            "description": study.description,
            "n_units": int(study.units.n_units + len(study.exclusions)),
            "n_analysed": int(len(ids)),
            "n_excluded": int(len(exclusions)),
            "n_treated": n_treated,
            "n_control": int(len(T) - n_treated),
            "n_clusters": int(len(np.unique(clusters))) if clusters is not None else None,
        },
        "ate": {
            "rows": ate_rows,
            "aipw": ate.to_dict(),
            "note": "AIPW with cross-fitted outcome and effect models"
            + (" and estimated propensities (cross-fitted from the image features and covariates)."
               if estimated_propensity else " and the known assignment probability.")
            + (" Cluster-robust SE." if clusters is not None else ""),
            "overlap": overlap,
        },
        "rate": rate_block,
        "cate": cate_block,
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
        "image_types": image_types_block,
        "exclusions": _exclusions_block(exclusions),
        "artifacts": {
            "embeddings": str(emb_result.out_dir / "embeddings.parquet"),
            "cate": "cate.csv",
            "map": str(map_path) if map_path else None,
            "report": "report.html",
        },
        "provenance": _provenance(cfg, study, encoder),
    }
    return _finish(cfg, results, figures, timings, t0, log)


def _finish(cfg: RunConfig, results: dict[str, Any], figures: dict[str, tuple[Path, str]],
            timings: dict[str, float], t0: float, log: Log) -> RunResult:
    """Write results.json, the report and the run log."""
    from eocausal.report import render_report

    results = _round(results)
    _write_json(results, cfg.run_dir / "results.json")
    report_path = render_report(results, figures, cfg.run_dir / "report.html")
    timings["report"] = time.perf_counter() - t0 - sum(timings.values())
    timings["total"] = time.perf_counter() - t0
    _write_json({"timings_s": timings, "finished_unix": time.time()}, cfg.run_dir / "run_log.json")
    log(f"done in {timings['total']:.0f} s: {report_path}")
    return RunResult(cfg.run_dir, results, report_path, timings)


def _analyse_panel(cfg: RunConfig, study: PreparedStudy, ids: np.ndarray, units: Any, emb: Embeddings,
                   exclusions: pd.DataFrame, encoder: Any, emb_result: Any, log: Log) -> dict[str, Any]:
    """Panel design: image propensities of ever being treated, then TWFE and Hajek IPW.

    The propensity of a unit (known, a column, or cross-fitted from its image features and
    covariates) weights the two-way fixed-effects regression and the Hajek IPW of the
    unit-level change (:func:`eocausal.estimate.panel_effects`).
    """
    from eocausal.estimate import estimate_propensity, overlap_diagnostics, panel_effects
    from eocausal.features import MultiScaleFeatures

    s, f, ev = cfg.study, cfg.features, cfg.evaluate
    T = units.treatment.astype(int)
    covariates = units.covariates if f.include_covariates else None
    if s.propensity is not None:
        propensity = np.full(len(ids), float(s.propensity))
    elif s.propensity_col is not None:
        propensity = study.table.loc[ids, s.propensity_col].to_numpy(float)
    else:
        log("propensity of ever being treated from the image features and covariates (cross-fitted) ...")
        X = MultiScaleFeatures(scales=f.scales, pca_components=f.pca_components,
                               standardize=f.standardize).fit(emb, covariates).transform(emb, covariates).X
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
        "run_dir": str(cfg.run_dir),
        "study": {
            "description": study.description,
            "design": "panel",
            "n_units": int(study.units.n_units + len(study.exclusions)),
            "n_analysed": int(len(ids)),
            "n_excluded": int(len(exclusions)),
            "n_treated": n_treated,
            "n_control": int(len(T) - n_treated),
            "n_periods": int(panel[study.time_col].nunique()),
            "n_clusters": int(len(np.unique(units.clusters))) if units.clusters is not None else None,
        },
        "panel": block,
        "overlap": overlap_diagnostics(propensity, T, warn=False).to_dict(),
        "exclusions": _exclusions_block(exclusions),
        "artifacts": {
            "embeddings": str(emb_result.out_dir / "embeddings.parquet"),
            "report": "report.html",
        },
        "provenance": _provenance(cfg, study, encoder),
    }


def _exclusions_block(exclusions: pd.DataFrame) -> dict[str, Any]:
    return {
        "n": int(len(exclusions)),
        "file": "exclusions.csv",
        "by_reason": _reason_counts(exclusions["reason"]),
        "rows": exclusions.to_dict(orient="records"),
    }


# --------------------------------------------------------------------------- pieces
@dataclass
class _Correction:
    """The correction of the predicted outcome, kept to refit it in calibration bootstraps."""

    predicted: np.ndarray
    settings: dict[str, Any]
    n_bootstrap: int
    seed: int

    def bootstrap(self, statistic: Callable[[np.ndarray], Any]):
        """:func:`eocausal.debias.correction_bootstrap` of ``statistic`` with this correction."""
        from eocausal.debias import correction_bootstrap

        return correction_bootstrap(statistic, self.predicted, **self.settings,
                                    n_bootstrap=self.n_bootstrap, seed=self.seed)


def _debias(cfg: RunConfig, study: PreparedStudy, ids: np.ndarray, T: np.ndarray, Y: np.ndarray,
            propensity: Any, clusters: np.ndarray | None, weights: np.ndarray | None,
            propensity_features: np.ndarray | None, log: Log
            ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, _Correction]:
    """Correct the predicted outcome ``Y``; returns (diagnostics, naive Y, corrected Y, correction).

    The naive and corrected Hajek IPW use the run's propensity (known, a column, or the
    cross-fitted image propensity with ``propensity_features``), clusters and weights.
    """
    from eocausal.debias import TweedieCorrection, debias_outcome, debiased_ate, ppi_ate

    d = cfg.debias
    calib = pd.read_csv(d.calibration)
    needed = [d.calibration_predicted_col, d.calibration_truth_col] + ([d.residuals_col] if d.residuals_col else [])
    missing = [c for c in needed if c not in calib.columns]
    if missing:
        raise ConfigError(f"config field `debias`: columns {missing} are not in {d.calibration}")
    settings: dict[str, Any] = {
        "calibration_predicted": calib[d.calibration_predicted_col].to_numpy(float),
        "calibration_truth": calib[d.calibration_truth_col].to_numpy(float),
        "tweedie": TweedieCorrection(sigma_source=d.sigma_source, density_source=d.density_source),
        "residuals": calib[d.residuals_col].dropna().to_numpy(float) if d.residuals_col else None,
    }
    result = debias_outcome(Y, method=d.method, seed=cfg.seed, **settings)
    settings["method"] = result.method
    log(f"debias: predicted outcome corrected with {result.method}")
    side = debiased_ate(
        Y, T, propensity=propensity, clusters=clusters, sample_weight=weights,
        propensity_features=propensity_features, n_bootstrap=cfg.evaluate.n_bootstrap,
        seed=cfg.seed, **settings,
    )
    out = {"method": result.method, "diagnostics": result.to_dict(), "side_by_side": side.to_dict()}
    if d.fresh_label_col is not None:
        if d.fresh_label_col not in study.table.columns:
            raise ConfigError(f"config field `debias.fresh_label_col`: column {d.fresh_label_col!r} is not in the units file")
        fresh = pd.to_numeric(study.table.loc[ids, d.fresh_label_col], errors="coerce").to_numpy(float)
        out["ppi"] = ppi_ate(Y, T, fresh, propensity=propensity, clusters=clusters,
                             sample_weight=weights).to_dict()
    correction = _Correction(Y, settings, cfg.evaluate.n_bootstrap, cfg.seed)
    return out, Y, np.asarray(result.corrected, dtype=float), correction


def _correct_rate_block(rate_block: dict[str, Any], scale_cmp: Any, correction: _Correction,
                        T: np.ndarray, weights: np.ndarray | None, test: np.ndarray, target: str) -> str:
    """Add the correction's uncertainty to every RATE (and the multi-scale gain) of ``rate_block``.

    The RATE of a fixed ranking is recomputed on doubly robust scores of each refitted
    correction, with the evaluation model's nuisances held fixed; the calibration SD is
    combined with the half-sample bootstrap SE, and the ratios are recomputed.
    """
    from scipy.stats import norm

    from eocausal.estimate import dr_scores
    from eocausal.evaluate import rate

    ev_model = scale_cmp.evaluator
    names = list(scale_cmp.priorities)
    gain = rate_block.get("multiscale_gain")
    w_test = None if weights is None else weights[test]

    def statistic(y: np.ndarray) -> np.ndarray:
        g = dr_scores(y[test], T[test], ev_model.propensity_oof_, ev_model.outcome_oof_, ev_model.effect_oof_)
        est = {n: rate(g, scale_cmp.priorities[n], target=target, n_bootstrap=0, sample_weight=w_test).estimate
               for n in names}
        extra = [est[gain["best_multi"]] - est[gain["best_single"]]] if gain else []
        return np.array([est[n] for n in names] + extra)

    boot = correction.bootstrap(statistic)
    cse = dict(zip(names, boot.std_err))
    rows = [*rate_block["table"], rate_block["main"]] + ([gain] if gain else [])
    keys = [r["combination"] for r in rate_block["table"]] + [rate_block["main"]["name"]]
    for row, key in zip(rows, keys + ["gain"]):
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


def _add_correction_se(row: dict[str, Any], sampling_se: float, calibration_se: float) -> dict[str, Any]:
    """``row`` with SE = sqrt(sampling^2 + calibration^2) and its normal 95% interval."""
    se = float(np.hypot(sampling_se, calibration_se))
    z = 1.959963984540054
    est = float(row["estimate"])
    return {**row, "std_err": se, "ci_lower": est - z * se, "ci_upper": est + z * se,
            "sampling_se": float(sampling_se), "calibration_se": float(calibration_se)}


def _reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Exclusion counts by kind of reason (numbers and scale names stripped from the text)."""
    kinds = reasons.astype(str).str.split(";").str[0].str.replace(r"(?<![\w.])[-+]?\d[\d.]*", "#", regex=True)
    kinds = kinds.str.replace(r" at scale '[^']*'", "", regex=True).str.strip()
    return {str(k): int(v) for k, v in kinds.value_counts().sort_index().items()}


def _ci_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "estimate": d.get("estimate"),
        "std_err": d.get("std_err", d.get("std_err")),
        "ci_lower": d.get("ci_lower"),
        "ci_upper": d.get("ci_upper"),
    }


def _difference_in_means(Y: np.ndarray, T: np.ndarray, clusters: np.ndarray | None,
                         weights: np.ndarray | None) -> dict[str, Any]:
    """(Weighted) Neyman difference in means with a (cluster-robust) SE, a model-free comparator.

    With weights w: mean_w(Y | W=1) - mean_w(Y | W=0), which is AIPW with the weighted treated
    share as propensity and the weighted arm means as outcome regressions.
    """
    from eocausal.estimate import aipw_ate

    w = np.ones(len(Y)) if weights is None else weights
    p = float(np.sum(w * T) / np.sum(w))
    mu1 = np.sum(w * T * Y) / np.sum(w * T)
    mu0 = np.sum(w * (1 - T) * Y) / np.sum(w * (1 - T))
    res = aipw_ate(Y, T, p, mu0=np.full(len(Y), mu0), mu1=np.full(len(Y), mu1),
                   clusters=clusters, sample_weight=weights, warn_overlap=False)
    return _ci_row(res.to_dict())


def _raster_crs(path: Path) -> str:
    import rasterio

    with rasterio.open(path) as src:
        return src.crs.to_string()


def _effect_map(cfg, study, encoder, builder, model, covariates, train, log, progress) -> Path:
    from eocausal.imagery import ChipDataset
    from eocausal.maps import grid_over_raster, write_map
    from eocausal.units import StudyUnits

    grid = grid_over_raster(study.imagery_paths[0], cfg.map.grid)
    grid_units = StudyUnits.from_frame(
        grid.points, id_col="unit_id", lon_col="lon", lat_col="lat", crs="EPSG:4326"
    )
    dataset = ChipDataset(grid_units, study.source, study.spec)
    result, _ = run_embed(cfg, dataset, out_dir=cfg.run_dir / "map" / "embeddings",
                          encoder=encoder, log=log, progress=progress)
    emb = result.embeddings
    cov = None
    if covariates is not None:
        means = covariates.iloc[train].mean()
        cov = pd.DataFrame([means.to_numpy()] * emb.n_units, columns=covariates.columns,
                           index=pd.Index(emb.unit_ids, name=covariates.index.name))
    X = builder.transform(emb, cov).X
    values = grid.to_array(emb.unit_ids, model.effect(X))
    return write_map(values, grid, cfg.run_dir / "map" / "cate.tif")


def _provenance(cfg: RunConfig, study: PreparedStudy, encoder: Any) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("eocausal", "numpy", "pandas", "scikit-learn", "econml", "torch", "timm",
                "lightning", "rasterio"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    inputs = {}
    for p in study.imagery_paths:
        inputs[Path(p).name] = _sha256(Path(p))
    if cfg.study.units is not None:
        inputs[Path(cfg.study.units).name] = _sha256(Path(cfg.study.units))
    return {
        "seed": cfg.seed,
        "encoder": getattr(encoder, "name", type(encoder).__name__),
        "weights_sha256": getattr(encoder, "weights_sha256", None),
        "inputs_sha256": inputs,
        "versions": versions,
        "python": platform.python_version(),
    }
