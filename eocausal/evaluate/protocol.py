"""The honest protocol: one train/evaluation split shared by every model that is scored on it.

A RATE (or a calibration test) is valid only when the priorities come from a model
that never saw the evaluation units, and the doubly robust scores come from a model
fitted on the evaluation units alone (with cross-fitting). :class:`HonestSplit`
makes that split once, fits clones of a learner on either part, and derives the
seed of the bootstrap draws, so :func:`~eocausal.evaluate.rate_single_split`,
:func:`~eocausal.evaluate.compare_scales` and the pipeline follow one protocol and
give the same numbers for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import clone

from eocausal.errors import EstimationError, InputDataError
from eocausal.splitting import split_units

__all__ = ["HonestSplit", "clone_for", "derive_seeds", "dr_scores_of"]


def derive_seeds(seed: int | None, k: int) -> list[int]:
    """``k`` independent integer seeds from one seed (same seed, same seeds)."""
    state = np.random.SeedSequence(seed).generate_state(k)
    return [int(s) for s in state]


def clone_for(learner, index: np.ndarray, n: int):
    """An unfitted clone of ``learner`` for the rows ``index`` of an ``n``-unit sample.

    A ``propensity`` parameter holding one value per unit of the full sample
    (a known or previously estimated probability per unit) is cut down to the same rows.
    """
    model = clone(learner)
    propensity = model.get_params(deep=False).get("propensity")
    if isinstance(propensity, np.ndarray) and propensity.ndim == 1 and propensity.size == n:
        model.set_params(propensity=propensity[index])
    return model


def dr_scores_of(model, n: int) -> np.ndarray:
    """The fitted ``model``'s out-of-fold ``dr_scores_``, checked to hold ``n`` finite values."""
    scores = getattr(model, "dr_scores_", None)
    if scores is None:
        raise EstimationError(
            f"{type(model).__name__} has no `dr_scores_` after fit; the evaluation model must "
            "provide out-of-fold doubly robust scores (see eocausal.estimate)."
        )
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise EstimationError(
            f"{type(model).__name__}.dr_scores_ has shape {scores.shape}; expected ({n},)."
        )
    if not np.isfinite(scores).all():
        raise EstimationError(
            f"{type(model).__name__}.dr_scores_ has {int((~np.isfinite(scores)).sum())} non-finite "
            "values; check the propensities for values of exactly 0 or 1."
        )
    return scores


def _part(values, index: np.ndarray):
    return None if values is None else values[index]


@dataclass(frozen=True)
class HonestSplit:
    """One split of the units into a training part and an evaluation part.

    Parameters
    ----------
    test_size : float, default=0.5
        Share of units (of clusters, when given) in the evaluation part.
    seed : int, default=None
        Seeds the split and, through :attr:`bootstrap_seed`, the bootstrap draws.

    Notes
    -----
    With :math:`\\mathcal{T}` the training part and :math:`\\mathcal{E}` the
    evaluation part, priorities are :math:`S_i = \\hat\\tau_{\\mathcal{T}}(X_i)` for
    :math:`i \\in \\mathcal{E}` and the scores :math:`\\Gamma_i` are the out-of-fold
    doubly robust scores of a clone cross-fitted on :math:`\\mathcal{E}` only.
    Clusters are never split between the two parts. WARNING: SCORING A MODEL ON
    UNITS IT WAS FITTED ON (OR ON ANOTHER SPLIT) INVALIDATES THE TEST.

    Examples
    --------
    >>> import numpy as np
    >>> train, ev = HonestSplit(test_size=0.5, seed=0).split(np.array([0, 1] * 10))
    >>> len(train), len(ev)
    (10, 10)
    """

    test_size: float = 0.5
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.test_size) < 1.0:
            raise InputDataError(f"`test_size` must lie in (0, 1); got {self.test_size!r}.")

    @property
    def split_seed(self) -> int:
        """Seed of the split (the first of two derived from ``seed``)."""
        return derive_seeds(self.seed, 2)[0]

    @property
    def bootstrap_seed(self) -> int:
        """Seed of the bootstrap draws scored on the evaluation part."""
        return derive_seeds(self.seed, 2)[1]

    def split(self, T: np.ndarray, clusters: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of the training and evaluation parts, stratified on ``T``."""
        T = np.asarray(T)
        return split_units(
            T.size, test_size=self.test_size, clusters=clusters, stratify=T, seed=self.split_seed
        )

    @staticmethod
    def fit_part(learner, X_part, T, Y, index: np.ndarray, *, clusters=None, sample_weight=None):
        """A clone of ``learner`` fitted on the rows ``index``; ``X_part`` holds only those rows.

        Inputs ``T``, ``Y``, ``clusters`` and ``sample_weight`` hold every unit.
        """
        return clone_for(learner, index, len(T)).fit(
            X_part,
            T[index],
            Y[index],
            clusters=_part(clusters, index),
            sample_weight=_part(sample_weight, index),
        )
