"""Single-threaded torch for the tiny networks, and one shared fit on simulated chips."""

from __future__ import annotations

import pytest
import torch

from eocausal.image_types import ImageTypeModel

from .dgp import FAST, simulate_chips


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run fastest single-threaded on a shared machine; restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def chip_fit():
    """ImageTypeModel fitted on 600 simulated chips (seed 0); returns (model, simulation)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    sim = simulate_chips()
    chips, T, Y, *_ = sim
    model = ImageTypeModel(random_state=0, **FAST).fit(chips, T, Y)
    torch.set_num_threads(before)
    return model, sim
