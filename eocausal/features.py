"""Multi-scale concatenation: embeddings at several scales (+ covariates) -> X.

Each scale's embedding block is optionally reduced by PCA and standardized,
then the blocks are concatenated in the order of ``scales``, followed by the
tabular covariates (standardized). Every fitted transform is fitted by
:meth:`MultiScaleFeatures.fit` on the units given to it, which must be the
training units only; :meth:`MultiScaleFeatures.transform` never refits.

References
----------
Zhu, Jerzak, Daoud (2025), "Multi-scale representations of satellite imagery
for causal inference", CLeaR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA

from eocausal.embeddings import Embeddings
from eocausal.errors import EmbeddingsError, InputDataError
from eocausal.validation import check_is_fitted

__all__ = ["Features", "MultiScaleFeatures", "align_covariates"]

COVARIATES_BLOCK = "covariates"


@dataclass
class Features:
    """A feature matrix with its provenance.

    Attributes
    ----------
    X : ndarray of shape (n_units, n_features), float64
    columns : list of str, length n_features
        Column names, e.g. ``"s64_pc0"`` or a covariate name.
    blocks : list of str, length n_features
        Per column, the scale it came from, or ``"covariates"``.
    unit_ids : ndarray of shape (n_units,), str
    """

    X: np.ndarray
    columns: list[str]
    blocks: list[str]
    unit_ids: np.ndarray

    def block_columns(self, block: str) -> np.ndarray:
        """Column indices of one block (a scale name or ``"covariates"``)."""
        idx = np.flatnonzero(np.asarray(self.blocks) == block)
        if idx.size == 0:
            raise InputDataError(
                f"Block {block!r} is not in these features; available: {list(dict.fromkeys(self.blocks))}."
            )
        return idx

    def to_frame(self) -> pd.DataFrame:
        """The matrix as a DataFrame indexed by unit id."""
        return pd.DataFrame(
            self.X, columns=self.columns, index=pd.Index(self.unit_ids, name="unit_id")
        )


def align_covariates(covariates: pd.DataFrame, unit_ids: np.ndarray) -> pd.DataFrame:
    """Rows of ``covariates`` for ``unit_ids``: by index when it holds the ids, else by position."""
    if not isinstance(covariates, pd.DataFrame):
        raise InputDataError("`covariates` must be a pandas DataFrame (one row per unit).")
    index = covariates.index.astype(str)
    rows = index.get_indexer(np.asarray(unit_ids).astype(str)) if index.is_unique else None
    if rows is not None and (rows >= 0).all():  # hash lookup: linear in n (np.isin on strings is not)
        out = covariates.iloc[rows].copy()
        out.index = index[rows]
        return out
    if len(covariates) == len(unit_ids):
        return covariates
    raise InputDataError(
        f"`covariates` has {len(covariates)} rows and its index does not hold all "
        f"{len(unit_ids)} embedded unit ids; index it by unit_id or pass one row per unit, "
        "in the order of the embeddings."
    )


class MultiScaleFeatures(BaseEstimator):
    """Concatenate per-scale embedding blocks and covariates into one matrix.

    Parameters
    ----------
    scales : list of str, default=None
        Scales to use, in this order; ``None`` uses all scales of the
        embeddings passed to ``fit``.
    pca_components : int, float, dict of str -> int or None, default=None
        PCA per scale: an int keeps that many components (capped at the block
        width and the number of training units), a float in (0, 1) keeps the
        components explaining that share of variance, a dict sets it per
        scale; ``None`` keeps the raw embedding.
    standardize : bool, default=True
        Scale every column (after PCA) and every covariate to mean 0, sd 1,
        with means and sds from the training units.

    Attributes
    ----------
    scales_ : list of str
    pcas_ : dict of str -> sklearn.decomposition.PCA or None
    mean_, scale_ : ndarray of shape (n_features,)
        Standardization fitted on the training units (0 and 1 when off).
    covariate_columns_ : list of str
    columns_, blocks_ : list of str
    n_features_out_ : int

    Notes
    -----
    For scale :math:`s` with block :math:`E_s \\in \\mathbb{R}^{n \\times D_s}`,
    :math:`X = [\\,z(P_1(E_1)), \\ldots, z(P_S(E_S)), z(C)\\,]`, where
    :math:`P_s` is the PCA projection fitted on training units and :math:`z`
    standardizes with training means and sds. PCA uses scikit-learn's
    ``PCA(svd_solver="full")``, so it is deterministic.

    Examples
    --------
    >>> import numpy as np
    >>> from eocausal.embeddings import Embeddings
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings(["a", "b", "c", "d"], {"s1": rng.normal(size=(4, 3)), "s2": rng.normal(size=(4, 5))})
    >>> MultiScaleFeatures(pca_components=2).fit(emb).transform(emb).X.shape
    (4, 4)
    """

    def __init__(
        self,
        scales: Sequence[str] | None = None,
        *,
        pca_components: float | Mapping[str, int | float | None] | None = None,
        standardize: bool = True,
    ) -> None:
        self.scales = scales
        self.pca_components = pca_components
        self.standardize = standardize

    def _components_for(self, scale: str):
        if isinstance(self.pca_components, Mapping):
            return self.pca_components.get(scale)
        return self.pca_components

    def _covariate_matrix(self, covariates, unit_ids: np.ndarray) -> np.ndarray:
        frame = align_covariates(covariates, unit_ids)
        missing = [c for c in self.covariate_columns_ if c not in frame.columns]
        if missing:
            raise InputDataError(
                f"`covariates` lacks columns {missing} that the features were fitted with."
            )
        frame = frame[self.covariate_columns_]
        non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if non_numeric:
            raise InputDataError(
                f"Covariate columns {non_numeric} are not numeric; one-hot encode them first."
            )
        values = frame.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = unit_ids[bad.any(axis=1)][:5].tolist()
            cols = [self.covariate_columns_[c] for c in np.flatnonzero(bad.any(axis=0))][:5]
            raise InputDataError(
                f"Covariates have NaN or infinite values for units {rows} in columns {cols}; "
                "impute or drop these units first."
            )
        return values

    def fit(
        self, embeddings: Embeddings, covariates: pd.DataFrame | None = None
    ) -> MultiScaleFeatures:
        """Fit PCA and standardization on the given (training) units.

        Parameters
        ----------
        embeddings : Embeddings
            Embeddings of the training units.
        covariates : DataFrame of shape (n_units, n_covariates), default=None
            Numeric covariates, indexed by unit id or in the order of the embeddings.

        Returns
        -------
        self : MultiScaleFeatures
        """
        if not isinstance(embeddings, Embeddings):
            raise InputDataError(
                f"`embeddings` must be an eocausal Embeddings object; got {type(embeddings).__name__}."
            )
        scales = list(embeddings.scales) if self.scales is None else [str(s) for s in self.scales]
        if not scales and covariates is None:
            raise InputDataError("No scales and no covariates: nothing to build features from.")
        unknown = [s for s in scales if s not in embeddings.scales]
        if unknown:
            raise EmbeddingsError(
                f"Scales {unknown} are not in the embeddings; available: {embeddings.scales}."
            )
        n = embeddings.n_units
        self.scales_ = scales
        self.pcas_ = {}
        columns: list[str] = []
        blocks: list[str] = []
        parts = []
        for scale in scales:
            block = embeddings.block(scale).astype(np.float64)
            k = self._components_for(scale)
            if k is None:
                self.pcas_[scale] = None
                cols = [f"{scale}_{j}" for j in range(block.shape[1])]
            else:
                if isinstance(k, float) and not 0.0 < k < 1.0 or isinstance(k, int) and k < 1:
                    raise InputDataError(
                        f"`pca_components` for scale {scale!r} must be an int >= 1 or a float in (0, 1); got {k!r}."
                    )
                if isinstance(k, (int, np.integer)):
                    k = int(min(k, block.shape[1], n))
                pca = PCA(n_components=k, svd_solver="full").fit(block)
                self.pcas_[scale] = pca
                block = pca.transform(block)
                cols = [f"{scale}_pc{j}" for j in range(block.shape[1])]
            parts.append(block)
            columns += cols
            blocks += [scale] * len(cols)
        if covariates is not None:
            if not isinstance(covariates, pd.DataFrame):
                raise InputDataError("`covariates` must be a pandas DataFrame with named columns.")
            self.covariate_columns_ = [str(c) for c in covariates.columns]
            cov = covariates.copy()
            cov.columns = self.covariate_columns_
            parts.append(self._covariate_matrix(cov, embeddings.unit_ids))
            columns += self.covariate_columns_
            blocks += [COVARIATES_BLOCK] * len(self.covariate_columns_)
        else:
            self.covariate_columns_ = []
        X = np.hstack(parts) if parts else np.empty((n, 0))
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            sd = X.std(axis=0)
            self.scale_ = np.where(sd > 0, sd, 1.0)
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        self.columns_ = columns
        self.blocks_ = blocks
        self.n_features_out_ = X.shape[1]
        return self

    def transform(self, embeddings: Embeddings, covariates: pd.DataFrame | None = None) -> Features:
        """Build the feature matrix of any units with the fitted transforms (no refitting).

        Parameters
        ----------
        embeddings : Embeddings
        covariates : DataFrame, default=None
            Required when the features were fitted with covariates.

        Returns
        -------
        Features
            ``X`` of shape (n_units, n_features_out_).
        """
        check_is_fitted(self, "columns_")
        parts = []
        for scale in self.scales_:
            block = embeddings.block(scale).astype(np.float64)
            pca = self.pcas_[scale]
            expected = pca.n_features_in_ if pca is not None else None
            if pca is not None:
                if block.shape[1] != expected:
                    raise EmbeddingsError(
                        f"Scale {scale!r} has width {block.shape[1]} but the features were fitted "
                        f"on width {expected}; use embeddings from the same encoder."
                    )
                block = pca.transform(block)
            parts.append(block)
        if self.covariate_columns_:
            if covariates is None:
                raise InputDataError(
                    f"These features were fitted with covariates {self.covariate_columns_}; pass `covariates`."
                )
            cov = covariates.copy()
            cov.columns = [str(c) for c in cov.columns]
            parts.append(self._covariate_matrix(cov, embeddings.unit_ids))
        X = np.hstack(parts) if parts else np.empty((embeddings.n_units, 0))
        if X.shape[1] != self.n_features_out_:
            raise EmbeddingsError(
                f"Built {X.shape[1]} columns but the features were fitted with {self.n_features_out_}; "
                "the embedding widths differ from those used in fit."
            )
        X = (X - self.mean_) / self.scale_
        return Features(X, list(self.columns_), list(self.blocks_), embeddings.unit_ids.copy())

    def fit_transform(
        self, embeddings: Embeddings, covariates: pd.DataFrame | None = None
    ) -> Features:
        """``fit`` then ``transform`` on the same (training) units."""
        return self.fit(embeddings, covariates).transform(embeddings, covariates)
