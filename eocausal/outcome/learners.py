"""The three outcome learners, fitted on training groups and exported to plain arrays.

Each learner is fitted by ``fit_<name>(X, y, w, groups, *, seed, ...)`` and
comes back as a dict of numpy arrays (its parameters); ``predict(name, params,
X)`` computes the prediction from those arrays alone. A fitted model therefore
saves to ``.npz`` without pickle and predicts the same numbers after loading,
whatever the installed scikit-learn version.

- ``ridge``: features standardized, closed-form ridge for every penalty of the
  grid from one SVD, the penalty chosen by group K-fold inside the training
  groups (the MOSAIKS default, Rolf et al. 2021).
- ``hist_gradient_boosting``: scikit-learn's ``HistGradientBoostingRegressor``,
  early-stopped on held-out training GROUPS; its trees are exported node by node.
- ``mlp``: scikit-learn's ``MLPRegressor`` (two ReLU hidden layers, Adam) on
  standardized features and outcome, one epoch per ``partial_fit``, stopped when
  the loss on held-out training groups has not improved for ``_MLP_PATIENCE``
  epochs; the best epoch's weights are kept.

Early stopping and penalty choice see only the groups they are given, never the
evaluation fold or the calibration split.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.neural_network import MLPRegressor

from eocausal.errors import EstimationError
from eocausal.splitting import fold_splits, make_folds, split_units

__all__ = [
    "DEFAULT_ALPHAS",
    "MODELS",
    "export_hgb",
    "export_mlp",
    "fit_learner",
    "predict",
    "ridge_path",
]

#: Learner names accepted by :class:`~eocausal.outcome.OutcomeModel`.
MODELS = ("ridge", "hist_gradient_boosting", "mlp")

#: Default ridge penalties: half-decade steps from 1e-3 to 1e4 (on standardized features).
DEFAULT_ALPHAS = np.logspace(-3, 4, 15)

# Share of the training groups held out to early-stop the boosting and the MLP.
_VALIDATION_SHARE = 0.2
_HGB_PARAMS = {
    "learning_rate": 0.1,
    "max_iter": 500,
    "n_iter_no_change": 20,
    "early_stopping": True,
}
_MLP_HIDDEN = (128, 64)
_MLP_L2 = 1e-3
_MLP_MAX_EPOCHS = 500
_MLP_PATIENCE = 20
_MLP_TOL = 1e-4


def _ones_if_none(w, n: int) -> np.ndarray:
    return np.ones(n) if w is None else w


def _standardize(X: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and sd of each column (sd 1 for constant columns, as scikit-learn does)."""
    mean = np.average(X, axis=0, weights=w)
    scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=w))
    scale[scale == 0.0] = 1.0
    return mean, scale


def _two_groups(groups: np.ndarray, what: str) -> None:
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise EstimationError(
            f"{what} needs at least 2 training groups, got {n_groups}: one cross-fitting fold "
            "left a single group to train on. Use smaller spatial blocks (more groups), or "
            "lower `n_folds`."
        )


# --------------------------------------------------------------------------- ridge


def ridge_path(X, y, w, alphas) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge on standardized features for every penalty at once.

    Parameters
    ----------
    X : ndarray of shape (n, p)
    y : ndarray of shape (n,)
    w : ndarray of shape (n,) or None
        Sample weights.
    alphas : ndarray of shape (A,)

    Returns
    -------
    mean, scale : ndarray of shape (p,)
        Weighted standardization of ``X``.
    coef : ndarray of shape (p, A)
        Coefficients on the standardized features, one column per penalty.
    intercept : ndarray of shape (A,)

    Notes
    -----
    With :math:`Z = (X - \\bar X) / s`, :math:`\\sqrt{W} Z = U S V^\\top` and
    :math:`\\tilde y = \\sqrt{W}(y - \\bar y)`,

    .. math:: \\hat\\beta(\\alpha) = V\\,\\mathrm{diag}\\!\\Big(\\frac{s_j}{s_j^2 + \\alpha}\\Big)
              U^\\top \\tilde y, \\qquad \\hat b(\\alpha) = \\bar y,

    the minimiser of :math:`\\sum_i w_i (y_i - b - z_i^\\top\\beta)^2 + \\alpha\\|\\beta\\|^2`
    (scikit-learn's ``Ridge`` on ``Z`` with ``sample_weight``).
    """
    w = _ones_if_none(w, len(y))
    mean, scale = _standardize(X, w)
    root_w = np.sqrt(w)
    y_mean = np.average(y, weights=w)
    u, s, vt = np.linalg.svd(((X - mean) / scale) * root_w[:, None], full_matrices=False)
    uty = u.T @ ((y - y_mean) * root_w)
    shrink = s[:, None] / (s[:, None] ** 2 + alphas[None, :])
    coef = vt.T @ (shrink * uty[:, None])
    return mean, scale, coef, np.full(len(alphas), y_mean)


def _fit_ridge(X, y, w, groups, *, seed, alphas, n_folds) -> dict[str, np.ndarray]:
    _two_groups(groups, "Choosing the ridge penalty by group cross-validation")
    k = min(n_folds, len(np.unique(groups)))
    folds = make_folds(len(y), k, clusters=groups, seed=seed)
    w_all = _ones_if_none(w, len(y))
    sse = np.zeros(len(alphas))
    for train, test in fold_splits(folds):
        mean, scale, coef, intercept = ridge_path(X[train], y[train], w_all[train], alphas)
        pred = ((X[test] - mean) / scale) @ coef + intercept
        sse += (w_all[test][:, None] * (y[test][:, None] - pred) ** 2).sum(axis=0)
    best = int(np.argmin(sse))
    mean, scale, coef, intercept = ridge_path(X, y, w_all, alphas[best : best + 1])
    return {
        "mean": mean,
        "scale": scale,
        "coef": coef[:, 0],
        "intercept": np.asarray(intercept[0]),
        "alpha": np.asarray(alphas[best]),
        "cv_mse": sse / w_all.sum(),
    }


def _predict_ridge(params, X) -> np.ndarray:
    # standardization folded into the coefficients: no (m, p) temporary
    coef = params["coef"] / params["scale"]
    return X @ coef + (params["intercept"] - params["mean"] @ coef)


# --------------------------------------------------------------------------- boosting


def _validation_split(groups, seed) -> tuple[np.ndarray, np.ndarray]:
    return split_units(len(groups), test_size=_VALIDATION_SHARE, clusters=groups, seed=seed)


def export_hgb(est: HistGradientBoostingRegressor) -> dict[str, np.ndarray]:
    """The trees of a fitted squared-error ``HistGradientBoostingRegressor`` as flat arrays.

    Nodes of all trees are concatenated; ``left`` and ``right`` index the
    concatenation, ``tree_start`` is each tree's root. Numerical features only.
    """
    trees = [predictors[0].nodes for predictors in est._predictors]
    sizes = np.array([len(t) for t in trees], dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nodes = np.concatenate(trees)
    offset = np.repeat(start, sizes)
    return {
        "baseline": np.asarray(float(np.ravel(est._baseline_prediction)[0])),
        "tree_start": start,
        "value": nodes["value"].astype(np.float64),
        "feature": nodes["feature_idx"].astype(np.int64),
        "threshold": nodes["num_threshold"].astype(np.float64),
        "missing_left": nodes["missing_go_to_left"].astype(bool),
        "is_leaf": nodes["is_leaf"].astype(bool),
        "left": nodes["left"].astype(np.int64) + offset,
        "right": nodes["right"].astype(np.int64) + offset,
    }


def _fit_hgb(X, y, w, groups, *, seed, **_) -> dict[str, np.ndarray]:
    _two_groups(groups, "Early stopping on held-out groups")
    train, val = _validation_split(groups, seed)
    est = HistGradientBoostingRegressor(**_HGB_PARAMS, random_state=seed)
    est.fit(
        X[train],
        y[train],
        sample_weight=None if w is None else w[train],
        X_val=X[val],
        y_val=y[val],
        sample_weight_val=None if w is None else w[val],
    )
    return export_hgb(est)


def _predict_hgb(params, X) -> np.ndarray:
    # Same order of additions as scikit-learn: baseline, then tree by tree.
    out = np.zeros(X.shape[0]) + params["baseline"]
    rows = np.arange(X.shape[0])
    is_leaf, feature, threshold = params["is_leaf"], params["feature"], params["threshold"]
    left, right, missing_left = params["left"], params["right"], params["missing_left"]
    for root in params["tree_start"]:
        node = np.full(X.shape[0], root)
        todo = rows[~is_leaf[node]]
        while todo.size:
            at = node[todo]
            x = X[todo, feature[at]]
            go_left = np.where(np.isnan(x), missing_left[at], x <= threshold[at])
            node[todo] = np.where(go_left, left[at], right[at])
            todo = todo[~is_leaf[node[todo]]]
        out += params["value"][node]
    return out


# --------------------------------------------------------------------------- mlp


def export_mlp(est: MLPRegressor) -> dict[str, np.ndarray]:
    """Weights of a fitted ReLU ``MLPRegressor`` as arrays ``W0, b0, W1, b1, ...``."""
    if est.activation != "relu":
        raise EstimationError(f"Only ReLU MLPs can be exported; got activation={est.activation!r}.")
    params = {}
    for i, (coef, intercept) in enumerate(zip(est.coefs_, est.intercepts_)):
        params[f"W{i}"] = np.array(coef, dtype=np.float64)
        params[f"b{i}"] = np.array(intercept, dtype=np.float64)
    return params


def _forward(params, Z) -> np.ndarray:
    n_layers = sum(1 for key in params if key.startswith("W"))
    a = Z
    for i in range(n_layers):
        a = a @ params[f"W{i}"] + params[f"b{i}"]
        if i < n_layers - 1:
            a = np.maximum(a, 0.0)
    return a[:, 0]


def _fit_mlp(X, y, w, groups, *, seed, **_) -> dict[str, np.ndarray]:
    _two_groups(groups, "Early stopping on held-out groups")
    train, val = _validation_split(groups, seed)
    w_all = _ones_if_none(w, len(y))
    mean, scale = _standardize(X[train], w_all[train])
    y_mean = np.average(y[train], weights=w_all[train])
    y_scale = float(np.sqrt(np.average((y[train] - y_mean) ** 2, weights=w_all[train]))) or 1.0
    z_train, z_val = (X[train] - mean) / scale, (X[val] - mean) / scale
    t_train, t_val = (y[train] - y_mean) / y_scale, (y[val] - y_mean) / y_scale
    est = MLPRegressor(
        hidden_layer_sizes=_MLP_HIDDEN, alpha=_MLP_L2, random_state=seed, shuffle=True
    )
    best, best_loss, stale = None, np.inf, 0
    for _epoch in range(_MLP_MAX_EPOCHS):
        est.partial_fit(z_train, t_train, sample_weight=None if w is None else w_all[train])
        params = export_mlp(est)
        loss = float(np.average((_forward(params, z_val) - t_val) ** 2, weights=w_all[val]))
        if loss < best_loss - _MLP_TOL:
            best, best_loss, stale = params, loss, 0
        else:
            stale += 1
            if stale >= _MLP_PATIENCE:
                break
    return {
        **best,
        "mean": mean,
        "scale": scale,
        "y_mean": np.asarray(y_mean),
        "y_scale": np.asarray(y_scale),
    }


def _predict_mlp(params, X) -> np.ndarray:
    # standardization folded into the first layer: no (m, p) temporary
    first = params["W0"] / params["scale"][:, None]
    folded = {**params, "W0": first, "b0": params["b0"] - params["mean"] @ first}
    return _forward(folded, X) * params["y_scale"] + params["y_mean"]


# --------------------------------------------------------------------------- dispatch

_FIT = {"ridge": _fit_ridge, "hist_gradient_boosting": _fit_hgb, "mlp": _fit_mlp}
_PREDICT = {"ridge": _predict_ridge, "hist_gradient_boosting": _predict_hgb, "mlp": _predict_mlp}


def fit_learner(
    name: str, X, y, w, groups, *, seed: int, alphas: np.ndarray, n_folds: int
) -> dict[str, np.ndarray]:
    """Fit learner ``name`` on (X, y, w) and return its parameters as arrays.

    ``groups`` are the training units' group labels; penalty choice (ridge) and
    early stopping (the others) hold out whole groups. ``alphas`` and
    ``n_folds`` are used by ridge only.
    """
    return _FIT[name](X, y, w, groups, seed=seed, alphas=alphas, n_folds=n_folds)


def predict(name: str, params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Prediction of learner ``name`` with parameters ``params`` at the rows of ``X``."""
    return _PREDICT[name](params, X)
