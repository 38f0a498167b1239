"""Honest RATE protocols: a single train/evaluation split and sequential cross-fitting.

A RATE is a valid test of heterogeneity only when the priorities come from a
model that never saw the evaluation units. Two protocols ensure that:

* :func:`rate_single_split` fits the prioritisation model on one part of the
  units and evaluates it on the other, with doubly robust scores from a second
  model fitted (with cross-fitting) on the evaluation part only;
* :func:`rate_sequential_cv` follows grf's ``rate_cv`` vignette: folds
  ``1 .. k-1`` train, fold ``k`` evaluates, for ``k = 2 .. K``, and the
  ``K - 1`` t-statistics are combined as :math:`\\sum_k t_k / \\sqrt{K - 1}`.
  Summing t-statistics of ordinary (non-sequential) cross-fitting is invalid:
  the folds overlap and the test over-rejects.

Splits and folds come from :mod:`eocausal.splitting`, so clusters are
never split between training and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import norm

from eocausal.errors import EstimationError
from eocausal.evaluate.protocol import HonestSplit, derive_seeds, dr_scores_of
from eocausal.evaluate.rate import MIN_CLUSTERS, RATEResult, rate, validate_target
from eocausal.splitting import make_folds
from eocausal.validation import check_treatment_outcome

__all__ = [
    "SequentialCVRATE",
    "SingleSplitRATE",
    "rate_sequential_cv",
    "rate_single_split",
]


def _part(values, index: np.ndarray):
    return None if values is None else values[index]


def _check_enough_clusters(clusters: np.ndarray | None, parts: list[np.ndarray], where: str) -> None:
    """Fail before any model is fitted when an evaluated part has too few clusters for RATE."""
    for index in parts:
        got = index.size if clusters is None else np.unique(clusters[index]).size
        if got < MIN_CLUSTERS:
            what = "units" if clusters is None else "clusters"
            raise EstimationError(
                f"RATE's half-sample bootstrap needs at least {MIN_CLUSTERS} {what} in {where} "
                f"(one part has {got}); use more units or finer clusters."
            )


def _effect(model, X) -> np.ndarray:
    return np.asarray(model.effect(X), dtype=np.float64).reshape(-1)


@dataclass
class SingleSplitRATE:
    """RATE of a model trained on one part of the units and evaluated on the other.

    Attributes
    ----------
    rate : RATEResult
        RATE on the evaluation units.
    train_index, eval_index : ndarray of int
        Rows used to fit the prioritisation model, and rows evaluated.
    priorities : ndarray of shape (n_eval,)
        Predicted effects of the training-part model on the evaluation units.
    dr_scores : ndarray of shape (n_eval,)
        Out-of-fold doubly robust scores of the evaluation units.
    """

    rate: RATEResult
    train_index: np.ndarray
    eval_index: np.ndarray
    priorities: np.ndarray = field(repr=False)
    dr_scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "protocol": "single_split",
            "n_train": int(self.train_index.size),
            "n_eval": int(self.eval_index.size),
            "rate": self.rate.to_dict(),
        }


@dataclass
class SequentialCVRATE:
    """Sequential cross-fitted RATE test (grf's ``rate_cv`` vignette).

    Attributes
    ----------
    folds : list of RATEResult
        RATE on fold ``k`` of the model trained on folds ``1 .. k-1``, k = 2 .. K.
    t_statistics : ndarray of shape (K - 1,)
        ``estimate / std_err`` per evaluated fold (0 where both are 0, e.g.
        constant priorities).
    statistic : float
        :math:`\\sum_k t_k / \\sqrt{K - 1}`, standard normal under the null.
    p_value : float
        Two-sided p-value ``2 * Phi(-|statistic|)``.
    n_folds : int
    target : str
    fold_ids : ndarray of shape (n,)
        Fold (0 .. K-1, in sequential order) of every unit.
    """

    folds: list[RATEResult]
    t_statistics: np.ndarray
    statistic: float
    p_value: float
    n_folds: int
    target: str
    fold_ids: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "protocol": "sequential_cv",
            "n_folds": int(self.n_folds),
            "target": self.target,
            "statistic": float(self.statistic),
            "p_value": float(self.p_value),
            "t_statistics": [float(t) for t in self.t_statistics],
            "folds": [f.to_dict() for f in self.folds],
        }


def rate_single_split(
    learner,
    X,
    T,
    Y,
    *,
    clusters=None,
    sample_weight=None,
    test_size: float = 0.5,
    target: str = "AUTOC",
    n_bootstrap: int = 200,
    seed: int | None = None,
) -> SingleSplitRATE:
    """Honest RATE with one train/evaluation split.

    Parameters
    ----------
    learner : estimator
        CATE learner following eocausal's contract: ``fit(X, T, Y, *,
        clusters=None, sample_weight=None)``, ``effect(X)`` and, after fit,
        out-of-fold ``dr_scores_``. Cloned, never modified.
    X : array-like of shape (n, p)
    T : array-like of shape (n,)
        Binary treatment.
    Y : array-like of shape (n,)
    clusters : array-like of shape (n,), default=None
        Kept whole on one side of the split, and resampled whole by the bootstrap.
    sample_weight : array-like of shape (n,), default=None
    test_size : float, default=0.5
        Share of units (of clusters, when given) in the evaluation part.
    target : {"AUTOC", "QINI"}, default="AUTOC"
    n_bootstrap : int, default=200
    seed : int, default=None
        Seeds the split and the bootstrap; the learner's own ``random_state``
        seeds its fits.

    Returns
    -------
    SingleSplitRATE

    Notes
    -----
    Priorities :math:`\\hat\\tau_{\\mathrm{train}}(X_i)` for evaluation units
    :math:`i`; doubly robust scores :math:`\\Gamma_i` from a clone fitted on
    the evaluation units with cross-fitting (its ``dr_scores_``); then
    :func:`eocausal.evaluate.rate`.
    """
    target = validate_target(target)
    data = check_treatment_outcome(T, Y, X=X, clusters=clusters, sample_weight=sample_weight)
    protocol = HonestSplit(test_size=test_size, seed=seed)
    train, evaluate = protocol.split(data.T, data.clusters)
    _check_enough_clusters(data.clusters, [evaluate], "the evaluation part (raise `test_size`)")
    kw = {"clusters": data.clusters, "sample_weight": data.sample_weight}
    prioritiser = protocol.fit_part(learner, data.X[train], data.T, data.Y, train, **kw)
    priorities = _effect(prioritiser, data.X[evaluate])
    evaluator = protocol.fit_part(learner, data.X[evaluate], data.T, data.Y, evaluate, **kw)
    scores = dr_scores_of(evaluator, evaluate.size)
    result = rate(
        scores,
        priorities,
        target=target,
        n_bootstrap=n_bootstrap,
        clusters=_part(data.clusters, evaluate),
        sample_weight=_part(data.sample_weight, evaluate),
        seed=protocol.bootstrap_seed,
    )
    return SingleSplitRATE(result, train, evaluate, priorities, scores)


def rate_sequential_cv(
    learner,
    X,
    T,
    Y,
    *,
    n_folds: int = 5,
    clusters=None,
    sample_weight=None,
    target: str = "AUTOC",
    n_bootstrap: int = 200,
    seed: int | None = None,
) -> SequentialCVRATE:
    """Sequential cross-fitted RATE test of heterogeneity (grf's ``rate_cv``).

    Parameters
    ----------
    learner : estimator
        As in :func:`rate_single_split`.
    X, T, Y, clusters, sample_weight, target, n_bootstrap, seed
        As in :func:`rate_single_split`.
    n_folds : int, default=5
        Number of folds K >= 2 (K = 2 is a single split with K - 1 = 1 statistic).

    Returns
    -------
    SequentialCVRATE

    Notes
    -----
    Doubly robust scores come from one clone fitted with cross-fitting on all
    units (its out-of-fold ``dr_scores_``), as in the vignette. For
    :math:`k = 2, \\ldots, K` a clone is fitted on folds :math:`1, \\ldots, k-1`,
    its predictions on fold :math:`k` are the priorities, and
    :math:`t_k = \\widehat{\\mathrm{RATE}}_k / \\widehat{\\mathrm{SE}}_k`.
    The statistic :math:`\\sum_{k=2}^K t_k / \\sqrt{K-1}` is asymptotically
    standard normal under the null by a martingale central limit theorem.

    References
    ----------
    Wager (2024), "Sequential validation of treatment heterogeneity",
    arXiv:2405.05534; Luedtke and van der Laan (2016), Annals of Statistics 44(2).
    """
    target = validate_target(target)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise EstimationError(f"`n_folds` must be an integer >= 2; got {n_folds!r}.")
    data = check_treatment_outcome(T, Y, X=X, clusters=clusters, sample_weight=sample_weight)
    n = data.T.size
    fold_seed, boot_seed = derive_seeds(seed, 2)
    folds = make_folds(n, n_folds, clusters=data.clusters, stratify=data.T, seed=fold_seed)
    _check_enough_clusters(
        data.clusters, [np.flatnonzero(folds == k) for k in range(1, n_folds)], "every fold; lower `n_folds`"
    )
    kw = {"clusters": data.clusters, "sample_weight": data.sample_weight}
    everyone = np.arange(n)
    scores = dr_scores_of(HonestSplit.fit_part(learner, data.X, data.T, data.Y, everyone, **kw), n)
    results: list[RATEResult] = []
    t_stats = []
    for k in range(1, n_folds):
        train = np.flatnonzero(folds < k)
        test = np.flatnonzero(folds == k)
        model = HonestSplit.fit_part(learner, data.X[train], data.T, data.Y, train, **kw)
        res = rate(
            scores[test],
            _effect(model, data.X[test]),
            target=target,
            n_bootstrap=n_bootstrap,
            clusters=_part(data.clusters, test),
            sample_weight=_part(data.sample_weight, test),
            seed=boot_seed + k,
            name=f"fold {k + 1}",
        )
        results.append(res)
        t_stats.append(res.estimate / res.std_err if res.std_err > 0 else 0.0)
    t_arr = np.asarray(t_stats)
    statistic = float(t_arr.sum() / np.sqrt(n_folds - 1))
    p_value = float(2.0 * norm.sf(abs(statistic)))
    return SequentialCVRATE(results, t_arr, statistic, p_value, int(n_folds), target, folds)
