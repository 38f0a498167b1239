"""Config -> stages -> artifacts: the only package that knows the whole order.

Each stage reads what the previous one saved in the run folder and writes its own
artifact with a manifest (``stage.json``: the hash of everything that determines it), so
a rerun recomputes exactly the stages whose inputs changed:

1. units (:mod:`~eocausal.pipeline.study`): the checked units, imagery source, chip spec;
2. chips and embeddings (:mod:`~eocausal.pipeline.embed`): ``chips/`` (exclusions,
   preview) and ``embeddings/embeddings.parquet``;
3. estimate (:mod:`~eocausal.pipeline.estimate`): features, propensity, corrected outcome,
   fitted models -> ``estimate/estimates.npz``;
4. evaluate (:mod:`~eocausal.pipeline.evaluate`): ATE, RATE, scales, calibration, ``cate.csv``
   (panels: :mod:`~eocausal.pipeline.panel`);
5. effect map (:mod:`~eocausal.pipeline.effect_map`): ``map/cate.tif``;
6. report (:mod:`~eocausal.pipeline.report`): ``results.json``, ``report.html``, ``figures/``.

Run folder layout::

    run_dir/
      run_log.json     "status": "running" until the last stage, then "complete" (+ timings)
      config.yaml      the validated configuration, as run
      study/           (built-in studies) scene.tif, units.csv
      chips/ embeddings/ estimate/ map/ figures/
      exclusions.csv   every excluded unit with its reason
      cate.csv, results.json, report.html
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from eocausal.atomic import write_csv, write_text
from eocausal.config import RunConfig
from eocausal.errors import ConfigError
from eocausal.pipeline.effect_map import effect_map_stage
from eocausal.pipeline.embed import EmbeddingStage, embed_stage, run_chips, run_embed
from eocausal.pipeline.estimate import Estimates, estimate_stage, refit_run_model
from eocausal.pipeline.evaluate import evaluate_stage
from eocausal.pipeline.folder import mark_complete, mark_failed, mark_running, read_results, run_status
from eocausal.pipeline.panel import panel_stage
from eocausal.pipeline.report import report_stage
from eocausal.pipeline.study import Log, PreparedStudy, _nolog, check_split, prepare_study, single_arm_warning_once

__all__ = [
    "Estimates",
    "PreparedStudy",
    "RunResult",
    "embed_stage",
    "estimate_stage",
    "evaluate_stage",
    "prepare_study",
    "read_results",
    "refit_run_model",
    "run_chips",
    "run_embed",
    "run_pipeline",
    "run_status",
]


@dataclass
class RunResult:
    """What a run produced."""

    run_dir: Path
    results: dict[str, Any]
    report_path: Path | None
    timings: dict[str, float] = field(default_factory=dict)


def run_pipeline(cfg: RunConfig, *, log: Log = _nolog, progress: bool = True,
                 reuse_embeddings: bool = False) -> RunResult:
    """Run (or reuse) every stage of ``cfg`` in order and write the run folder.

    With ``reuse_embeddings=True`` (``eocausal evaluate``) the embeddings must already be in
    the run folder and current; nothing is re-embedded.
    """
    t0, timings = time.perf_counter(), {}

    def lap(name: str) -> None:
        timings[name] = time.perf_counter() - t0 - sum(timings.values())

    study = _start(cfg, log)
    lap("prepare")
    try:
        mark_running(cfg.run_dir)
        write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False), cfg.run_dir / "config.yaml")
        result = _stages(cfg, study, log, progress, reuse_embeddings, lap)
    except BaseException as err:
        mark_failed(cfg.run_dir, err)
        raise
    timings["total"] = time.perf_counter() - t0
    mark_complete(cfg.run_dir, timings)
    log(f"done in {timings['total']:.0f} s: {result[1]}")
    return RunResult(cfg.run_dir, result[0], result[1], timings)


def _stages(cfg: RunConfig, study: PreparedStudy, log: Log, progress: bool, reuse_embeddings: bool,
            lap) -> tuple[dict[str, Any], Path]:
    """The stages after the units, in order; returns the results and the report path."""
    stage = embed_stage(cfg, study, log=log, progress=progress, reuse_only=reuse_embeddings)
    exclusions = _analysed(cfg, study, stage)
    lap("embed")
    est = evaluation = map_path = None
    with single_arm_warning_once(study):
        if study.panel is not None:
            sections = panel_stage(cfg, study, stage.embeddings, log=log)
        else:
            est = estimate_stage(cfg, study, stage.embeddings, stage.key, log=log)
            lap("estimate")
            evaluation = evaluate_stage(cfg, study, stage.embeddings, est, log=log)
            sections = evaluation.sections
            lap("evaluate")
            map_path = effect_map_stage(cfg, study, stage, est, log=log, progress=progress)
    lap("analyse" if est is None else "map")
    results, report = report_stage(cfg, study, stage, exclusions, sections, est=est,
                                   evaluation=evaluation, map_path=map_path, log=log)
    lap("report")
    return results, report


def _start(cfg: RunConfig, log: Log) -> PreparedStudy:
    """Check the units and the design before anything is written."""
    study = prepare_study(cfg, log=log)
    if study.units.treatment is None or (study.units.outcome is None and study.panel is None):
        raise ConfigError("config field `study`: effects need `treatment_col` and `outcome_col`")
    if study.panel is None:  # the honest split must leave both halves enough units (checked again later)
        clusters = study.units.clusters
        check_split(cfg, study.units.treatment.astype(int),
                    None if clusters is None else np.asarray(clusters).astype(str))
    return study


def _analysed(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage) -> pd.DataFrame:
    """Keep the units with embeddings (in the units' order); list every other with its reason."""
    exclusions = stage.exclusions.assign(unit_id=stage.exclusions["unit_id"].astype(str))
    exclusions = exclusions.drop_duplicates("unit_id").sort_values("unit_id").reset_index(drop=True)
    write_csv(exclusions, cfg.run_dir / "exclusions.csv")
    embedded = set(stage.embeddings.unit_ids.tolist())
    ids = np.array([u for u in study.units.unit_id if u in embedded], dtype=str)
    stage.embeddings = stage.embeddings.subset(ids)
    return exclusions
