"""The report of many trials against one map: one table of naive and corrected effects."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eocausal.atomic import write_text
from eocausal.report.html import _CSS, _fmt, _table

__all__ = ["render_trials_report"]


def render_trials_report(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the trials report (HTML) drawn from the trials' ``results.json``."""
    rows = results.get("table", [])
    columns = [("trial", "trial"), ("n", "units"), ("n_missing", "missing"), ("naive", "naive ATE"),
               ("naive_se", "SE"), ("corrected", "corrected ATE"), ("corrected_se", "SE"),
               ("ci_lower", "95% CI low"), ("ci_upper", "95% CI high"), ("method", "correction")]
    if rows and "true_ate" in rows[0]:
        columns.append(("true_ate", "true ATE"))
    m = results.get("map", {})
    summary = results.get("summary")
    parts = [
        f"<style>{_CSS}</style>",
        "<h1>eocausal trials against one map</h1>",
        f"<p class='note'>Outcome: {html.escape(str(m.get('outcome', 'the map value at each unit')))}; "
        f"the map: {html.escape(str(m.get('value', '')))}. The correction is fitted on the "
        f"map's {_fmt(m.get('n_calibration'))} calibration pairs (labelled locations held out of every "
        "fit); each corrected SE is sqrt(sampling SE^2 + calibration SE^2), the calibration part from "
        "a bootstrap that refits the correction (drawing "
        f"{html.escape(str(m.get('calibration_resampling', 'pairs')))}). Units where the map has no valid value are listed "
        "as missing, never dropped silently.</p>",
        "<h2>Trials</h2>",
        _table(rows, columns),
    ]
    if summary:
        parts += ["<h2>Across trials (known truth)</h2>",
                  _table([{"k": k, "v": v} for k, v in summary.items()], [("k", "quantity"), ("v", "value")])]
    missing = results.get("missing") or []
    if missing:
        parts += [f"<h2>Missing units ({len(missing)})</h2>",
                  _table(missing[:20], [("trial", "trial"), ("unit_id", "unit"), ("reason", "reason")])]
    doc = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>eocausal trials</title>"
           "</head><body>" + "\n".join(parts) + "</body></html>")
    return write_text(doc, path)
