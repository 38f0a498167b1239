"""Reports: a self-contained HTML page and the figures of a run."""

from eocausal.report.figures import plot_cate_distribution, plot_cate_map, plot_salience, save_figure
from eocausal.report.html import render_report
from eocausal.report.trials import render_trials_report

__all__ = ["plot_cate_distribution", "plot_cate_map", "plot_salience", "render_report", "render_trials_report",
           "save_figure"]
