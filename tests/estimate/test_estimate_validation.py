"""Input checks: messages name the offending rows/units and suggest a fix."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from eocausal.errors import InputDataError, OverlapWarning
from eocausal.estimate import check_treatment_outcome


def _ok(n=10):
    return np.array([0, 1] * (n // 2)), np.linspace(0, 1, n)


def test_clean_inputs_are_returned_typed():
    T, Y = _ok()
    out = check_treatment_outcome(T.astype(bool), Y.astype(np.float32), X=np.ones((10, 2)))
    assert out.T.dtype == np.int64 and out.Y.dtype == np.float64 and out.X.shape == (10, 2)
    assert out.clusters is None and out.sample_weight is None


def test_non_binary_treatment_names_rows():
    T, Y = _ok()
    T = T.astype(float)
    T[[2, 5]] = [2.0, 0.5]
    with pytest.raises(InputDataError, match=r"binary.*\[0.5, 2.0\].*rows 2, 5"):
        check_treatment_outcome(T, Y)


def test_nan_outcome_names_unit_ids():
    T, Y = _ok()
    Y[3] = np.nan
    Y[8] = np.inf
    ids = [f"u{i}" for i in range(10)]
    with pytest.raises(InputDataError, match="units 'u3', 'u8'"):
        check_treatment_outcome(T, Y, unit_ids=ids)


def test_nan_features_name_rows_and_columns():
    import pandas as pd

    T, Y = _ok()
    X = pd.DataFrame({"a": np.ones(10), "b": np.ones(10)})
    X.loc[6, "b"] = np.nan
    with pytest.raises(InputDataError, match=r"rows 6 \(columns \['b'\]\)"):
        check_treatment_outcome(T, Y, X=X)


def test_length_mismatch():
    T, Y = _ok()
    with pytest.raises(InputDataError, match="`Y` has 9 values but there are 10 units"):
        check_treatment_outcome(T, Y[:9])
    with pytest.raises(InputDataError, match="`X` has 8 rows"):
        check_treatment_outcome(T, Y, X=np.ones((8, 2)))
    with pytest.raises(InputDataError, match="`clusters` has 3 values"):
        check_treatment_outcome(T, Y, clusters=[1, 2, 3])


def test_too_few_per_arm():
    T = np.array([1] + [0] * 9)
    with pytest.raises(InputDataError, match="1 treated and 9 control"):
        check_treatment_outcome(T, np.zeros(10), min_per_arm=2)


def test_single_arm_clusters_warn_with_ids_but_not_in_cluster_rct():
    T = np.array([0, 1, 0, 1, 1, 1, 0, 0])
    clusters = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    with pytest.warns(OverlapWarning, match=r"2 of 4 clusters.*\['c', 'd'\]"):
        check_treatment_outcome(T, np.zeros(8), clusters=clusters)
    with pytest.raises(InputDataError, match="one arm only"):
        check_treatment_outcome(T, np.zeros(8), clusters=clusters, single_arm_clusters="raise")
    cluster_rct = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_treatment_outcome(cluster_rct, np.zeros(8), clusters=clusters)


def test_weights_must_be_positive():
    T, Y = _ok()
    w = np.ones(10)
    w[4] = 0
    with pytest.raises(InputDataError, match="positive.*rows 4"):
        check_treatment_outcome(T, Y, sample_weight=w)
