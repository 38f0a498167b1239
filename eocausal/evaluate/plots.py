"""Plots of the evaluation results: TOC curves and RATE comparisons.

Figures are built with :class:`matplotlib.figure.Figure` directly, never
through ``pyplot``: nothing is shown, no global backend is changed, and
``fig.savefig`` renders with Agg. Every function takes ``ax=None`` (a new
figure) or an existing Axes, and returns the Figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy.stats import norm

from eocausal.errors import InputDataError
from eocausal.evaluate.rate import RATEResult
from eocausal.evaluate.scales import ScaleComparison

__all__ = ["plot_rates", "plot_scale_comparison", "plot_toc"]


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise InputDataError(f"`level` must lie strictly between 0 and 1; got {level!r}.")
    return float(norm.ppf(0.5 + level / 2.0))


def plot_toc(
    result: RATEResult | Mapping[str, RATEResult],
    *,
    ax: Axes | None = None,
    level: float = 0.95,
    title: str | None = None,
) -> Figure:
    """TOC curve(s) with pointwise confidence bands.

    Parameters
    ----------
    result : RATEResult or mapping of str -> RATEResult
        One result, or several (e.g. one per scale combination) to overlay.
    ax : matplotlib Axes, default=None
        Axes to draw on; a new figure when ``None``.
    level : float, default=0.95
        Confidence level of the band, ``estimate +/- z * std_err``.
    title : str, default=None
        Defaults to the RATE estimate and its standard error.

    Returns
    -------
    matplotlib.figure.Figure
    """
    results = {result.name: result} if isinstance(result, RATEResult) else dict(result)
    if not results:
        raise InputDataError("`result` is empty; give at least one RATEResult.")
    z = _z(level)
    fig, ax = _axes(ax, (6.0, 4.0))
    for name, res in results.items():
        q = res.toc["q"].to_numpy()
        est = res.toc["estimate"].to_numpy()
        se = res.toc["std_err"].to_numpy()
        label = f"{name}: {res.target} {res.estimate:.3g} (SE {res.std_err:.2g})"
        (line,) = ax.plot(q, est, marker="o", markersize=3, label=label)
        ax.fill_between(
            q, est - z * se, est + z * se, color=line.get_color(), alpha=0.2, linewidth=0
        )
    ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("q: share of units treated, in priority order")
    ax.set_ylabel("TOC(q): effect among the top q minus ATE")
    if title is None:
        first = next(iter(results.values()))
        title = (
            f"Targeting operator characteristic ({round(level * 100)}% band)"
            if len(results) > 1
            else f"TOC, {first.target} = {first.estimate:.3g} (SE {first.std_err:.2g}, "
            f"ratio {first.ratio:.2f})"
        )
    ax.set_title(title)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_rates(
    results: Mapping[str, RATEResult],
    *,
    ax: Axes | None = None,
    level: float = 0.95,
    groups: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Figure:
    """Point-and-interval plot of several RATE estimates.

    Parameters
    ----------
    results : mapping of str -> RATEResult
        Results to compare, drawn top to bottom in this order.
    ax : matplotlib Axes, default=None
    level : float, default=0.95
        Confidence level of the intervals.
    groups : mapping of str -> int, default=None
        Optional group (e.g. number of scales) per name, used for colours.
    title : str, default=None

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not results:
        raise InputDataError("`results` is empty; give at least one RATEResult.")
    z = _z(level)
    names = list(results)
    fig, ax = _axes(ax, (6.0, 0.8 + 0.4 * len(names)))
    y = np.arange(len(names))[::-1]
    est = np.array([results[k].estimate for k in names])
    se = np.array([results[k].std_err for k in names])
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    colors = [palette[(groups or {}).get(k, 1) % len(palette)] for k in names]
    for yi, e, s, c in zip(y, est, se, colors):
        ax.errorbar(e, yi, xerr=z * s, fmt="o", color=c, capsize=3)
    for yi, k in zip(y, names):
        ratio = results[k].ratio
        text = f"ratio {ratio:.2f}" if np.isfinite(ratio) else ""
        ax.annotate(
            text,
            (1.0, yi),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize="small",
        )
    ax.axvline(0.0, color="0.4", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, names)
    target = results[names[0]].target
    ax.set_xlabel(f"{target} with {round(level * 100)}% interval")
    ax.set_title(title if title is not None else f"RATE ({target}) by priority rule")
    return fig


def plot_scale_comparison(
    comparison: ScaleComparison,
    *,
    ax: Axes | None = None,
    level: float = 0.95,
) -> Figure:
    """RATE of every scale combination, coloured by the number of scales.

    Parameters
    ----------
    comparison : ScaleComparison
    ax : matplotlib Axes, default=None
    level : float, default=0.95

    Returns
    -------
    matplotlib.figure.Figure
        The title reports the multi-scale gain with its paired standard error.
    """
    groups = dict(zip(comparison.table["combination"], comparison.table["n_scales"].astype(int)))
    title = f"RATE ({comparison.target}) by scale combination"
    if comparison.gain is not None:
        g = comparison.gain
        title += (
            f"\nmulti-scale gain {g.difference:.3g} (SE {g.std_err:.2g}): {g.a.name} vs {g.b.name}"
        )
    return plot_rates(comparison.results, ax=ax, level=level, groups=groups, title=title)
