"""CATE learners: causal forest, DR learner and T-learner on econml's honest forests.

All three share one contract (scikit-learn style):

- ``fit(X, T, Y, *, clusters=None, sample_weight=None) -> self``;
- ``effect(X)`` -> τ̂(x) of shape (n,); ``effect_interval(X, alpha)`` -> (lower, upper),
  pointwise intervals for the learner's expected prediction E[τ̂(x)] from the
  little-bags variance (``trees_per_bag`` trees per half-sample), WITHOUT the
  learner's bias, so they are not confidence intervals for τ(x) (NaN for the DR
  learner's gradient-boosting final stage, which has no such variance);
- ``ate(target="all", alpha=0.05)`` -> :class:`~eocausal.estimate.ate.ATEResult` (AIPW on
  the training units, cluster-robust);
- after ``fit``, out-of-fold arrays for every training unit: ``effect_oof_`` (τ̂),
  ``outcome_oof_`` (m̂ = E[Y|X]), ``propensity_oof_`` (ê) and ``dr_scores_`` (Γ),
  none of which used unit i's own outcome in the model that predicts it.

Nuisances are cross-fitted on folds from :mod:`eocausal.splitting`
(clusters kept in one fold, stratified by treatment); ``propensity`` may be a
known float or per-unit array (RCTs), which replaces the propensity model.

Large n: ``max_samples="auto"`` and ``DRLearner(final_model="auto")`` resolve from the
number of training units at ``fit`` (:mod:`eocausal.estimate.forest_settings`).

References
----------
Wager & Athey (2018); Athey, Tibshirani, Wager (2019), "Generalized random
forests"; Kennedy (2023), "Towards optimal doubly robust estimation of
heterogeneous causal effects"; Künzel et al. (2019), meta-learners; econml
``CausalForestDML`` and ``econml.grf``.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from econml.grf import CausalForest as _GRFCausalForest
from sklearn.base import BaseEstimator, clone

from eocausal.errors import EstimationError, InputDataError
from eocausal.estimate.ate import (
    ATEResult,
    aipw_ate,
    dr_scores,
    normal_interval,
    overlap_diagnostics,
)
from eocausal.estimate.forest_settings import (
    AUTO_HGB_MIN_UNITS,
    FINAL_MODELS,
    auto_final_model,
    check_max_samples,
    check_trees_per_bag,
    regression_forest,
    resolve_max_features,
)
from eocausal.estimate.nuisance import (
    crossfit_arm_outcomes,
    crossfit_outcome,
    default_outcome_model,
    resolve_propensity,
)
from eocausal.splitting import make_folds
from eocausal.validation import check_features, check_is_fitted, check_treatment_outcome

__all__ = ["CausalForest", "DRLearner", "TLearner"]



class _CATELearner(BaseEstimator):
    """Shared fit / ate / out-of-fold plumbing; subclasses fit the effect model."""

    def _check_params(self) -> None:
        if not isinstance(self.n_folds, Integral) or self.n_folds < 2:
            raise InputDataError(
                f"The 'n_folds' parameter of {type(self).__name__} must be an int >= 2. "
                f"Got {self.n_folds!r} instead."
            )
        check_trees_per_bag(self.n_estimators, self.trees_per_bag, owner=type(self).__name__)

    def fit(self, X, T, Y, *, clusters=None, sample_weight=None):
        """Fit nuisances by cross-fitting, then the effect model.

        Parameters
        ----------
        X : array-like of shape (n, p)
            Features (e.g. :attr:`eocausal.features.Features.X`).
        T : array-like of shape (n,)
            Binary treatment (0/1).
        Y : array-like of shape (n,)
            Outcome.
        clusters : array-like of shape (n,), default=None
            Cluster labels: kept together in cross-fitting folds and used for the
            cluster-robust SE of :meth:`ate`.
        sample_weight : array-like of shape (n,), default=None

        Returns
        -------
        self
        """
        self._check_params()
        data = check_treatment_outcome(
            T, Y, X=X, clusters=clusters, sample_weight=sample_weight, min_per_arm=self.n_folds
        )
        if data.X is None:
            raise InputDataError("`X` is required.")
        X, T, Y, clusters, w = data.X, data.T, data.Y, data.clusters, data.sample_weight
        n = len(T)
        self.max_samples_ = check_max_samples(self.max_samples, n, type(self).__name__)
        self.n_features_in_ = X.shape[1]
        self.folds_ = make_folds(
            n, self.n_folds, clusters=clusters, stratify=T, seed=self.random_state
        )
        e = resolve_propensity(
            self.propensity,
            X,
            T,
            n_folds=self.n_folds,
            clusters=clusters,
            sample_weight=w,
            seed=self.random_state,
            n_jobs=self.n_jobs,
        )
        self.overlap_ = overlap_diagnostics(e, T, warn=True)
        tau, m = self._fit_effect(X, T, Y, e, w)
        if not (np.isfinite(tau).all() and np.isfinite(m).all()):
            raise EstimationError(
                "Out-of-fold predictions are not finite for some units; increase `n_estimators`."
            )
        self.propensity_oof_ = e
        self.effect_oof_ = tau
        self.outcome_oof_ = m
        self.dr_scores_ = dr_scores(Y, T, e, m, tau)
        self.treatment_ = T
        self.outcome_ = Y
        self.clusters_ = clusters
        self.sample_weight_ = w
        return self

    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "dr_scores_")
        X = check_features(X)
        if X.shape[1] != self.n_features_in_:
            raise InputDataError(
                f"`X` has {X.shape[1]} features but {type(self).__name__} was fitted with "
                f"{self.n_features_in_}; build X with the same fitted feature transform."
            )
        return X

    def ate(self, target: str = "all", alpha: float = 0.05) -> ATEResult:
        """AIPW average effect on the training units from the out-of-fold nuisances.

        Parameters
        ----------
        target : {"all", "treated", "control", "overlap"}, default="all"
        alpha : float, default=0.05

        Returns
        -------
        ATEResult
            Cluster-robust when ``clusters`` were given to ``fit``.
        """
        check_is_fitted(self, "dr_scores_")
        return aipw_ate(
            self.outcome_,
            self.treatment_,
            self.propensity_oof_,
            outcome_hat=self.outcome_oof_,
            effect=self.effect_oof_,
            target=target,
            clusters=self.clusters_,
            sample_weight=self.sample_weight_,
            alpha=alpha,
            warn_overlap=False,
        )


class _ForestLearner(_CATELearner):
    """A learner whose effect model is one econml forest, ``forest_``."""

    def effect(self, X) -> np.ndarray:
        """τ̂(x) for new units; shape (n,)."""
        X = self._check_X(X)
        return self.forest_.predict(X)[:, 0]

    def effect_interval(self, X, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise (1 − alpha) intervals for the forest's expected prediction, not for τ(x).

        Parameters
        ----------
        X : array-like of shape (n, p)
        alpha : float, default=0.05

        Returns
        -------
        lower, upper : ndarray of shape (n,)

        Notes
        -----
        .. math::

            \\hat\\tau(x) \\pm z_{1-\\alpha/2}\\,\\hat\\sigma(x),\\qquad
            \\hat\\sigma^2(x) = \\frac{1}{B}\\sum_{b=1}^{B}
            \\big(\\hat\\tau_b(x) - \\hat\\tau(x)\\big)^2
            - \\frac{1}{\\ell - 1}\\,\\frac{1}{B}\\sum_{b=1}^{B}\\frac{1}{\\ell}\\sum_{t \\in b}
            \\big(\\hat\\tau_t(x) - \\hat\\tau_b(x)\\big)^2:

        the bootstrap of little bags. The :math:`B` = ``n_estimators / trees_per_bag``
        bags of :math:`\\ell` = ``trees_per_bag`` trees each grow on one half-sample;
        :math:`\\hat\\tau_b` is bag :math:`b`'s estimate, :math:`\\hat\\tau_t` tree
        :math:`t`'s, and the second term removes the trees' Monte Carlo noise from
        the between-bag variance. For :class:`CausalForest` econml evaluates this on
        the forest's moment equation, maps it through the inverse Jacobian (delta
        method) and keeps it positive with an objective-Bayes correction; for
        :class:`DRLearner` it is the variance of the regression forest fitted to the
        pseudo-outcomes, which are taken as given (errors of the cross-fitted μ̂ and
        ê enter the bias, not :math:`\\hat\\sigma^2`). :math:`\\hat\\sigma^2(x)`
        estimates :math:`\\operatorname{Var}[\\hat\\tau(x)]`, the spread around the
        forest's expected prediction :math:`E[\\hat\\tau(x)]`; the interval covers
        :math:`\\tau(x)` at the nominal rate only when the bias
        :math:`E[\\hat\\tau(x)] - \\tau(x)` is small next to :math:`\\sigma(x)`.

        WARNING: THESE ARE INTERVALS FOR THE FOREST'S EXPECTED PREDICTION
        :math:`E[\\hat\\tau(x)]`, AND THE FOREST'S BIAS IS NOT INCLUDED. A forest
        averages τ over neighbourhoods, so at realistic sample sizes the bias is
        often larger than the sd: on the METHODS.md section 3 problem (n = 2,000,
        p = 10, 40 datasets) the 95% intervals covered τ(x) in 0.65 of cases and
        the forest's expected prediction in 0.96, the bias being 1.9 sds on
        average over test points (root-mean-square bias 2.2 times the
        root-mean-square sd); 400 trees or 8 trees per bag narrowed the intervals
        and lowered the coverage of τ(x) to 0.60-0.62 (docs/benchmarks.md,
        "Pointwise CATE intervals"). Do not report them as
        confidence intervals for the effect at x; test heterogeneity with
        :func:`eocausal.evaluate.rate` or the calibration test instead.

        References
        ----------
        Athey, Tibshirani and Wager (2019), "Generalized random forests", Annals of
        Statistics 47(2), section 4 (little bags, after Sexton and Laake 2009);
        Wager and Athey (2018), "Estimation and inference of heterogeneous treatment
        effects using random forests", JASA 113: the Gaussian limit is centred on
        τ(x) only under subsampling rates that make the bias vanish faster than
        the sd; Kennedy (2023) for the DR learner.
        """
        X = self._check_X(X)
        lower, upper = self.forest_.predict_interval(X, alpha=alpha)
        return lower[:, 0], upper[:, 0]


class CausalForest(_ForestLearner):
    """Causal forest (R-learner with an honest generalized random forest).

    Cross-fits m̂ = E[Y|X] (a fixed fast gradient-boosting regressor, no model
    search) and ê (cross-validated ridge logistic, or the known propensity),
    then fits econml's honest ``econml.grf.CausalForest`` (the final stage of
    ``CausalForestDML``) on the residuals, searching
    :func:`default_mtry` features per split (all of them up to p = 64).

    Parameters
    ----------
    n_estimators : int, default=200
        Trees; a multiple of ``trees_per_bag``.
    max_features : "auto", "grf", int, float or None, default="auto"
        Features tried per split: ``"auto"`` is :func:`default_mtry`
        (``min(p, max(64, sqrt(p) + 20))``), ``"grf"`` is grf's
        ``min(ceil(sqrt(p) + 20), p)``; ints and floats as in scikit-learn.
    min_samples_leaf : int, default=10
        Fewest units per leaf (econml and grf use 5; 10 was as accurate or better
        and faster on the METHODS.md section 3 problem, see docs/bench/cate.md).
    max_depth : int, default=None
    max_samples : "auto" or float, default="auto"
        Share of units drawn (without replacement) per tree, in (0, 0.5].
        ``"auto"`` is :func:`auto_max_samples`, ``min(0.45, 20,000 / n)``:
        0.45 up to n = 44,444 training units, then at most 20,000 units per tree
        (bounded cost per tree; the resolved share is ``max_samples_``).
    min_balancedness_tol : float, default=0.45
    honest : bool, default=True
    trees_per_bag : int, default=4
        Trees grown on each half-sample ("little bag") for the variance behind
        :meth:`effect_interval`: econml's ``subforest_size``, grf's
        ``ci.group.size`` (default 2 there). At least 2; ``n_estimators`` must
        be a multiple of it, giving ``n_estimators / trees_per_bag`` bags. More
        trees per bag shrink the trees' Monte Carlo noise that the variance
        estimate must subtract; raise ``n_estimators`` with it to keep the
        number of bags. On the METHODS.md section 3 problem (n = 2,000) the
        estimated sd of τ̂(x) exceeded its Monte Carlo sd by 25% with 4 trees
        per bag (200 trees) and by 12% with 8 (400 trees, the same 50 bags);
        its spread across datasets (coefficient of variation 0.29) and the
        point estimates did not change (docs/benchmarks.md). It does not touch
        the forest's bias, so it cannot make the intervals cover τ(x) (see
        :meth:`effect_interval`).
    outcome_model : scikit-learn regressor, default=None
        Model for m̂; ``None`` uses :func:`~eocausal.estimate.nuisance.default_outcome_model`.
    propensity : float or array-like of shape (n,), default=None
        Known assignment probability (RCT); ``None`` estimates ê.
    n_folds : int, default=5
        Cross-fitting folds.
    n_jobs : int, default=-1
    random_state : int, default=None

    Attributes
    ----------
    forest_ : econml.grf.CausalForest
    max_samples_ : float
        The share of units each tree drew (``max_samples`` resolved at ``fit``).
    effect_oof_ : ndarray of shape (n,)
        Out-of-bag τ̂ for every training unit.
    outcome_oof_, propensity_oof_, dr_scores_ : ndarray of shape (n,)
    folds_ : ndarray of shape (n,)
    overlap_ : OverlapDiagnostics

    Notes
    -----
    The forest solves, locally around x,

    .. math:: E\\big[(\\tilde Y - \\tau(x)\\tilde W - \\beta(x))(\\tilde W; 1) \\mid X = x\\big] = 0,
              \\quad \\tilde Y = Y - \\hat m(X),\\ \\tilde W = W - \\hat e(X).

    :meth:`effect_interval` gives intervals for the forest's expected
    prediction :math:`E[\\hat\\tau(x)]`, not for :math:`\\tau(x)` (the forest's
    bias is left out). Clusters keep cross-fitting folds and ATE standard errors
    honest; the forest's own subsampling does not group clusters (econml offers
    no such option), so pointwise intervals treat units as independent.

    WARNING: ``effect_oof_`` is out-of-bag; ``effect(X_train)`` is not, and
    must not be used to build scores or priorities on the training units.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); T = rng.integers(0, 2, 400)
    >>> Y = X[:, 0] * T + rng.normal(size=400)
    >>> cf = CausalForest(n_estimators=40, propensity=0.5, random_state=0).fit(X, T, Y)
    >>> cf.effect(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        max_features="auto",
        min_samples_leaf: int = 10,
        max_depth: int | None = None,
        max_samples: float | str = "auto",
        min_balancedness_tol: float = 0.45,
        honest: bool = True,
        trees_per_bag: int = 4,
        outcome_model=None,
        propensity=None,
        n_folds: int = 5,
        n_jobs: int = -1,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_depth = max_depth
        self.max_samples = max_samples
        self.min_balancedness_tol = min_balancedness_tol
        self.honest = honest
        self.trees_per_bag = trees_per_bag
        self.outcome_model = outcome_model
        self.propensity = propensity
        self.n_folds = n_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_effect(self, X, T, Y, e, w):
        m = crossfit_outcome(
            X,
            Y,
            self.folds_,
            model=self.outcome_model,
            sample_weight=w,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        self.forest_ = _GRFCausalForest(
            n_estimators=self.n_estimators,
            max_features=resolve_max_features(self.max_features, X.shape[1]),
            min_samples_leaf=self.min_samples_leaf,
            max_depth=self.max_depth,
            max_samples=self.max_samples_,
            min_balancedness_tol=self.min_balancedness_tol,
            honest=self.honest,
            inference=True,
            fit_intercept=True,
            subforest_size=self.trees_per_bag,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        self.forest_.fit(X, (T - e)[:, None], (Y - m)[:, None], sample_weight=w)
        tau = self.forest_.oob_predict(X)[:, 0]
        return tau, m


class DRLearner(_ForestLearner):
    """Doubly robust learner: a regression of cross-fitted AIPW pseudo-outcomes on X.

    The final stage is an honest regression forest (with little-bags intervals)
    or, from :data:`AUTO_HGB_MIN_UNITS` training units on under the default
    ``final_model="auto"``, histogram gradient boosting.

    Parameters
    ----------
    n_estimators : int, default=200
        Trees of the final forest (a multiple of ``trees_per_bag``).
    max_features : "auto", "grf", int, float or None, default="auto"
    min_samples_leaf : int, default=5
    max_samples : "auto" or float, default="auto"
        Share of units per tree of the final forest, as in :class:`CausalForest`
        (:func:`auto_max_samples`).
    trees_per_bag : int, default=4
        Trees per half-sample for the little-bags variance (econml's
        ``subforest_size``), as in :class:`CausalForest`.
    final_model : {"auto", "forest", "hgb"}, default="auto"
        The regression of the pseudo-outcomes: ``"forest"`` the honest regression
        forest (``n_estimators``, ``max_features``, ``min_samples_leaf``,
        ``max_samples``, ``trees_per_bag`` apply to it), ``"hgb"`` histogram
        gradient boosting, the fixed model of the first stage
        (:func:`~eocausal.estimate.nuisance.default_outcome_model`, seeded with
        ``random_state``; the forest parameters are unused), ``"auto"``
        :func:`auto_final_model` (``"hgb"`` from 20,000 training units on). The
        resolved choice is ``final_model_``. Its early stopping (on a 10%
        validation split drawn with ``random_state``, so deterministic) sets the
        number of boosting rounds to the pseudo-outcomes' signal-to-noise ratio;
        a fixed number would not (in an exploratory run on the benchmark's
        pseudo-outcomes at 50,000 units, with leaves of 100 units, 100 fixed
        rounds gave MSE(τ) 0.021, 200 gave 0.027 and 400 gave 0.040, against
        0.021 with early stopping).
    outcome_model : scikit-learn regressor, default=None
        Arm regressions μ̂₀, μ̂₁ (cloned per fold and arm).
    propensity : float or array-like of shape (n,), default=None
    clip : float, default=0.01
        ê is clipped to ``[clip, 1 − clip]`` inside the pseudo-outcomes only.
    n_folds : int, default=5
    n_jobs : int, default=-1
    random_state : int, default=None

    Attributes
    ----------
    final_model_ : {"forest", "hgb"}
    final_estimator_ : econml.grf.RegressionForest or HistGradientBoostingRegressor
        The final stage fitted on all training units, behind :meth:`effect`.
    forest_ : econml.grf.RegressionForest
        The same object as ``final_estimator_`` when ``final_model_ == "forest"``
        (absent otherwise).
    max_samples_ : float
    pseudo_outcomes_ : ndarray of shape (n,)
    mu0_oof_, mu1_oof_ : ndarray of shape (n,)
    effect_oof_, outcome_oof_, propensity_oof_, dr_scores_ : ndarray of shape (n,)

    Notes
    -----
    .. math:: \\varphi_i = \\hat\\mu_1 - \\hat\\mu_0 + \\frac{W_i (Y_i - \\hat\\mu_1)}{\\hat e}
              - \\frac{(1 - W_i)(Y_i - \\hat\\mu_0)}{1 - \\hat e},\\qquad
              \\hat\\tau(x) = \\hat E[\\varphi \\mid X = x]

    with out-of-fold μ̂ and ê (Kennedy 2023); ``outcome_oof_`` is
    m̂ = ê μ̂₁ + (1 − ê) μ̂₀. ``effect_oof_`` is the forest's out-of-bag
    prediction, or, with gradient boosting (which has no out-of-bag units), the
    prediction of the model fitted on the other cross-fitting folds
    (``folds_``, the folds of μ̂ and ê):

    .. math:: \\hat\\tau^{oof}(X_i) = \\hat g^{(-k(i))}(X_i),

    :math:`\\hat g^{(-k)}` fitted on the pseudo-outcomes of the folds other than
    :math:`k`; :meth:`effect` uses the model fitted on all of them.

    Gradient boosting has no little-bags variance: with ``final_model_ == "hgb"``,
    :meth:`effect_interval` returns NaN bounds.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        max_features="auto",
        min_samples_leaf: int = 5,
        max_samples: float | str = "auto",
        trees_per_bag: int = 4,
        final_model: str = "auto",
        outcome_model=None,
        propensity=None,
        clip: float = 0.01,
        n_folds: int = 5,
        n_jobs: int = -1,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_samples = max_samples
        self.trees_per_bag = trees_per_bag
        self.final_model = final_model
        self.outcome_model = outcome_model
        self.propensity = propensity
        self.clip = clip
        self.n_folds = n_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        if self.final_model not in FINAL_MODELS:
            raise InputDataError(
                f"The 'final_model' parameter of DRLearner must be one of {list(FINAL_MODELS)}. "
                f"Got {self.final_model!r}; use 'auto' (gradient boosting from "
                f"{AUTO_HGB_MIN_UNITS:,} training units on, the forest below)."
            )
        if not isinstance(self.clip, Real) or not 0.0 <= self.clip < 0.5:
            raise InputDataError(
                f"The 'clip' parameter of DRLearner must be in [0, 0.5). Got {self.clip!r}."
            )

    def _fit_effect(self, X, T, Y, e, w):
        mu0, mu1 = crossfit_arm_outcomes(
            X,
            T,
            Y,
            self.folds_,
            model=self.outcome_model,
            sample_weight=w,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        ec = np.clip(e, self.clip, 1 - self.clip)
        phi = mu1 - mu0 + T * (Y - mu1) / ec - (1 - T) * (Y - mu0) / (1 - ec)
        self.final_model_ = (
            auto_final_model(len(Y)) if self.final_model == "auto" else self.final_model
        )
        if self.final_model_ == "forest":
            self.forest_ = regression_forest(self, X.shape[1], self.random_state)
            self.forest_.fit(X, phi, sample_weight=w)
            self.final_estimator_ = self.forest_
            tau = self.forest_.oob_predict(X)[:, 0]
        else:
            model = default_outcome_model(self.random_state)
            tau = crossfit_outcome(
                X, phi, self.folds_, model=model, sample_weight=w, n_jobs=self.n_jobs
            )
            self.final_estimator_ = clone(model).fit(X, phi, sample_weight=w)
            self.__dict__.pop("forest_", None)  # from an earlier fit with the forest
        self.mu0_oof_, self.mu1_oof_, self.pseudo_outcomes_ = mu0, mu1, phi
        return tau, e * mu1 + (1 - e) * mu0

    def effect(self, X) -> np.ndarray:
        """τ̂(x) for new units from the final stage fitted on all training units; shape (n,)."""
        X = self._check_X(X)
        pred = self.final_estimator_.predict(X)
        return pred if pred.ndim == 1 else pred[:, 0]

    def effect_interval(self, X, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise (1 − alpha) intervals for the final forest's expected prediction (not τ(x)).

        With ``final_model_ == "forest"``: the little-bags intervals of
        :meth:`CausalForest.effect_interval` (its formula, WARNING and references
        apply) for the regression forest of the pseudo-outcomes. With
        ``final_model_ == "hgb"``: NaN bounds, since gradient boosting has no
        little-bags (or any other) variance estimate; refit with
        ``final_model="forest"`` for intervals, at a higher cost at large n.

        Parameters
        ----------
        X : array-like of shape (n, p)
        alpha : float, default=0.05

        Returns
        -------
        lower, upper : ndarray of shape (n,)
        """
        X = self._check_X(X)
        if self.final_model_ == "hgb":
            return np.full(len(X), np.nan), np.full(len(X), np.nan)
        lower, upper = self.forest_.predict_interval(X, alpha=alpha)
        return lower[:, 0], upper[:, 0]


class TLearner(_CATELearner):
    """T-learner baseline: one honest regression forest per arm, τ̂ = μ̂₁ − μ̂₀.

    Parameters
    ----------
    n_estimators : int, default=200
    max_features : "auto", "grf", int, float or None, default="auto"
    min_samples_leaf : int, default=5
    max_samples : "auto" or float, default="auto"
        Share of units per tree, as in :class:`CausalForest`, resolved on all n
        training units (:func:`auto_max_samples`); each arm's forest draws that
        share of its arm.
    trees_per_bag : int, default=4
        Trees per half-sample for the little-bags variance of each arm's forest,
        as in :class:`CausalForest`.
    propensity : float or array-like of shape (n,), default=None
        Used only for ``outcome_oof_`` (m̂ = ê μ̂₁ + (1 − ê) μ̂₀) and the DR scores.
    n_folds : int, default=5
        Folds of the propensity model.
    n_jobs : int, default=-1
    random_state : int, default=None

    Attributes
    ----------
    forest0_, forest1_ : econml.grf.RegressionForest
    max_samples_ : float
    mu0_oof_, mu1_oof_ : ndarray of shape (n,)
        For a unit of arm a, μ̂_a is out-of-bag and μ̂_{1−a} comes from the other
        arm's forest, which never saw the unit; both are out-of-sample.
    effect_oof_, outcome_oof_, propensity_oof_, dr_scores_ : ndarray of shape (n,)

    Notes
    -----
    :meth:`effect_interval` adds the two arms' little-bags variances (the arms'
    forests are fitted on disjoint units); it leaves out the bias.
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        max_features="auto",
        min_samples_leaf: int = 5,
        max_samples: float | str = "auto",
        trees_per_bag: int = 4,
        propensity=None,
        n_folds: int = 5,
        n_jobs: int = -1,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.max_samples = max_samples
        self.trees_per_bag = trees_per_bag
        self.propensity = propensity
        self.n_folds = n_folds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_effect(self, X, T, Y, e, w):
        mu = np.empty((2, len(Y)))
        forests = []
        for arm in (0, 1):
            rows = np.flatnonzero(T == arm)
            seed = None if self.random_state is None else self.random_state + arm
            forest = regression_forest(self, X.shape[1], seed)
            forest.fit(X[rows], Y[rows], sample_weight=None if w is None else w[rows])
            mu[arm] = forest.predict(X)[:, 0]
            mu[arm, rows] = forest.oob_predict(X[rows])[:, 0]
            forests.append(forest)
        self.forest0_, self.forest1_ = forests
        self.mu0_oof_, self.mu1_oof_ = mu[0], mu[1]
        return mu[1] - mu[0], e * mu[1] + (1 - e) * mu[0]

    def effect(self, X) -> np.ndarray:
        """τ̂(x) = μ̂₁(x) − μ̂₀(x); shape (n,)."""
        X = self._check_X(X)
        return self.forest1_.predict(X)[:, 0] - self.forest0_.predict(X)[:, 0]

    def effect_interval(self, X, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise (1 − alpha) intervals for E[μ̂₁(x)] − E[μ̂₀(x)], not for τ(x).

        Parameters
        ----------
        X : array-like of shape (n, p)
        alpha : float, default=0.05

        Returns
        -------
        lower, upper : ndarray of shape (n,)

        Notes
        -----
        .. math::

            \\hat\\tau(x) \\pm z_{1-\\alpha/2}\\sqrt{\\hat\\sigma_1^2(x) + \\hat\\sigma_0^2(x)},

        with :math:`\\hat\\sigma_a^2` the little-bags variance of arm :math:`a`'s
        forest (the formula of :meth:`CausalForest.effect_interval`); the arms'
        forests are fitted on disjoint units, so the variances add.

        WARNING: THESE ARE INTERVALS FOR THE MODEL'S EXPECTED PREDICTION, AND THE
        BIAS IS NOT INCLUDED. Each arm's forest smooths its own outcome surface,
        and where the arms' covariates differ their biases do not cancel
        (Künzel et al. 2019); the intervals cover τ(x) at the nominal rate only
        when the bias is small next to the sd.

        References
        ----------
        Athey, Tibshirani and Wager (2019), section 4; Künzel, Sekhon, Bickel and
        Yu (2019), "Metalearners for estimating heterogeneous treatment effects
        using machine learning", PNAS 116(10).
        """
        X = self._check_X(X)
        p1, v1 = self.forest1_.predict_and_var(X)
        p0, v0 = self.forest0_.predict_and_var(X)
        sd = np.sqrt(np.maximum(v1[:, 0, 0] + v0[:, 0, 0], 0.0))
        return normal_interval(p1[:, 0] - p0[:, 0], sd, alpha)
