"""OutcomeModel: predict an outcome (e.g. wealth) from imagery features, with honest accuracy.

Fitted on labelled locations (survey clusters) grouped into spatial blocks or
admin units. A share of the GROUPS is set aside as the calibration split; the
rest are cross-fitted by group K-fold, so every labelled location gets a
prediction from a model that never saw its group, and the final model (the one
that draws the map) is fitted on all non-calibration groups. The calibration
split is then the map's own held-out sample: the later debiasing of trials
(:mod:`eocausal.debias`) fits its correction there.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from eocausal import __version__
from eocausal.atomic import atomic_path, json_default
from eocausal.errors import EocausalWarning, InputDataError
from eocausal.outcome.blocks import check_groups
from eocausal.outcome.learners import DEFAULT_ALPHAS, MODELS, fit_learner, predict
from eocausal.outcome.metrics import outcome_metrics
from eocausal.splitting import make_folds, split_units
from eocausal.validation import (
    check_features,
    check_is_fitted,
    check_outcome,
    check_sample_weight,
)

__all__ = ["CALIBRATION", "CROSS_FITTED", "METRIC_COLUMNS", "OutcomeModel"]

#: Row names of :attr:`OutcomeModel.metrics_` besides the per-fold rows ``"fold {k}"``.
CROSS_FITTED = "cross-fitted (all folds)"
CALIBRATION = "calibration split"
METRIC_COLUMNS = ["split", "n", "r2", "rmse", "slope", "intercept"]

_FORMAT = "eocausal.OutcomeModel"
_FORMAT_VERSION = 1
_META_KEY = "meta.json"
_MODEL_PREFIX = "model."


def _metrics_row(split: str, truth, predicted, w) -> dict:
    """One row of ``metrics_``; NaN metrics where they are undefined (n < 2, constant truth)."""
    if len(truth) < 2 or np.ptp(truth) == 0.0:
        return {
            "split": split,
            "n": len(truth),
            "r2": np.nan,
            "rmse": np.nan,
            "slope": np.nan,
            "intercept": np.nan,
        }
    return {"split": split, **outcome_metrics(truth, predicted, sample_weight=w)}


class OutcomeModel(BaseEstimator):
    """Outcome model with spatially blocked cross-fitting and a held-out calibration split.

    Parameters
    ----------
    model : {"ridge", "hist_gradient_boosting", "mlp"}, default="ridge"
        ``"ridge"``: features standardized, ridge penalty chosen from ``alphas``
        by group K-fold inside the training groups (MOSAIKS' default predictor,
        Rolf et al. 2021; fast on millions of map cells).
        ``"hist_gradient_boosting"``: scikit-learn's
        ``HistGradientBoostingRegressor`` (learning rate 0.1, up to 500
        iterations), early-stopped (patience 20 iterations) on 20% of the
        training groups.
        ``"mlp"``: scikit-learn's ``MLPRegressor`` with hidden layers (128, 64),
        ReLU, Adam, L2 1e-3, on standardized features and outcome,
        early-stopped (patience 20 epochs) on 20% of the training groups.
    n_folds : int, default=5
        Group K-fold cross-fitting folds over the non-calibration groups (and
        the inner folds of the ridge penalty choice).
    calibration_size : float, default=0.2
        Share of the GROUPS held out entirely as the calibration split, in
        (0, 1): ``ceil(calibration_size * n_groups)`` groups.
    alphas : array-like of positive floats, default=None
        Ridge penalties to choose from (``model="ridge"`` only); ``None`` is
        ``numpy.logspace(-3, 4, 15)``.
    random_state : int, default=None
        Seed of the calibration split, the folds and the learners; same seed,
        same numbers.

    Attributes
    ----------
    oof_prediction_ : ndarray of shape (n,)
        Out-of-fold prediction of every labelled location; for calibration
        locations, the final model's prediction (it never saw them either).
    fold_ : ndarray of shape (n,), int
        Cross-fitting fold of each location; -1 for calibration locations.
    is_calibration_ : ndarray of shape (n,), bool
    metrics_ : pandas.DataFrame
        Columns ``split, n, r2, rmse, slope, intercept`` (see
        :func:`~eocausal.outcome.outcome_metrics`); one row ``"fold {k}"`` per
        fold, then ``"cross-fitted (all folds)"`` (all out-of-fold predictions
        pooled) and ``"calibration split"`` (final model on the calibration
        groups).
    calibration_table_ : pandas.DataFrame
        Columns ``row`` (index into the data given to ``fit``), ``group``,
        ``predicted``, ``truth``: the calibration pairs for the debiasing
        corrections.
    alpha_ : float
        Ridge penalty of the final model (``model="ridge"`` only).
    model_params_ : dict of str -> ndarray
        The final model as plain arrays (what :meth:`predict` and :meth:`save` use).
    n_features_in_ : int

    Notes
    -----
    Let :math:`G` be the group of each location, :math:`\\mathcal C` the
    calibration groups and :math:`k(g)` the fold of a non-calibration group. With
    :math:`\\hat f^{(-k)}` fitted on the non-calibration groups outside fold
    :math:`k` and :math:`\\hat f` on all non-calibration groups,

    .. math::

        \\hat Y_i = \\begin{cases}
            \\hat f^{(-k(G_i))}(X_i) & G_i \\notin \\mathcal C \\\\
            \\hat f(X_i) & G_i \\in \\mathcal C.
        \\end{cases}

    The calibration groups are never used to fit, stop or tune anything, so the
    slope :math:`k` of :math:`\\hat Y = m + kY` on them is an honest estimate of
    the map's shrinkage, which the corrections of Pettersson, Jerzak and Daoud
    (2026) invert. The cross-fitted row describes :math:`\\hat f^{(-k)}`,
    fitted on about :math:`(K-1)/K` of the data the final model saw.

    WARNING: random K-fold on spatially correlated locations (and on DHS
    coordinates displaced by up to 5 km) overstates accuracy; pass spatial
    blocks (:func:`~eocausal.outcome.spatial_blocks`) wider than the
    correlation range and the displacement, or admin/country labels, as
    ``groups`` (Yeh et al. 2020).

    References
    ----------
    .. [1] Rolf, E., Proctor, J., Carleton, T., et al. (2021). A generalizable and
       accessible approach to machine learning with global satellite imagery.
       Nature Communications 12, 4392.
    .. [2] Yeh, C., Perez, A., Driscoll, A., et al. (2020). Using publicly available
       satellite imagery and deep learning to understand economic well-being in
       Africa. Nature Communications 11, 2583.
    .. [3] Pettersson, M. B., Jerzak, C. T., Daoud, A. (2026). One Map, Many
       Trials: Satellite-Based Causal Inference with Debiased Predicted
       Outcomes. AAAI 2026.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 5)); y = X[:, 0] + rng.normal(size=300)
    >>> groups = np.arange(300) // 10
    >>> m = OutcomeModel(random_state=0).fit(X, y, groups=groups)
    >>> list(m.metrics_["split"])[-2:]
    ['cross-fitted (all folds)', 'calibration split']
    >>> int(m.is_calibration_.sum())
    60
    """

    def __init__(
        self,
        *,
        model: str = "ridge",
        n_folds: int = 5,
        calibration_size: float = 0.2,
        alphas=None,
        random_state: int | None = None,
    ) -> None:
        self.model = model
        self.n_folds = n_folds
        self.calibration_size = calibration_size
        self.alphas = alphas
        self.random_state = random_state

    # ----------------------------------------------------------------- checks

    def _check_params(self) -> np.ndarray:
        """Check the parameters; return the ridge penalty grid."""
        name = type(self).__name__
        if self.model not in MODELS:
            raise InputDataError(
                f"The 'model' parameter of {name} must be one of {list(MODELS)}. "
                f"Got {self.model!r} instead."
            )
        if (
            not isinstance(self.n_folds, Integral)
            or isinstance(self.n_folds, bool)
            or (self.n_folds < 2)
        ):
            raise InputDataError(
                f"The 'n_folds' parameter of {name} must be an int >= 2. Got {self.n_folds!r} instead."
            )
        cs = self.calibration_size
        if not isinstance(cs, Real) or isinstance(cs, bool) or not 0.0 < float(cs) < 1.0:
            raise InputDataError(
                f"The 'calibration_size' parameter of {name} must be a share of the groups "
                f"strictly between 0 and 1. Got {cs!r} instead; use e.g. 0.2."
            )
        if self.random_state is not None and (
            not isinstance(self.random_state, Integral) or isinstance(self.random_state, bool)
        ):
            raise InputDataError(
                f"The 'random_state' parameter of {name} must be an int or None. "
                f"Got {self.random_state!r} instead."
            )
        if self.alphas is None:
            return DEFAULT_ALPHAS
        if self.model != "ridge":
            raise InputDataError(
                f"The 'alphas' parameter of {name} is used by model='ridge' only; got "
                f"alphas={self.alphas!r} with model={self.model!r}. Drop `alphas`."
            )
        try:
            alphas = np.asarray(self.alphas, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            alphas = np.array([np.nan])
        if alphas.size == 0 or not (np.isfinite(alphas) & (alphas > 0)).all():
            raise InputDataError(
                f"The 'alphas' parameter of {name} must hold positive finite penalties. "
                f"Got {self.alphas!r} instead; use e.g. numpy.logspace(-3, 4, 15)."
            )
        return np.unique(alphas)

    def _check_group_counts(self, groups: np.ndarray) -> None:
        n_groups = len(np.unique(groups))
        n_cal = math.ceil(float(self.calibration_size) * n_groups)
        if n_groups - n_cal < self.n_folds:
            raise InputDataError(
                f"`groups` has {n_groups} distinct groups: calibration_size="
                f"{self.calibration_size} holds out {n_cal}, leaving {n_groups - n_cal} for "
                f"n_folds={self.n_folds} folds, which needs at least {self.n_folds}. Use smaller "
                "spatial blocks (more groups), lower `n_folds`, or lower `calibration_size`."
            )

    # ----------------------------------------------------------------- fit / predict

    def fit(self, X, y, *, groups, sample_weight=None) -> OutcomeModel:
        """Hold out the calibration groups, cross-fit the rest, fit the final model.

        Parameters
        ----------
        X : array-like of shape (n, p)
            Features of the labelled locations (e.g.
            :attr:`eocausal.features.Features.X`), finite.
        y : array-like of shape (n,)
            Observed outcome (e.g. the survey wealth index), finite.
        groups : array-like of shape (n,)
            Spatial block ids (:func:`~eocausal.outcome.spatial_blocks`) or
            admin/country labels. Groups are never split: not between folds, not
            between training and calibration, not by early stopping or the
            penalty choice. Stored as strings.
        sample_weight : array-like of shape (n,), default=None
            Positive weights (e.g. survey weights), used by every fit and metric.

        Returns
        -------
        self

        Raises
        ------
        InputDataError
            NaN or infinite values, mismatched lengths, missing group labels, too
            few groups for ``n_folds`` plus the calibration split, bad parameters.
        """
        alphas = self._check_params()
        X = check_features(X)
        n = X.shape[0]
        y = check_outcome(y, n=n, name="y")
        groups = check_groups(groups, n=n)
        w = check_sample_weight(sample_weight, n=n)
        self._check_group_counts(groups)
        cal_seed, fold_seed, model_seed = (
            int(s) for s in np.random.SeedSequence(self.random_state).generate_state(3)
        )
        train, cal = split_units(
            n, test_size=float(self.calibration_size), clusters=groups, seed=cal_seed
        )
        train_folds = make_folds(len(train), self.n_folds, clusters=groups[train], seed=fold_seed)

        def fit_on(rows: np.ndarray) -> dict[str, np.ndarray]:
            return fit_learner(
                self.model,
                X[rows],
                y[rows],
                None if w is None else w[rows],
                groups[rows],
                seed=model_seed,
                alphas=alphas,
                n_folds=self.n_folds,
            )

        def weights(rows: np.ndarray):
            return None if w is None else w[rows]

        fold = np.full(n, -1, dtype=np.int64)
        fold[train] = train_folds
        prediction = np.empty(n)
        rows = []
        for k in range(self.n_folds):
            fit_rows, held_out = train[train_folds != k], train[train_folds == k]
            prediction[held_out] = predict(self.model, fit_on(fit_rows), X[held_out])
            rows.append(
                _metrics_row(f"fold {k}", y[held_out], prediction[held_out], weights(held_out))
            )
        final = fit_on(train)
        prediction[cal] = predict(self.model, final, X[cal])
        rows.append(_metrics_row(CROSS_FITTED, y[train], prediction[train], weights(train)))
        rows.append(_metrics_row(CALIBRATION, y[cal], prediction[cal], weights(cal)))

        self.model_params_ = final
        self.n_features_in_ = X.shape[1]
        self.oof_prediction_ = prediction
        self.fold_ = fold
        self.is_calibration_ = fold == -1
        self.metrics_ = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        self.calibration_table_ = pd.DataFrame(
            {"row": cal, "group": groups[cal], "predicted": prediction[cal], "truth": y[cal]}
        )
        if self.model == "ridge":
            self.alpha_ = float(final["alpha"])
            self._warn_alpha_at_edge(alphas)
        return self

    def _warn_alpha_at_edge(self, alphas: np.ndarray) -> None:
        if len(alphas) > 1 and self.alpha_ in (alphas[0], alphas[-1]):
            warnings.warn(
                f"The ridge penalty chosen by group cross-validation, alpha_={self.alpha_:g}, "
                f"is at the edge of `alphas` [{alphas[0]:g}, {alphas[-1]:g}]; the best penalty "
                "may lie outside it. Widen the grid, e.g. alphas=numpy.logspace(-5, 7, 25).",
                EocausalWarning,
                stacklevel=3,
            )

    def predict(self, X) -> np.ndarray:
        """Prediction of the final model (fitted on all non-calibration groups).

        Parameters
        ----------
        X : array-like of shape (m, p)
            Features built with the same fitted transform as in ``fit``.

        Returns
        -------
        ndarray of shape (m,)

        WARNING: on the labelled locations themselves use ``oof_prediction_``;
        ``predict`` on a location the final model was fitted on is in-sample.
        """
        check_is_fitted(self, "model_params_")
        X = check_features(X)
        if X.shape[1] != self.n_features_in_:
            raise InputDataError(
                f"`X` has {X.shape[1]} features but {type(self).__name__} was fitted with "
                f"{self.n_features_in_}; build X with the same fitted feature transform."
            )
        return predict(self.model, self.model_params_, X)

    # ----------------------------------------------------------------- save / load

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to one ``.npz`` file (numpy arrays and JSON; no pickle).

        The file holds the parameters, the final model's arrays and every fitted
        attribute; it is written atomically. Returns ``path``.
        """
        check_is_fitted(self, "model_params_")
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "eocausal_version": __version__,
            "params": self.get_params(),
            "n_features_in": self.n_features_in_,
            "metrics": self.metrics_.to_dict(orient="list"),
        }
        arrays = {
            _META_KEY: np.array(json.dumps(meta, default=json_default)),
            "oof_prediction": self.oof_prediction_,
            "fold": self.fold_,
            "calibration_row": self.calibration_table_["row"].to_numpy(np.int64),
            "calibration_group": self.calibration_table_["group"].to_numpy(str),
            "calibration_predicted": self.calibration_table_["predicted"].to_numpy(np.float64),
            "calibration_truth": self.calibration_table_["truth"].to_numpy(np.float64),
            **{_MODEL_PREFIX + k: np.asarray(v) for k, v in self.model_params_.items()},
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> OutcomeModel:
        """Read a model written by :meth:`save`; refuses pickled data of any kind.

        Raises
        ------
        InputDataError
            When the file holds pickled objects or is not an OutcomeModel file.
        """
        path = Path(path)
        refused = (
            f"{path} is not an eocausal OutcomeModel file (written by OutcomeModel.save); "
            "eocausal never loads pickled objects. Refit the model and save it with "
            "OutcomeModel.save."
        )
        try:
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files") or _META_KEY not in data.files:
                    raise InputDataError(refused)
                arrays = {k: data[k] for k in data.files}
        except ValueError as err:  # pickled data, or object arrays inside the archive
            if isinstance(err, InputDataError):
                raise
            raise InputDataError(f"{refused} ({err})") from None
        meta = json.loads(str(arrays[_META_KEY]))
        if meta.get("format") != _FORMAT or meta.get("format_version") != _FORMAT_VERSION:
            raise InputDataError(
                f"{path} has format {meta.get('format')!r} version "
                f"{meta.get('format_version')!r}; this eocausal reads {_FORMAT!r} version "
                f"{_FORMAT_VERSION}. Refit and save the model with this version."
            )
        model = cls(**meta["params"])
        model.model_params_ = {
            k[len(_MODEL_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_MODEL_PREFIX)
        }
        model.n_features_in_ = int(meta["n_features_in"])
        model.oof_prediction_ = arrays["oof_prediction"]
        model.fold_ = arrays["fold"]
        model.is_calibration_ = model.fold_ == -1
        model.metrics_ = pd.DataFrame(meta["metrics"], columns=METRIC_COLUMNS)
        model.calibration_table_ = pd.DataFrame(
            {
                "row": arrays["calibration_row"],
                "group": arrays["calibration_group"],
                "predicted": arrays["calibration_predicted"],
                "truth": arrays["calibration_truth"],
            }
        )
        if model.model == "ridge":
            model.alpha_ = float(model.model_params_["alpha"])
        return model
