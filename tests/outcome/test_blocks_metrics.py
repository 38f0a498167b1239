"""spatial_blocks and outcome_metrics: known answers, invariances, errors."""

from __future__ import annotations

import numpy as np
import pytest

from eocausal.errors import InputDataError
from eocausal.outcome import outcome_metrics, spatial_blocks


def test_blocks_are_grid_cells_anchored_at_the_origin():
    xy = np.array([[0.0, 0.0], [9_999.9, 9_999.9], [10_000.0, 0.0], [-0.1, 25_000.0]])
    assert spatial_blocks(xy, block_km=10).tolist() == ["x0_y0", "x0_y0", "x1_y0", "x-1_y2"]
    # a point's block does not depend on the other points
    assert spatial_blocks(xy[2:], block_km=10).tolist() == ["x1_y0", "x-1_y2"]
    # brute force: same block <=> same floor(x / size) and floor(y / size)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5e4, 5e4, size=(300, 2))
    b = spatial_blocks(pts, block_km=7.5)
    cell = np.floor(pts / 7500.0)
    same = b[:, None] == b[None, :]
    assert np.array_equal(same, (cell[:, None, :] == cell[None, :, :]).all(axis=2))


def test_blocks_refuse_degrees_nan_and_bad_size():
    with pytest.raises(InputDataError, match="longitude/latitude"):
        spatial_blocks([[32.5, 0.3], [33.1, 1.2]], block_km=25)
    with pytest.raises(InputDataError, match="rows 1"):
        spatial_blocks([[5e5, 1e5], [np.nan, 1e5]], block_km=25)
    with pytest.raises(InputDataError, match="block_km"):
        spatial_blocks([[5e5, 1e5]], block_km=0)
    with pytest.raises(InputDataError, match=r"shape \(n, 2\)"):
        spatial_blocks([5e5, 1e5, 3.0], block_km=5)


def test_metrics_known_answers():
    y = np.array([1.0, 2.0, 4.0, 7.0])
    # an exact linear map of the truth: slope and intercept recovered, R² from the formula
    m = outcome_metrics(y, 0.4 + 0.5 * y)
    assert m["n"] == 4
    assert m["slope"] == pytest.approx(0.5, abs=1e-12)
    assert m["intercept"] == pytest.approx(0.4, abs=1e-12)
    resid = y - (0.4 + 0.5 * y)
    assert m["r2"] == pytest.approx(1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(resid**2)))
    perfect = outcome_metrics(y, y)
    assert (perfect["r2"], perfect["rmse"], perfect["slope"]) == pytest.approx((1.0, 0.0, 1.0))
    # predicting the mean: R² 0, slope 0
    flat = outcome_metrics(y, np.full(4, y.mean()))
    assert flat["r2"] == pytest.approx(0.0, abs=1e-12) and flat["slope"] == pytest.approx(0.0)


def test_integer_weights_equal_duplicated_rows():
    rng = np.random.default_rng(1)
    y, yhat = rng.normal(size=30), rng.normal(size=30)
    w = rng.integers(1, 4, size=30)
    weighted = outcome_metrics(y, yhat, sample_weight=w)
    duplicated = outcome_metrics(np.repeat(y, w), np.repeat(yhat, w))
    for key in ("r2", "rmse", "slope", "intercept"):
        assert weighted[key] == pytest.approx(duplicated[key], rel=1e-10)


def test_metrics_errors():
    with pytest.raises(InputDataError, match="constant"):
        outcome_metrics([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(InputDataError, match="`predicted` has 2 values"):
        outcome_metrics([1.0, 2.0, 3.0], [0.0, 1.0])
    with pytest.raises(InputDataError, match="NaN"):
        outcome_metrics([1.0, 2.0, np.nan], [0.0, 1.0, 2.0])
