"""Built-in study (a simulated Landsat-like scene and a trial) and other designs with known effects."""

from eocausal.simulate.cate_problem import simulate_cate_problem
from eocausal.simulate.panel import SimulatedPanel, make_panel_study, simulate_panel
from eocausal.simulate.scene import BAND_NAMES, Scene, make_scene, write_scene
from eocausal.simulate.trial import SimulatedStudy, make_demo_study, simulate_trial
from eocausal.simulate.wealth import WealthStudy, make_wealth_study

__all__ = [
    "BAND_NAMES",
    "Scene",
    "SimulatedPanel",
    "SimulatedStudy",
    "WealthStudy",
    "make_demo_study",
    "make_panel_study",
    "make_scene",
    "make_wealth_study",
    "simulate_cate_problem",
    "simulate_panel",
    "simulate_trial",
    "write_scene",
]
