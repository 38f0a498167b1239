import numpy as np
import pytest

from .dgp import posterior_mean, rct


@pytest.fixture(scope="module")
def linear_shrink():
    """Predictions Yhat = 0.3 + 0.62 Y + N(0, 0.5^2) in study and calibration sets."""
    rng = np.random.default_rng(11)
    w, y = rct(rng, 3000)
    _, yc = rct(rng, 800)
    yh = 0.3 + 0.62 * y + rng.normal(0, 0.5, y.size)
    yhc = 0.3 + 0.62 * yc + rng.normal(0, 0.5, yc.size)
    return w, y, yh, yc, yhc


@pytest.fixture(scope="module")
def bimodal_posterior():
    """Predictions are exact posterior means E[Y | Y + noise] under a bimodal population: nonlinear shrink."""
    rng = np.random.default_rng(5)
    _, prior = rct(rng, 6000, kind="bimodal")
    w, y = rct(rng, 3000, kind="bimodal")
    _, yc = rct(rng, 800, kind="bimodal")
    yh = posterior_mean(y + rng.standard_normal(y.size), prior, 1.0)
    yhc = posterior_mean(yc + rng.standard_normal(yc.size), prior, 1.0)
    return w, y, yh, yc, yhc
