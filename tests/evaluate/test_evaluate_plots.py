"""Plots draw what the results hold, on a given Axes or a new Figure, and save with Agg."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_learners import LinearTLearner
from matplotlib.figure import Figure

from eocausal.embeddings import Embeddings
from eocausal.errors import InputDataError
from eocausal.evaluate import compare_scales, plot_rates, plot_scale_comparison, plot_toc, rate


@pytest.fixture
def result():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    return rate(np.maximum(x, 0) + rng.normal(size=500), x, n_bootstrap=50, seed=0)


def test_plot_toc_draws_curve_and_band(result, tmp_path):
    fig = plot_toc(result)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), result.toc["q"])
    np.testing.assert_allclose(line.get_ydata(), result.toc["estimate"])
    band = ax.collections[0].get_paths()[0].vertices
    upper = result.toc["estimate"] + 1.959963984540054 * result.toc["std_err"]
    assert np.isclose(band[:, 1].max(), upper.max())
    fig.savefig(tmp_path / "toc.png")
    assert (tmp_path / "toc.png").stat().st_size > 1000


def test_plot_on_given_axes_and_overlay(result):
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_toc({"a": result, "b": result}, ax=ax)
    assert out is fig and len(ax.get_lines()) == 2 + 1  # two curves and the zero line
    with pytest.raises(InputDataError, match="level"):
        plot_toc(result, level=1.5)
    with pytest.raises(InputDataError, match="empty"):
        plot_rates({})


def test_plot_rates_and_scale_comparison(result, tmp_path):
    fig = plot_rates({"one": result, "two": result})
    ax = fig.axes[0]
    where = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks()))
    assert where["one"] > where["two"]  # first result drawn on top
    assert ax.lines[0].get_xdata()[0] == result.estimate
    rng = np.random.default_rng(1)
    n = 300
    blocks = {s: rng.normal(size=(n, 3)) for s in ("s1", "s2")}
    T = rng.binomial(1, 0.5, n)
    Y = T * (1 + blocks["s1"][:, 0]) + rng.normal(size=n)
    emb = Embeddings([f"u{i}" for i in range(n)], blocks)
    cmp = compare_scales(emb, T, Y, learner=LinearTLearner(), n_bootstrap=20, seed=0)
    fig = plot_scale_comparison(cmp)
    assert "multi-scale gain" in fig.axes[0].get_title()
    assert len(fig.axes[0].get_yticklabels()) == len(cmp.table)
    fig.savefig(tmp_path / "scales.png")
