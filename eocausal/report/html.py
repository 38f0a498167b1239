"""A self-contained HTML report drawn from ``results.json`` and the run's figures.

Figures are embedded as base64 PNGs so the report is one file that can be
mailed or archived; every number in it comes from the results dictionary, so
the HTML and ``results.json`` never disagree.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eocausal.atomic import write_text

__all__ = ["render_report"]

#: excluded units listed in the report (all of them stay in exclusions.csv)
_EXCLUSIONS_SHOWN = 20

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #1b1f24; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.note { color: #57606a; font-size: .9rem; } .warn { color: #9a6700; }
.figs { display: flex; flex-wrap: wrap; gap: 1rem; } .figs figure { margin: 0; }
.figs img { max-width: 520px; border: 1px solid #d0d7de; }
figcaption { font-size: .85rem; color: #57606a; max-width: 520px; }
code { background: #f6f8fa; padding: 0 .2rem; }
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(key))}</td>" for key, _ in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_EFFECT_COLUMNS = [
    ("method", "estimator"),
    ("estimate", "estimate"),
    ("std_err", "SE"),
    ("ci_lower", "95% CI low"),
    ("ci_upper", "95% CI high"),
]


def _note(text: Any) -> str:
    """A grey paragraph holding ``text``, escaped."""
    return f'<p class="note">{html.escape(str(text))}</p>'


def _overlap_note(overlap: Mapping[str, Any], what: str, *, shares: bool) -> str:
    """Range of the propensities and effective sample sizes; a warning unless overlap is ok."""
    cls = "note" if overlap.get("ok") else "warn"
    tails = (
        f"share below 0.05: {_fmt(overlap.get('share_low'))}, "
        f"above 0.95: {_fmt(overlap.get('share_high'))}; "
        if shares
        else ""
    )
    return (
        f'<p class="{cls}">{what} range from {_fmt(overlap.get("min"))} to '
        f"{_fmt(overlap.get('max'))}; {tails}effective sample size "
        f"{_fmt(overlap.get('ess_treated'), 1)} treated, {_fmt(overlap.get('ess_control'), 1)} control.</p>"
    )


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render_report(
    results: Mapping[str, Any],
    figures: Mapping[str, tuple[str | os.PathLike, str]],
    path: str | os.PathLike,
) -> Path:
    """Write the HTML report.

    Parameters
    ----------
    results : mapping
        The run's results (the content of ``results.json``).
    figures : mapping of str -> (path, caption)
        PNG files to embed, keyed by section (``"toc"``, ``"cate_hist"``, ``"cate_map"``,
        ``"scales"``, ``"chips"``); missing keys are skipped.
    path : path-like
        Output file.
    """
    path = Path(path)
    parts: list[str] = [f"<style>{_CSS}</style>"]
    study = results.get("study", {})
    parts.append("<h1>eocausal report</h1>")
    parts.append(
        f'<p class="note">{html.escape(str(study.get("description", "")))}<br>'
        f"Run folder <code>{html.escape(str(results.get('run_dir', '')))}</code>; "
        f"seed {_fmt(results.get('provenance', {}).get('seed'))}.</p>"
    )

    parts.append("<h2>Study units</h2>")
    parts.append(
        _table(
            [study],
            [
                ("n_units", "units in table"),
                ("n_analysed", "analysed"),
                ("n_excluded", "excluded"),
                ("n_treated", "treated"),
                ("n_control", "control"),
                ("n_clusters", "clusters"),
            ],
        )
    )

    ate = results.get("ate")
    if ate:
        parts.append("<h2>Average treatment effect</h2>")
        parts.append(_table(ate.get("rows", []), _EFFECT_COLUMNS))
        if ate.get("note"):
            parts.append(_note(ate["note"]))
        if ate.get("overlap"):
            parts.append(_overlap_note(ate["overlap"], "Estimated propensities", shares=True))

    panel = results.get("panel")
    if panel:
        parts.append("<h2>Panel: effect of the programme</h2>")
        parts.append(
            _table(
                panel.get("effects", []),
                [
                    *_EFFECT_COLUMNS,
                    ("n_units", "units"),
                    ("n_obs", "unit-periods"),
                    ("estimand", "estimand"),
                ],
            )
        )
        if panel.get("truth") is not None:
            parts.append(f'<p class="note">Truth (mean effect over treated unit-periods): '
                         f'{_fmt(panel.get("truth"))}.</p>')
        parts.append(
            '<p class="note">twfe: two-way (unit and period) fixed effects, unweighted. twfe_ipw: '
            "the same regression with never-treated units weighted by e/(1-e), e the image "
            "propensity of ever being treated (ATT weights). did_ipw: Hajek IPW of each unit's "
            "mean post-minus-pre change with the same propensities (Abadie 2005). SEs cluster on "
            "units (or the cluster column); they treat the propensities as known.</p>"
        )
        if results.get("overlap"):
            parts.append(
                _overlap_note(results["overlap"], "Propensities of ever being treated", shares=False)
            )

    debias = results.get("debias")
    if debias:
        parts.append("<h2>Predicted outcome: naive and corrected</h2>")
        parts.append(
            _table(
                debias.get("rows", []),
                [("outcome", "outcome"), ("estimate", "ATE"), ("std_err", "SE")],
            )
        )
        parts.append(f'<p class="note">Correction: {html.escape(str(debias.get("method")))}. '
                     f'{html.escape(str(debias.get("se_note") or ""))}</p>')

    rate = results.get("rate")
    if rate:
        parts.append("<h2>Heterogeneity: RATE on held-out units</h2>")
        parts.append(
            f'<p class="note">{html.escape(rate.get("target", "AUTOC"))} of the CATE ranking '
            "learned on the training half, scored with doubly robust scores on the held-out half "
            f"(n = {_fmt(rate.get('n_eval'))}); SE by the clustered half-sample bootstrap "
            f"({_fmt(rate.get('n_bootstrap'))} draws). Ratio = estimate / SE; above 1.96 the "
            "images reveal detectable heterogeneity (not proof that the CATEs are right).</p>"
        )
        parts.append(
            _table(
                rate.get("table", []),
                [
                    ("combination", "scales"),
                    ("n_scales", "# scales"),
                    ("estimate", "RATE"),
                    ("std_err", "SE"),
                    ("ratio", "ratio"),
                ],
            )
        )
        gain = rate.get("multiscale_gain")
        if gain:
            parts.append(
                f'<p class="note">Multi-scale gain ({html.escape(str(gain.get("best_multi")))} '
                f"vs {html.escape(str(gain.get('best_single')))}): {_fmt(gain.get('estimate'))} "
                f"(SE {_fmt(gain.get('std_err'))}). "
                f"{html.escape(str(rate.get('multiscale_gain_note') or ''))}</p>"
            )
        if rate.get("correction_note"):
            parts.append(_note(rate["correction_note"]))
        seq = rate.get("sequential_cv")
        if seq:
            parts.append("<h2>Heterogeneity: sequential cross-fitted RATE test</h2>")
            parts.append(
                f'<p class="note">grf\'s sequential cross-fitting over {_fmt(seq.get("n_folds"))} folds of '
                "all analysed units: for k = 2..K the model fitted on folds 1..k-1 ranks fold k, "
                "scored with doubly robust scores from a cross-fitted model on all units; "
                f"statistic = sum of t_k / sqrt(K-1) = {_fmt(seq.get('statistic'))}, two-sided "
                f"p = {_fmt(seq.get('p_value'))}. This is the run's headline test of heterogeneity "
                "(evaluate.protocol: sequential_cv).</p>"
            )
            parts.append(
                _table(
                    [{"fold": f.get("name"), **f} for f in seq.get("folds", [])],
                    [("fold", "evaluated fold"), ("estimate", "RATE"), ("std_err", "SE")],
                )
            )

    cate = results.get("cate")
    if cate:
        parts.append("<h2>Conditional average treatment effects</h2>")
        rows = [{"name": k, "value": v} for k, v in cate.items()
                if k != "interval_note" and not isinstance(v, dict | list)]
        parts.append(_table(rows, [("name", "quantity"), ("value", "value")]))
        if cate.get("interval_note"):
            parts.append(_note(cate["interval_note"]))

    types = results.get("image_types")
    if types:
        parts.append("<h2>Image types (causalimages-style model)</h2>")
        parts.append(
            f'<p class="note">{_fmt(types.get("n_types"))} image types learned from the '
            f"{html.escape(str(types.get('scale')))} embeddings of all analysed units; implied ATE "
            f"{_fmt(types.get('ate'))}. Descriptive: fitted on the same units it describes.</p>"
        )
        parts.append(
            _table(types.get("type_effects", []),
                   [("type", "type"), ("mean", "effect (mean)"), ("sd", "effect (sd)"), ("share", "share")])
        )

    calib = results.get("calibration")
    if calib:
        parts.append("<h2>Calibration test (held-out half)</h2>")
        if calib.get("note"):
            parts.append(_note(calib["note"]))
        parts.append(
            _table(
                calib.get("rows", []),
                [("term", "term"), ("estimate", "estimate"), ("std_err", "SE"), ("p_value", "p (one-sided)")],
            )
        )
        parts.append(
            '<p class="note">A coefficient of 1 on the mean forest prediction means the average '
            "effect is right; a significant positive coefficient on the differential prediction "
            "means the heterogeneity the model finds is real (grf's test_calibration).</p>"
        )

    blp = results.get("best_linear_projection")
    if blp:
        parts.append("<h2>Best linear projection of the CATE on the covariates (held-out half)</h2>")
        parts.append(
            _table(
                blp.get("table", []),
                [("term", "term"), ("estimate", "estimate"), ("std_err", "SE"), ("p_value", "p")],
            )
        )
        parts.append(
            '<p class="note">OLS of the doubly robust scores on the covariates with cluster-robust '
            "HC3 SEs (grf's best_linear_projection): which observed characteristics go with "
            "larger effects, beyond what the images show.</p>"
        )

    figs = [figures[k] for k in ("toc", "scales", "cate_hist", "cate_map", "salience", "chips") if k in figures]
    if figs:
        parts.append("<h2>Figures</h2><div class='figs'>")
        parts.extend(_figure(Path(p), caption) for p, caption in figs)
        parts.append("</div>")

    excl = results.get("exclusions", {})
    parts.append("<h2>Excluded units</h2>")
    if excl.get("n", 0):
        parts.append(
            f"<p class='warn'>{_fmt(excl['n'])} units were excluded; every one is listed in "
            f"<code>{html.escape(str(excl.get('file', 'exclusions.csv')))}</code>.</p>"
        )
        rows = excl.get("rows", [])
        kinds = excl.get("by_reason") or {}
        if kinds:
            parts.append(_table([{"kind": k, "n": v} for k, v in kinds.items()],
                                [("kind", "reason"), ("n", "units")]))
        parts.append(_table(rows[:_EXCLUSIONS_SHOWN], [("unit_id", "unit"), ("reason", "reason")]))
        if excl["n"] > _EXCLUSIONS_SHOWN:
            parts.append(f"<p class='note'>… and {_fmt(excl['n'] - _EXCLUSIONS_SHOWN)} more units: see "
                         f"<code>{html.escape(str(excl.get('file', 'exclusions.csv')))}</code>.</p>")
    else:
        parts.append("<p class='note'>No unit was excluded.</p>")

    prov = results.get("provenance", {})
    if prov:
        parts.append("<h2>Provenance</h2>")
        rows = [{"key": k, "value": v} for k, v in _flatten(prov).items()]
        parts.append(_table(rows, [("key", "item"), ("value", "value")]))

    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>eocausal report</title></head><body>" + "\n".join(parts) + "</body></html>"
    )
    return write_text(doc, path)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v if not isinstance(v, list) else ", ".join(map(str, v))
    return out
