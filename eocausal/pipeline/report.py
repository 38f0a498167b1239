"""The report stage: ``results.json`` (every number, relative paths, rounded), the figures
with their captions, and ``report.html`` drawn from the same results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import write_json
from eocausal.config import RunConfig
from eocausal.imagery.exclusions import count_by_kind
from eocausal.pipeline.embed import EmbeddingStage
from eocausal.pipeline.estimate import Estimates
from eocausal.pipeline.evaluate import Evaluation
from eocausal.pipeline.folder import file_fingerprint, versions
from eocausal.pipeline.study import Log, PreparedStudy, _nolog

__all__ = ["report_stage", "round_floats"]

#: excluded units listed in results.json (every one is in exclusions.csv)
_EXCLUSION_ROWS = 100


def round_floats(value: Any, digits: int = 10) -> Any:
    """Round floats so that results.json is byte-stable across platforms' last bits."""
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    if isinstance(value, float | np.floating):
        return float(round(float(value), digits))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _provenance(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage) -> dict[str, Any]:
    paths = list(study.imagery_paths) + ([study.units_path] if cfg.study.units is not None else [])
    inputs = {Path(p).name: (file_fingerprint(p) or {}).get("sha256") for p in paths}
    meta = stage.embeddings.metadata
    return {
        "seed": cfg.seed,
        "encoder": meta.get("encoder", cfg.encoder.name),
        "weights_sha256": meta.get("weights_sha256"),
        "inputs_sha256": inputs,
        "versions": versions(),
    }


def _figures(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage, est: Estimates | None,
             evaluation: Evaluation | None, map_path: Path | None) -> dict[str, tuple[Path, str]]:
    from eocausal.evaluate import plot_scale_comparison, plot_toc
    from eocausal.report import plot_cate_distribution, plot_cate_map, plot_salience, save_figure

    figures: dict[str, tuple[Path, str]] = {}
    fig_dir = cfg.run_dir / "figures"
    if est is not None and evaluation is not None:
        all_name = est.info["all_name"]
        tau_true = est.tau_true[est.test] if est.tau_true is not None else None
        figures["toc"] = (
            save_figure(plot_toc(evaluation.main_rate), fig_dir / "toc.png"),
            f"Targeting operator characteristic of the {all_name} ranking on held-out "
            "units, with a 95% band (clustered half-sample bootstrap).",
        )
        figures["cate_hist"] = (
            save_figure(plot_cate_distribution(est.tau_test, tau_true), fig_dir / "cate_hist.png"),
            "Distribution of estimated CATEs on the held-out half"
            + (" against the true effects." if tau_true is not None else "."),
        )
        if est.info["compare"]:
            figures["scales"] = (
                save_figure(plot_scale_comparison(evaluation.scale_comparison), fig_dir / "scales.png"),
                "RATE ratio (estimate / SE) of every single scale and combination, same split and "
                "bootstrap draws.",
            )
    if map_path is not None:
        import rasterio

        with rasterio.open(map_path) as src:  # the map's grid: the raster's CRS or a UTM zone
            crs = src.crs.to_string()
        units = study.units.subset(stage.embeddings.unit_ids).gdf.to_crs(crs)
        xy = np.column_stack([units.geometry.x, units.geometry.y])
        figures["cate_map"] = (
            save_figure(plot_cate_map(map_path, background=study.imagery_paths[0], points_xy=xy),
                        fig_dir / "cate_map.png"),
            "CATE predicted on a grid over the imagery by the model fitted on the training half "
            "(tabular covariates held at their training means); dots are the study units; blank "
            "cells had too little valid imagery.",
        )
    if evaluation is not None and evaluation.salience is not None:
        sal = evaluation.salience
        figures["salience"] = (
            save_figure(plot_salience(sal["chips"], sal["salience"], sal["units"], sal["band_names"]),
                        fig_dir / "salience.png"),
            "Image types: for each type, the units the model assigns to it most confidently, their "
            "chip and the absolute salience (gradient of the type's log-probability with respect to "
            "the pixels, averaged over Monte Carlo draws, summed over bands). Descriptive: the model "
            "was fitted on the same units.",
        )
    figures["chips"] = (stage.preview, "Sample chips at every scale.")
    return figures


def report_stage(cfg: RunConfig, study: PreparedStudy, stage: EmbeddingStage, exclusions: pd.DataFrame,
                 sections: dict[str, Any], *, est: Estimates | None = None,
                 evaluation: Evaluation | None = None, map_path: Path | None = None,
                 log: Log = _nolog) -> tuple[dict[str, Any], Path]:
    """Write results.json, the figures and report.html; return the results and the report path."""
    from eocausal.report import render_report

    n_analysed = stage.embeddings.n_units
    units = study.units.subset(stage.embeddings.unit_ids)
    study_block: dict[str, Any] = {
        "description": study.description,
        "design": cfg.estimate.design,
        "n_units": int(study.units.n_units + len(study.exclusions)),
        "n_analysed": int(n_analysed),
        "n_excluded": int(len(exclusions)),
        "n_clusters": int(len(np.unique(units.clusters))) if units.clusters is not None else None,
    }
    if est is not None:
        n_treated = int(est.T.sum())
        study_block.update(n_treated=n_treated, n_control=int(len(est.T) - n_treated))
    study_block.update(sections.pop("study", {}))
    run = cfg.run_dir
    results: dict[str, Any] = {
        "study": study_block,
        **sections,
        "exclusions": {
            "n": int(len(exclusions)),
            "file": "exclusions.csv",
            "by_reason": count_by_kind(exclusions["reason"]),
            "rows": exclusions.head(_EXCLUSION_ROWS).to_dict(orient="records"),
            "rows_note": (f"the first {_EXCLUSION_ROWS} of {len(exclusions)}; all are in exclusions.csv"
                          if len(exclusions) > _EXCLUSION_ROWS else None),
        },
        "artifacts": {
            "embeddings": str((stage.out_dir / "embeddings.parquet").relative_to(run)),
            "estimates": "estimate/estimates.npz" if est is not None else None,
            "cate": "cate.csv" if est is not None else None,
            "map": str(map_path.relative_to(run)) if map_path else None,
            "report": "report.html",
        },
        "provenance": _provenance(cfg, study, stage),
    }
    results = round_floats(results)
    write_json(results, run / "results.json")
    figures = _figures(cfg, study, stage, est, evaluation, map_path)
    report = render_report({**results, "run_dir": str(run)}, figures, run / "report.html")
    log(f"report: {report}")
    return results, report
