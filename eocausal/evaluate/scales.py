"""Which image scales reveal heterogeneity: single scales, pairs and all scales compared.

Following Zhu, Jerzak and Daoud (CLeaR 2025; METHODS.md section 4), every
combination of scales is scored by the RATE of a CATE model trained on its
concatenated embeddings. All combinations share one train/evaluation split
and one set of doubly robust scores on the evaluation units, and their RATEs
are bootstrapped on the same draws, so differences between combinations (the
multi-scale gain) come with a paired standard error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations as _choose
from typing import Any

import numpy as np
import pandas as pd

from eocausal.embeddings import Embeddings
from eocausal.errors import InputDataError
from eocausal.evaluate.protocol import HonestSplit, dr_scores_of
from eocausal.evaluate.rate import (
    RATEComparison,
    RATEResult,
    rate_difference,
    rate_shared_draws,
    validate_target,
)
from eocausal.features import MultiScaleFeatures, align_covariates
from eocausal.validation import check_treatment_outcome

__all__ = [
    "ScaleComparison",
    "ScaleFits",
    "compare_scales",
    "fit_scale_combinations",
    "scale_combinations",
    "score_scale_combinations",
]

_TOKENS = ("singles", "pairs", "all")


def scale_combinations(
    scales: Sequence[str], combinations="singles+pairs+all"
) -> list[tuple[str, ...]]:
    """The combinations of scales to compare.

    Parameters
    ----------
    scales : sequence of str
        Available scale names, in order.
    combinations : str or sequence of sequences of str, default="singles+pairs+all"
        Either tokens joined by ``"+"`` from ``singles`` (each scale alone),
        ``pairs`` (every pair) and ``all`` (all scales together), or an
        explicit list such as ``[["s64"], ["s64", "s256"]]``.

    Returns
    -------
    list of tuple of str
        Unique combinations, each in the order of ``scales``.
    """
    scales = [str(s) for s in scales]
    out: list[tuple[str, ...]] = []
    if isinstance(combinations, str):
        tokens = [t.strip().lower() for t in combinations.split("+")]
        bad = [t for t in tokens if t not in _TOKENS]
        if bad or not tokens:
            raise InputDataError(
                f"`combinations` must join {list(_TOKENS)} with '+' (e.g. 'singles+pairs+all'), "
                f"or list the combinations; got {combinations!r}."
            )
        for token in tokens:
            if token == "singles":
                out += [(s,) for s in scales]
            elif token == "pairs":
                out += list(_choose(scales, 2))
            else:
                out.append(tuple(scales))
    else:
        for combo in combinations:
            names = [combo] if isinstance(combo, str) else [str(c) for c in combo]
            unknown = [c for c in names if c not in scales]
            if unknown or not names:
                raise InputDataError(
                    f"Combination {names} names scales {unknown} that are not in the "
                    f"embeddings; available: {scales}."
                )
            out.append(tuple(s for s in scales if s in names))
    unique = list(dict.fromkeys(out))
    if not unique:
        raise InputDataError(f"`combinations` selects no scales from {scales}.")
    return unique


def _combo_name(combo: tuple[str, ...]) -> str:
    return "+".join(combo)


@dataclass
class FittedCombination:
    """The feature builder and CATE model of one combination, fitted on the training half."""

    features: MultiScaleFeatures
    model: Any


@dataclass
class ScaleComparison:
    """RATE of every scale combination on one shared split and shared bootstrap draws.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per combination: ``combination`` (scale names joined by "+"),
        ``n_scales``, ``estimate``, ``std_err``, ``ratio``, ``p_value``.
    results : dict of str -> RATEResult
        Full results (with TOC curves) by combination name.
    gain : RATEComparison or None
        Best multi-scale combination minus best single scale (by estimate),
        paired on the same draws; ``None`` when singles or multi-scale
        combinations are missing.
    target : str
    train_index, eval_index : ndarray of int
        Rows (in the order of the embeddings) of the shared split.
    fitted : dict of str -> FittedCombination
        Per combination, the feature builder and the CATE model fitted on the
        training half (e.g. to map the all-scales model's predictions).
    evaluator : estimator
        The model fitted on the evaluation half (all scales) whose ``dr_scores_``
        score every combination.
    priorities : dict of str -> ndarray of shape (n_eval,)
        Per combination, the training-half model's predicted effects on the
        evaluation units (the rankings scored).
    """

    table: pd.DataFrame
    results: dict[str, RATEResult]
    gain: RATEComparison | None
    target: str
    train_index: np.ndarray = field(repr=False)
    eval_index: np.ndarray = field(repr=False)
    fitted: dict[str, FittedCombination] = field(default_factory=dict, repr=False)
    evaluator: Any = field(default=None, repr=False)
    priorities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: the table, the multi-scale gain and the TOC curves."""
        rows = []
        for row in self.table.to_dict(orient="records"):
            rows.append(
                {
                    "combination": row["combination"],
                    "n_scales": int(row["n_scales"]),
                    **{k: _num(row[k]) for k in ("estimate", "std_err", "ratio", "p_value")},
                }
            )
        gain = None
        if self.gain is not None:
            gain = {
                "best_multi": self.gain.a.name,
                "best_single": self.gain.b.name,
                "estimate": _num(self.gain.difference),
                "std_err": _num(self.gain.std_err),
                "ratio": _num(self.gain.ratio),
                "p_value": _num(self.gain.p_value),
            }
        return {
            "target": self.target,
            "n_train": int(self.train_index.size),
            "n_eval": int(self.eval_index.size),
            "table": rows,
            "multiscale_gain": gain,
            "toc": {name: res.to_dict()["toc"] for name, res in self.results.items()},
        }


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def compare_scales(
    embeddings: Embeddings,
    T,
    Y,
    *,
    learner,
    covariates: pd.DataFrame | None = None,
    combinations="singles+pairs+all",
    pca_components=None,
    standardize: bool = True,
    clusters=None,
    sample_weight=None,
    test_size: float = 0.5,
    target: str = "AUTOC",
    n_bootstrap: int = 200,
    seed: int | None = None,
) -> ScaleComparison:
    """Compare single scales, pairs and all scales by the RATE of their CATE model.

    Parameters
    ----------
    embeddings : Embeddings
        Per-scale embeddings of the study units.
    T : array-like of shape (n_units,)
        Binary treatment, in the order of ``embeddings.unit_ids``.
    Y : array-like of shape (n_units,)
        Outcome, same order.
    learner : estimator
        CATE learner following eocausal's contract (``fit(X, T, Y, *,
        clusters, sample_weight)``, ``effect``, ``dr_scores_``); cloned.
    covariates : pandas.DataFrame, default=None
        Tabular covariates added to every combination (indexed by unit id,
        or one row per unit in the order of the embeddings).
    combinations : str or list, default="singles+pairs+all"
        See :func:`scale_combinations`.
    pca_components : int, float, dict or None, default=None
        Passed to :class:`eocausal.features.MultiScaleFeatures` (PCA per scale,
        fitted on the training units only).
    standardize : bool, default=True
        Standardise each block (fitted on the training units only).
    clusters : array-like of shape (n_units,), default=None
    sample_weight : array-like of shape (n_units,), default=None
    test_size : float, default=0.5
    target : {"AUTOC", "QINI"}, default="AUTOC"
    n_bootstrap : int, default=200
    seed : int, default=None
        Seeds the split and the bootstrap draws.

    Returns
    -------
    ScaleComparison

    Notes
    -----
    One split into training and evaluation units (clusters kept whole). For
    each combination :math:`c`, features are built on the training units only
    and a clone of the learner gives priorities :math:`\\hat\\tau_c(X_i)` on the
    evaluation units. One set of doubly robust scores :math:`\\Gamma_i` comes
    from a clone fitted with cross-fitting on the evaluation units with all
    scales, and is shared by every combination. The multi-scale gain is
    :math:`\\mathrm{RATE}_{c^*_{multi}} - \\mathrm{RATE}_{c^*_{single}}` with
    standard error :math:`\\mathrm{sd}(r_{multi} - r_{single})` over the shared
    bootstrap replicates. The two best combinations are picked on the same
    evaluation data, which makes the gain optimistic; read it as a
    description, and a ratio above 1.96 as evidence worth confirming on new
    data.

    References
    ----------
    Zhu, Jerzak and Daoud (2025), "Optimizing multi-scale representations to
    detect effect heterogeneity using Earth observation and computer vision",
    CLeaR 2025.
    """
    target = validate_target(target)
    fits = fit_scale_combinations(
        embeddings, T, Y, learner=learner, covariates=covariates, combinations=combinations,
        pca_components=pca_components, standardize=standardize, clusters=clusters,
        sample_weight=sample_weight, protocol=HonestSplit(test_size=test_size, seed=seed),
    )
    clusters = None if clusters is None else np.asarray(clusters)
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return score_scale_combinations(
        fits, clusters=clusters, sample_weight=weights, target=target, n_bootstrap=n_bootstrap
    )


@dataclass
class ScaleFits:
    """The models of every scale combination on one honest split (before scoring).

    Attributes
    ----------
    protocol : HonestSplit
    combinations : list of tuple of str
    train_index, eval_index : ndarray of int
        Rows (in the order of the embeddings) of the two parts.
    priorities : dict of str -> ndarray of shape (n_eval,)
        Per combination, the training-part model's predicted effects on the evaluation units.
    dr_scores : ndarray of shape (n_eval,)
        Out-of-fold doubly robust scores of the evaluation model (all scales).
    fitted : dict of str -> FittedCombination
        Per combination, the feature builder and CATE model fitted on the training part.
    evaluator : estimator
        The model cross-fitted on the evaluation part (all scales).
    """

    protocol: HonestSplit
    combinations: list[tuple[str, ...]]
    train_index: np.ndarray = field(repr=False)
    eval_index: np.ndarray = field(repr=False)
    priorities: dict[str, np.ndarray] = field(repr=False)
    dr_scores: np.ndarray = field(repr=False)
    fitted: dict[str, FittedCombination] = field(default_factory=dict, repr=False)
    evaluator: Any = field(default=None, repr=False)


def fit_scale_combinations(
    embeddings: Embeddings,
    T,
    Y,
    *,
    learner,
    protocol: HonestSplit,
    covariates: pd.DataFrame | None = None,
    combinations="singles+pairs+all",
    pca_components=None,
    standardize: bool = True,
    clusters=None,
    sample_weight=None,
) -> ScaleFits:
    """Fit the CATE model of every combination on the training part of ``protocol``.

    Parameters are those of :func:`compare_scales`; the split comes from ``protocol``.
    Features (PCA, standardisation) are fitted on the training units only; the
    evaluation model (all scales, its own features fitted on the evaluation units)
    gives the doubly robust scores that every combination is scored with.
    """
    if not isinstance(embeddings, Embeddings):
        raise InputDataError("`embeddings` must be an eocausal.embeddings.Embeddings artifact.")
    combos = scale_combinations(embeddings.scales, combinations)
    ids = embeddings.unit_ids
    data = check_treatment_outcome(
        T, Y, clusters=clusters, sample_weight=sample_weight, unit_ids=ids
    )
    cov = None if covariates is None else align_covariates(covariates, ids)
    train, evaluate = protocol.split(data.T, data.clusters)
    emb_train, emb_eval = embeddings.subset(ids[train]), embeddings.subset(ids[evaluate])
    cov_train = None if cov is None else cov.iloc[train]
    cov_eval = None if cov is None else cov.iloc[evaluate]
    kw = {"clusters": data.clusters, "sample_weight": data.sample_weight}

    priorities: dict[str, np.ndarray] = {}
    fitted: dict[str, FittedCombination] = {}
    for combo in combos:
        builder = MultiScaleFeatures(
            scales=list(combo), pca_components=pca_components, standardize=standardize,
            random_state=protocol.seed,
        )
        builder.fit(emb_train, cov_train)
        model = protocol.fit_part(learner, builder.transform(emb_train, cov_train).X, data.T, data.Y, train, **kw)
        effect = model.effect(builder.transform(emb_eval, cov_eval).X)
        priorities[_combo_name(combo)] = np.asarray(effect, dtype=np.float64).reshape(-1)
        fitted[_combo_name(combo)] = FittedCombination(builder, model)
    all_scales = MultiScaleFeatures(
        scales=embeddings.scales, pca_components=pca_components, standardize=standardize,
        random_state=protocol.seed,
    )
    all_scales.fit(emb_eval, cov_eval)
    evaluator = protocol.fit_part(
        learner, all_scales.transform(emb_eval, cov_eval).X, data.T, data.Y, evaluate, **kw
    )
    scores = dr_scores_of(evaluator, evaluate.size)
    return ScaleFits(protocol, combos, train, evaluate, priorities, scores, fitted, evaluator)


def score_scale_combinations(
    fits: ScaleFits,
    *,
    clusters: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    target: str = "AUTOC",
    n_bootstrap: int = 200,
) -> ScaleComparison:
    """RATE of every combination of ``fits`` on the same draws, and the multi-scale gain.

    ``clusters`` and ``sample_weight`` hold every unit (the evaluation rows are taken here);
    the draws are seeded by ``fits.protocol.bootstrap_seed``.
    """
    target = validate_target(target)
    evaluate = fits.eval_index
    results = rate_shared_draws(
        fits.dr_scores,
        fits.priorities,
        target=target,
        n_bootstrap=n_bootstrap,
        clusters=None if clusters is None else clusters[evaluate],
        sample_weight=None if sample_weight is None else sample_weight[evaluate],
        seed=fits.protocol.bootstrap_seed,
    )
    table = pd.DataFrame(
        {
            "combination": list(results),
            "n_scales": [len(c) for c in fits.combinations],
            "estimate": [r.estimate for r in results.values()],
            "std_err": [r.std_err for r in results.values()],
            "ratio": [r.ratio for r in results.values()],
            "p_value": [r.p_value for r in results.values()],
        }
    )
    singles = table[table["n_scales"] == 1]
    multis = table[table["n_scales"] > 1]
    gain = None
    if len(singles) and len(multis):
        best_single = singles.loc[singles["estimate"].idxmax(), "combination"]
        best_multi = multis.loc[multis["estimate"].idxmax(), "combination"]
        gain = rate_difference(results[best_multi], results[best_single])
    return ScaleComparison(
        table, results, gain, target, fits.train_index, evaluate, fits.fitted, fits.evaluator,
        fits.priorities,
    )
