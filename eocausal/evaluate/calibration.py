"""Calibration test and best linear projection of the CATE, as in grf.

Both are weighted least-squares fits with cluster-robust HC3 standard errors,
computed as R's ``sandwich::vcovCL(fit, cluster = clusters, type = "HC3")``
does for an ``lm`` fit (the estimator grf calls), and t-tests with the
residual degrees of freedom ``n - k`` as ``lmtest::coeftest`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from eocausal.errors import EstimationError, InputDataError
from eocausal.validation import (
    check_clusters,
    check_outcome,
    check_propensity,
    check_sample_weight,
    check_treatment,
    cluster_codes,
)

__all__ = [
    "BLPResult",
    "CalibrationResult",
    "best_linear_projection",
    "calibration_test",
    "cluster_robust_hc3",
]


def _table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in table.to_dict(orient="records"):
        out.append({k: (v if isinstance(v, str) else float(v)) for k, v in row.items()})
    return out


@dataclass
class CalibrationResult:
    """grf's ``test_calibration``: best linear fit of the effect on the predictions.

    Attributes
    ----------
    table : pandas.DataFrame
        Rows ``mean_prediction`` and ``differential_prediction``; columns
        ``term``, ``estimate``, ``std_err``, ``t_value``, ``p_value``. The
        p-values are ONE-SIDED (H1: coefficient > 0), as grf reports them.
    n : int
    n_clusters : int
    df : int
        Residual degrees of freedom of the t-tests (``n - 2``).
    """

    table: pd.DataFrame
    n: int
    n_clusters: int
    df: int

    @property
    def mean_prediction(self) -> float:
        """Coefficient on the mean prediction (1 = the average effect is right)."""
        return float(self.table.loc[0, "estimate"])

    @property
    def differential_prediction(self) -> float:
        """Coefficient on the differential prediction (1 = heterogeneity well calibrated)."""
        return float(self.table.loc[1, "estimate"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "table": _table_records(self.table),
            "n": int(self.n),
            "n_clusters": int(self.n_clusters),
            "df": int(self.df),
            "p_values": "one-sided (H1: coefficient > 0)",
        }


@dataclass
class BLPResult:
    """Best linear projection of the CATE on covariates ``A`` (grf).

    Attributes
    ----------
    table : pandas.DataFrame
        One row per term (``intercept`` first); columns ``term``, ``estimate``,
        ``std_err``, ``t_value``, ``p_value`` (two-sided), ``ci_lower``,
        ``ci_upper`` (95% t intervals).
    n : int
    n_clusters : int
    df : int
        Residual degrees of freedom (``n - k``).
    """

    table: pd.DataFrame
    n: int
    n_clusters: int
    df: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "table": _table_records(self.table),
            "n": int(self.n),
            "n_clusters": int(self.n_clusters),
            "df": int(self.df),
        }


def cluster_robust_hc3(
    X: np.ndarray, residuals: np.ndarray, weights: np.ndarray, cluster_codes: np.ndarray | None
) -> np.ndarray:
    """Cluster-robust HC3 covariance of weighted least squares, as ``sandwich::vcovCL``.

    Parameters
    ----------
    X : ndarray of shape (n, k)
        Design matrix.
    residuals : ndarray of shape (n,)
        Residuals ``y - X beta`` of the weighted fit.
    weights : ndarray of shape (n,)
        Positive regression weights.
    cluster_codes : ndarray of shape (n,) of int, or None
        Cluster of each unit; ``None`` = each unit its own cluster.

    Returns
    -------
    ndarray of shape (k, k)

    Notes
    -----
    With :math:`A = (X^\\top W X)^{-1}` and, per cluster :math:`g`,
    :math:`H_{gg} = X_g A X_g^\\top W_g`,

    .. math::

        \\hat V = A \\Big[\\sum_g u_g u_g^\\top\\Big] A, \\qquad
        u_g = X_g^\\top (I - H_{gg})^{-1} W_g e_g .

    Without clusters this is the usual HC3, :math:`u_i = x_i w_i e_i / (1 - h_i)`.
    sandwich multiplies by :math:`(G - 1)/G` and then by its cluster adjustment
    :math:`G/(G - 1)`, which cancel. :math:`(I - H_{gg})^{-1}` is applied with
    the Woodbury identity, so large clusters cost :math:`O(n_g k^2)`.

    References
    ----------
    Bell and McCaffrey (2002); Zeileis, Koell and Graham (2020), "Various
    versatile variances", Journal of Statistical Software 95(1).
    """
    k = X.shape[1]
    XtWX = X.T @ (X * weights[:, None])
    A = np.linalg.inv(XtWX)
    we = weights * residuals
    if cluster_codes is None or np.unique(cluster_codes).size == X.shape[0]:
        leverage = weights * np.einsum("ij,jk,ik->i", X, A, X)
        if np.any(leverage >= 1.0 - 1e-10):
            raise EstimationError(
                "Some units have leverage 1, so HC3 standard errors are undefined; "
                "remove duplicated or degenerate regressors."
            )
        U = X * (we / (1.0 - leverage))[:, None]
    else:
        order = np.argsort(cluster_codes, kind="stable")
        bounds = np.flatnonzero(np.diff(cluster_codes[order])) + 1
        U = np.empty((bounds.size + 1, k))
        eye = np.eye(k)
        for g, rows in enumerate(np.split(order, bounds)):
            Xg, wg, rg = X[rows], weights[rows], we[rows]
            XtW = Xg.T * wg
            # (I - Xg A Xg' Wg)^{-1} rg = rg + Xg A (I - Xg' Wg Xg A)^{-1} Xg' Wg rg
            inner = eye - XtW @ Xg @ A
            try:
                adjusted = rg + Xg @ (A @ np.linalg.solve(inner, XtW @ rg))
            except np.linalg.LinAlgError:
                raise EstimationError(
                    "A cluster's block of the hat matrix is singular, so clustered HC3 "
                    "standard errors are undefined; use coarser regressors or more clusters."
                ) from None
            U[g] = Xg.T @ adjusted
    return A @ (U.T @ U) @ A


def _wls_table(
    y: np.ndarray,
    X: np.ndarray,
    weights: np.ndarray,
    codes: np.ndarray | None,
    names: list[str],
    one_sided: bool,
) -> tuple[pd.DataFrame, int]:
    n, k = X.shape
    if n <= k:
        raise InputDataError(f"Need more units than regressors: got {n} units and {k} regressors.")
    sw = np.sqrt(weights)
    beta, _, rank, _ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    if rank < k:
        raise EstimationError(
            f"The regressors {names} are collinear (rank {rank} < {k}); the projection is "
            "not identified. Drop constant or duplicated columns."
        )
    vcov = cluster_robust_hc3(X, y - X @ beta, weights, codes)
    se = np.sqrt(np.diag(vcov))
    df = n - k
    t_value = beta / se
    two_sided = 2.0 * student_t.sf(np.abs(t_value), df)
    table = pd.DataFrame({"term": names, "estimate": beta, "std_err": se, "t_value": t_value})
    if one_sided:
        # grf: ifelse(t < 0, 1 - p / 2, p / 2) with p the two-sided p-value.
        table["p_value"] = np.where(t_value < 0, 1.0 - two_sided / 2.0, two_sided / 2.0)
    else:
        table["p_value"] = two_sided
        half = student_t.ppf(0.975, df) * se
        table["ci_lower"] = beta - half
        table["ci_upper"] = beta + half
    return table, df


def _weights_and_clusters(sample_weight, clusters, n):
    weights = check_sample_weight(sample_weight, n=n)
    weights = np.ones(n) if weights is None else weights
    cl = check_clusters(clusters, n=n)
    if cl is None:
        return weights, None, n
    codes, n_clusters = cluster_codes(cl, n)
    if n_clusters < 2:
        raise InputDataError("Cluster-robust standard errors need at least 2 clusters; got 1.")
    return weights, codes, n_clusters


def calibration_test(
    Y,
    T,
    outcome_hat,
    propensity_hat,
    effect_hat,
    *,
    clusters=None,
    sample_weight=None,
) -> CalibrationResult:
    """Omnibus calibration test of CATE predictions (grf's ``test_calibration``).

    Parameters
    ----------
    Y : array-like of shape (n,)
        Outcomes.
    T : array-like of shape (n,)
        Binary treatment (0/1).
    outcome_hat : array-like of shape (n,)
        Out-of-fold estimates of :math:`m(x) = E[Y \\mid X = x]`.
    propensity_hat : float or array-like of shape (n,)
        Out-of-fold propensities :math:`e(x)` (or the known assignment probability).
    effect_hat : array-like of shape (n,)
        Out-of-fold (held-out) CATE predictions :math:`\\hat\\tau(x)`.
    clusters : array-like of shape (n,), default=None
    sample_weight : array-like of shape (n,), default=None

    Returns
    -------
    CalibrationResult

    Notes
    -----
    With :math:`\\bar\\tau` the weighted mean of :math:`\\hat\\tau`, fit by
    weighted least squares without intercept

    .. math::

        Y_i - \\hat m_i = \\alpha\\, (W_i - \\hat e_i)\\bar\\tau
            + \\beta\\, (W_i - \\hat e_i)(\\hat\\tau_i - \\bar\\tau) + \\varepsilon_i .

    :math:`\\alpha = 1` means the average prediction is right; :math:`\\beta = 1`
    means the heterogeneity is well calibrated, and a significantly positive
    :math:`\\beta` rejects "no heterogeneity". Standard errors are
    cluster-robust HC3; the p-values are one-sided, as in grf.

    References
    ----------
    Chernozhukov, Demirer, Duflo and Fernandez-Val, "Generic machine learning
    inference on heterogeneous treatment effects in randomized experiments";
    grf's ``test_calibration``.
    """
    y = check_outcome(Y, name="Y")
    n = y.size
    w_treat = check_treatment(T, n=n)
    m_hat = check_outcome(outcome_hat, n=n, name="outcome_hat")
    e_hat = check_propensity(propensity_hat, n=n, name="propensity_hat")
    tau_hat = check_outcome(effect_hat, n=n, name="effect_hat")
    weights, codes, n_clusters = _weights_and_clusters(sample_weight, clusters, n)
    mean_tau = float(np.average(tau_hat, weights=weights))
    resid_w = w_treat - e_hat
    X = np.column_stack([resid_w * mean_tau, resid_w * (tau_hat - mean_tau)])
    if not np.any(X[:, 1] != 0):
        raise EstimationError(
            "`effect_hat` is constant, so the differential prediction term is zero and "
            "the calibration test is undefined."
        )
    if mean_tau == 0.0:
        raise EstimationError(
            "`effect_hat` averages exactly 0, so the mean prediction term is zero and "
            "the calibration test is undefined."
        )
    table, df = _wls_table(
        y - m_hat, X, weights, codes, ["mean_prediction", "differential_prediction"], True
    )
    return CalibrationResult(table=table, n=n, n_clusters=n_clusters, df=df)


def best_linear_projection(
    dr_scores,
    A=None,
    *,
    clusters=None,
    sample_weight=None,
    feature_names=None,
) -> BLPResult:
    """Best linear projection of the CATE on covariates (grf's ``best_linear_projection``).

    Parameters
    ----------
    dr_scores : array-like of shape (n,)
        Doubly robust scores :math:`\\Gamma_i` (out-of-fold).
    A : array-like of shape (n, p) or (n,), or DataFrame, default=None
        Covariates to project on; ``None`` fits the intercept only, which is
        the AIPW average treatment effect.
    clusters : array-like of shape (n,), default=None
    sample_weight : array-like of shape (n,), default=None
    feature_names : list of str, default=None
        Names of the columns of ``A`` (DataFrame columns, else ``A1 .. Ap``).

    Returns
    -------
    BLPResult

    Notes
    -----
    Weighted least squares :math:`\\Gamma_i = \\beta_0 + A_i^\\top \\beta + \\varepsilon_i`
    with cluster-robust HC3 standard errors and two-sided t-tests on ``n - k``
    degrees of freedom, as grf computes it with ``lm`` and ``sandwich::vcovCL``.

    References
    ----------
    Semenova and Chernozhukov (2021), "Debiased machine learning of conditional
    average treatment effects and other causal functions", Econometrics Journal.
    """
    y = check_outcome(dr_scores, name="dr_scores")
    n = y.size
    weights, codes, n_clusters = _weights_and_clusters(sample_weight, clusters, n)
    names = ["intercept"]
    if A is None:
        X = np.ones((n, 1))
    else:
        columns = list(A.columns) if isinstance(A, pd.DataFrame) else None
        arr = np.asarray(A, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[0] != n:
            raise InputDataError(
                f"`A` must have one row per unit (got shape {arr.shape}, expected ({n}, p))."
            )
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            raise InputDataError(
                f"`A` has NaN or infinite values in rows {bad[:5].tolist()}; impute or drop them."
            )
        if feature_names is not None:
            if len(feature_names) != arr.shape[1]:
                raise InputDataError(
                    f"`feature_names` has {len(feature_names)} names for {arr.shape[1]} columns of `A`."
                )
            columns = list(feature_names)
        if columns is None:
            columns = [f"A{j + 1}" for j in range(arr.shape[1])]
        names += [str(c) for c in columns]
        X = np.column_stack([np.ones(n), arr])
    table, df = _wls_table(y, X, weights, codes, names, False)
    return BLPResult(table=table, n=n, n_clusters=n_clusters, df=df)
