"""Cross-fitted nuisance functions: m(x) = E[Y | X = x] and e(x) = P(W = 1 | X = x).

Every prediction returned here is out-of-fold: the model that predicts unit
``i`` never saw unit ``i`` (nor, with clusters, any unit of its cluster). Folds
come from :mod:`eocausal.splitting`. A known assignment probability
(an RCT) replaces the propensity model.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from eocausal.errors import EstimationError
from eocausal.estimate.backend import fold_backend
from eocausal.splitting import fold_splits, make_folds
from eocausal.validation import (
    check_clusters,
    check_features,
    check_propensity,
    check_sample_weight,
    check_treatment,
)

__all__ = [
    "crossfit_arm_outcomes",
    "crossfit_outcome",
    "default_outcome_model",
    "estimate_propensity",
    "resolve_propensity",
]


def default_outcome_model(random_state: int | None = None) -> HistGradientBoostingRegressor:
    """The fixed, fast first-stage regressor used when none is given.

    Gradient-boosted trees with shrinkage and early stopping on an internal 10%
    validation split: fast for p up to ~1,000, no model selection loop.
    """
    return HistGradientBoostingRegressor(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=15,
        random_state=random_state,
    )


def _fit(model, X, y, sample_weight):
    if sample_weight is None:
        return model.fit(X, y)
    try:
        return model.fit(X, y, sample_weight=sample_weight)
    except TypeError:
        raise EstimationError(
            f"The model {type(model).__name__} does not accept `sample_weight`; "
            "use a model that does, or drop the weights."
        ) from None


def _fit_predict(model, X, Y, sample_weight, rows, test) -> np.ndarray:
    """Fit a clone of ``model`` on ``rows`` and predict the ``test`` rows."""
    w = None if sample_weight is None else sample_weight[rows]
    return _fit(clone(model), X[rows], Y[rows], w).predict(X[test])


def _single_threaded(fn):
    """Run ``fn`` with OpenMP/BLAS pools limited to one thread (parallelism is across folds)."""

    def run(*args):
        with threadpool_limits(limits=1):
            return fn(*args)

    return run


def _map_folds(fn, tasks, n_jobs: int | None):
    """``[fn(*task) for task in tasks]``, folds in parallel, each single-threaded inside.

    Folds run in threads of this process, or as tasks on the cluster's workers
    inside :func:`eocausal.estimate.backend.parallel_backend` with ``"dask"``.
    Nested thread pools (OpenMP inside gradient boosting, BLAS) oversubscribe
    small or busy machines badly; one thread per fold avoids that, and keeps the
    results identical on both backends.
    """
    return Parallel(n_jobs=n_jobs, backend=fold_backend())(
        delayed(_single_threaded(fn))(*task) for task in tasks
    )


def crossfit_outcome(
    X: np.ndarray,
    Y: np.ndarray,
    folds: np.ndarray,
    *,
    model=None,
    sample_weight: np.ndarray | None = None,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Out-of-fold predictions of E[Y | X].

    Parameters
    ----------
    X : ndarray of shape (n, p)
    Y : ndarray of shape (n,)
    folds : ndarray of shape (n,)
        Fold ids from :func:`~eocausal.splitting.make_folds`.
    model : scikit-learn regressor, default=None
        Cloned per fold; ``None`` uses :func:`default_outcome_model`.
    sample_weight : ndarray of shape (n,), default=None
    random_state : int, default=None
        Seed of the default model.
    n_jobs : int, default=None
        Folds fitted in parallel (``-1``: all cores, or all Dask workers inside
        :func:`~eocausal.estimate.backend.parallel_backend`).

    Returns
    -------
    m_hat : ndarray of shape (n,)
    """
    model = default_outcome_model(random_state) if model is None else model

    splits = fold_splits(folds)
    tasks = [(model, X, Y, sample_weight, train, test) for train, test in splits]
    out = np.empty(len(Y), dtype=np.float64)
    for (_, test), pred in zip(splits, _map_folds(_fit_predict, tasks, n_jobs)):
        out[test] = pred
    return out


def crossfit_arm_outcomes(
    X: np.ndarray,
    T: np.ndarray,
    Y: np.ndarray,
    folds: np.ndarray,
    *,
    model=None,
    sample_weight: np.ndarray | None = None,
    random_state: int | None = None,
    n_jobs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of mu_0(x) = E[Y | X, W=0] and mu_1(x) = E[Y | X, W=1].

    Returns
    -------
    mu0, mu1 : ndarray of shape (n,)
    """
    model = default_outcome_model(random_state) if model is None else model
    tasks = []
    for train, test in fold_splits(folds):
        for arm in (0, 1):
            rows = train[T[train] == arm]
            if rows.size < 2:
                raise EstimationError(
                    f"A training fold holds {rows.size} unit(s) of arm {arm}; "
                    "lower `n_folds` or check the treatment."
                )
            tasks.append((arm, (model, X, Y, sample_weight, rows, test)))

    mu = np.empty((2, len(Y)), dtype=np.float64)
    preds = _map_folds(_fit_predict, [task for _, task in tasks], n_jobs)
    for (arm, task), pred in zip(tasks, preds):
        mu[arm, task[-1]] = pred
    return mu[0], mu[1]


def _propensity_model(Cs, inner_splits, random_state):
    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=Cs,
            cv=inner_splits,
            l1_ratios=(0.0,),
            scoring="neg_log_loss",
            max_iter=2000,
            use_legacy_attributes=False,
            random_state=random_state,
        ),
    )


def estimate_propensity(
    X,
    T,
    *,
    Cs: int | list[float] = 8,
    n_folds: int = 5,
    inner_folds: int = 3,
    clusters=None,
    sample_weight=None,
    seed: int | None = None,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Out-of-fold propensities from a cross-validated ridge logistic regression.

    For each outer fold, a standardized L2-penalised logistic regression is
    fitted on the other folds, with its penalty chosen by an inner
    cross-validation on those folds only (log-loss), and predicts the held-out
    fold. Clusters stay within one fold at both levels.

    Parameters
    ----------
    X : array-like of shape (n, p)
        Image embeddings and/or covariates.
    T : array-like of shape (n,)
        Binary treatment.
    Cs : int or list of float, default=8
        Inverse penalty strengths (or how many on a log grid 1e-4 .. 1e4).
    n_folds : int, default=5
        Outer folds (out-of-fold predictions).
    inner_folds : int, default=3
        Folds of the inner penalty search.
    clusters : array-like of shape (n,), default=None
    sample_weight : array-like of shape (n,), default=None
    seed : int, default=None
    n_jobs : int, default=None
        Outer folds fitted in parallel (threads, or Dask workers inside
        :func:`~eocausal.estimate.backend.parallel_backend`).

    Returns
    -------
    e_hat : ndarray of shape (n,)
        Out-of-fold estimates of P(W = 1 | X).
    """
    T = check_treatment(T)
    n = len(T)
    X = check_features(X, n=n)
    clusters = check_clusters(clusters, n=n)
    sample_weight = check_sample_weight(sample_weight, n=n)
    folds = make_folds(n, n_folds, clusters=clusters, stratify=T, seed=seed)
    splits = fold_splits(folds)
    for k, (train, _) in enumerate(splits):
        if len(np.unique(T[train])) < 2:
            raise EstimationError(
                f"Fold {k} leaves only one arm for training the propensity model; lower `n_folds`."
            )

    def one(k, train, test):
        inner = make_folds(
            len(train),
            inner_folds,
            clusters=None if clusters is None else clusters[train],
            stratify=T[train],
            seed=None if seed is None else seed + 1 + k,
        )
        model = _propensity_model(Cs, fold_splits(inner), seed)
        if sample_weight is None:
            model.fit(X[train], T[train])
        else:
            model.fit(X[train], T[train], logisticregressioncv__sample_weight=sample_weight[train])
        return model.predict_proba(X[test])[:, 1]

    tasks = [(k, train, test) for k, (train, test) in enumerate(splits)]
    out = np.empty(n, dtype=np.float64)
    for (_, _, test), pred in zip(tasks, _map_folds(one, tasks, n_jobs)):
        out[test] = pred
    return out


def resolve_propensity(
    propensity,
    X: np.ndarray,
    T: np.ndarray,
    *,
    n_folds: int,
    clusters: np.ndarray | None,
    sample_weight: np.ndarray | None,
    seed: int | None,
    Cs: int | list[float] = 8,
    n_jobs: int | None = None,
) -> np.ndarray:
    """Known propensities (float or per unit) when given, else :func:`estimate_propensity`."""
    if propensity is None:
        return estimate_propensity(
            X,
            T,
            Cs=Cs,
            n_folds=n_folds,
            clusters=clusters,
            sample_weight=sample_weight,
            seed=seed,
            n_jobs=n_jobs,
        )
    return check_propensity(propensity, n=len(T))
