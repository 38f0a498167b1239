"""Cross-fitting on a Dask cluster gives the same numbers as on this machine.

One local cluster of two single-threaded worker processes (module fixture, ~6 s to
start); the folds must actually run there (task stream), and every estimate must
match the local (threads) backend for the same seed.
"""

import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from eocausal.errors import ConfigError, OverlapWarning
from eocausal.estimate import (
    CausalForest,
    crossfit_outcome,
    estimate_propensity,
    make_folds,
)
from eocausal.estimate.backend import (
    check_backend,
    dask_active,
    fold_backend,
    parallel_backend,
)

N, P = 300, 4


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N, P))
    T = rng.binomial(1, 1 / (1 + np.exp(-X[:, 0])))
    Y = X[:, 1] + T * (1 + X[:, 0]) + rng.normal(size=N)
    return X, T, Y


def _nuisances(X, T, Y):
    m = crossfit_outcome(X, Y, make_folds(N, 3, seed=1), random_state=2, n_jobs=-1)
    e = estimate_propensity(X, T, n_folds=3, seed=3, n_jobs=-1)
    return m, e


def _forest(X, T, Y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)
        return CausalForest(n_estimators=40, n_folds=3, random_state=4).fit(X, T, Y)


def test_folds_run_on_the_workers_and_match_local(cluster, data):
    local = _nuisances(*data)
    with parallel_backend("dask", cluster.scheduler_address) as client:
        assert dask_active() and fold_backend() is None
        with distributed.get_task_stream(client) as stream:
            remote = _nuisances(*data)
    assert not dask_active() and fold_backend() == "threading"
    # 3 outcome folds + 3 propensity folds ran as tasks on the two workers
    assert len(stream.data) >= 6
    assert {t["worker"] for t in stream.data} <= set(cluster.scheduler_info["workers"])
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a, b)  # bitwise: each fold is single-threaded on both


def test_causal_forest_same_seed_same_effects(cluster, data):
    local = _forest(*data)
    with parallel_backend("dask", cluster.scheduler_address):
        remote = _forest(*data)
    np.testing.assert_array_equal(local.outcome_oof_, remote.outcome_oof_)
    np.testing.assert_array_equal(local.propensity_oof_, remote.propensity_oof_)
    # econml adds the trees' out-of-bag predictions under a lock in thread completion
    # order, so with n_jobs=-1 it differs in the last bits even between two local fits
    np.testing.assert_allclose(local.effect_oof_, remote.effect_oof_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(local.dr_scores_, remote.dr_scores_, rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")
def test_local_scheduler_starts_and_stops_a_cluster(data):
    X, _, Y = data
    folds = make_folds(N, 2, seed=0)
    local = crossfit_outcome(X, Y, folds, random_state=0, n_jobs=-1)
    with parallel_backend("dask", "local") as client:
        assert isinstance(client, distributed.Client)
        remote = crossfit_outcome(X, Y, folds, random_state=0, n_jobs=-1)
    assert client.status == "closed"
    np.testing.assert_array_equal(local, remote)


@pytest.mark.parametrize(
    ("kind", "scheduler", "match"),
    [
        ("dask", None, "needs `scheduler`"),
        ("dask", "  ", "needs `scheduler`"),
        ("local", "tcp://10.0.0.1:8786", "only with `backend: dask`"),
        ("ray", None, "must be one of"),
    ],
)
def test_invalid_backend(kind, scheduler, match):
    with pytest.raises(ConfigError, match=match):
        check_backend(kind, scheduler)
    with pytest.raises(ConfigError, match=match), parallel_backend(kind, scheduler):
        pass


def test_unreachable_scheduler_names_the_address():
    with (
        pytest.raises(ConfigError, match="tcp://127.0.0.1:1"),
        parallel_backend("dask", "tcp://127.0.0.1:1", connect_timeout=1),
    ):
        pass


def test_config_requires_a_scheduler_with_dask():
    from pydantic import ValidationError

    from eocausal.config import EstimateConfig

    assert EstimateConfig().backend == "local"
    cfg = EstimateConfig(backend="dask", scheduler="tcp://10.0.0.1:8786")
    assert (cfg.backend, cfg.scheduler) == ("dask", "tcp://10.0.0.1:8786")
    with pytest.raises(ValidationError, match="needs `scheduler`"):
        EstimateConfig(backend="dask")
    with pytest.raises(ValidationError, match="used only with it"):
        EstimateConfig(scheduler="local")
