"""The map artifact: one COG, its calibration split and its metadata, in one folder.

A map is reused as the outcome of many trials, each of which corrects the
map's shrinkage on labelled locations the map model never saw (METHODS.md
sections 5 and 8). The artifact keeps them together, in formats anyone can
read and no one can execute (no pickle)::

    map.tif            the Cloud-Optimized GeoTIFF (copied in unless already in the folder)
    calibration.csv    the calibration split: predicted, truth (and any other columns given)
    metadata.json      format, file names, the COG's SHA-256 and the caller's metadata

``metadata.json`` is written last, so a folder holding it holds a whole artifact.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eocausal.atomic import atomic_path, file_sha256, json_default, write_csv, write_json
from eocausal.errors import InputDataError

__all__ = ["ARTIFACT_FORMAT", "MapArtifact"]

ARTIFACT_FORMAT = "eocausal-map-artifact"
_VERSION = 1
_METADATA = "metadata.json"
_CALIBRATION = "calibration.csv"
_COG = "map.tif"
_REQUIRED = ("predicted", "truth")


def _check_calibration(table: Any, name: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise InputDataError(
            f"`{name}` must be a pandas DataFrame with columns predicted, truth; got {type(table).__name__}."
        )
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise InputDataError(
            f"`{name}` lacks column(s) {missing}; it has {list(table.columns)}. Pass the calibration "
            "split with the map's prediction ('predicted') and the label ('truth') of each location."
        )
    if len(table) == 0:
        raise InputDataError(
            f"`{name}` is empty; the corrections need labelled calibration locations."
        )
    for col in _REQUIRED:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise InputDataError(
                f"`{name}` column {col!r} has missing or non-numeric values in rows {bad[:5].tolist()}"
                f"{' and more' if bad.size > 5 else ''}; drop those locations first."
            )
    return table


@dataclass
class MapArtifact:
    """A map (COG), its calibration split and its metadata.

    Parameters
    ----------
    cog_path, calibration_path, metadata_path : Path
        The three files; use :meth:`write` and :meth:`read` rather than this constructor.

    Attributes
    ----------
    calibration : DataFrame
        The calibration split: columns ``predicted``, ``truth`` (and any others written).
    metadata : dict
        The caller's metadata (model, key, metrics, grid, ...).
    cog_sha256 : str
        SHA-256 of the COG when the artifact was written.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np, rasterio
    >>> from rasterio.transform import from_origin
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with rasterio.open(folder / "m.tif", "w", driver="GTiff", width=2, height=2, count=1,
    ...                    dtype="float32", crs="EPSG:32636", transform=from_origin(0, 2, 1, 1)) as dst:
    ...     dst.write(np.ones((1, 2, 2), dtype="float32"))
    >>> table = pd.DataFrame({"predicted": [0.1, 0.4], "truth": [0.0, 0.5]})
    >>> art = MapArtifact.write(folder / "art", cog_path=folder / "m.tif", calibration_table=table,
    ...                         metadata={"model": "ridge"})
    >>> MapArtifact.read(folder / "art").metadata
    {'model': 'ridge'}
    """

    cog_path: Path
    calibration_path: Path
    metadata_path: Path
    calibration: pd.DataFrame = field(default=None, repr=False)  # type: ignore[assignment]
    metadata: dict = field(default_factory=dict)
    cog_sha256: str = ""

    @classmethod
    def write(
        cls,
        folder: str | os.PathLike,
        *,
        cog_path: str | os.PathLike,
        calibration_table: pd.DataFrame,
        metadata: Mapping[str, Any],
    ) -> MapArtifact:
        """Write an artifact into ``folder``: the COG (copied unless already there), the table, the metadata.

        Parameters
        ----------
        folder : path-like
            Created if missing.
        cog_path : path-like
            The map; copied to ``folder/map.tif`` unless it already lies in ``folder``.
        calibration_table : DataFrame
            Columns ``predicted`` and ``truth`` (finite), one row per calibration
            location; other columns (``row``, ``group``, coordinates) are kept.
        metadata : mapping
            JSON-serialisable description of the map (model, key, metrics, ...).
        """
        folder = Path(folder)
        cog_path = Path(cog_path)
        if not cog_path.is_file():
            raise InputDataError(
                f"`cog_path` {os.fspath(cog_path)!r} does not exist; run the map job first."
            )
        table = _check_calibration(calibration_table, "calibration_table")
        if not isinstance(metadata, Mapping):
            raise InputDataError(f"`metadata` must be a dict; got {type(metadata).__name__}.")
        try:
            user = json.loads(json.dumps(dict(metadata), allow_nan=True, default=json_default))
        except TypeError as exc:
            raise InputDataError(
                f"`metadata` must be JSON-serialisable ({exc}); pass plain numbers, strings, lists, dicts."
            ) from exc
        folder.mkdir(parents=True, exist_ok=True)
        if cog_path.resolve().parent == folder.resolve():
            cog = cog_path.resolve()
        else:
            cog = folder / _COG
            with atomic_path(cog) as tmp:
                shutil.copyfile(cog_path, tmp)
        calibration = write_csv(table, folder / _CALIBRATION)
        digest = file_sha256(cog)
        record = {
            "format": ARTIFACT_FORMAT,
            "version": _VERSION,
            "cog": cog.name,
            "cog_sha256": digest,
            "calibration": calibration.name,
            "n_calibration": len(table),
            "metadata": user,
        }
        meta_path = write_json(record, folder / _METADATA)
        return cls(cog, calibration, meta_path, table.reset_index(drop=True), user, digest)

    @classmethod
    def read(cls, folder: str | os.PathLike) -> MapArtifact:
        """Read the artifact written by :meth:`write` in ``folder``."""
        folder = Path(folder)
        meta_path = folder / _METADATA
        if not meta_path.is_file():
            raise InputDataError(
                f"`folder` {os.fspath(folder)!r} holds no map artifact ({_METADATA} missing); "
                "write one with MapArtifact.write or `eocausal map`."
            )
        try:
            record = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputDataError(
                f"{os.fspath(meta_path)!r} is not valid JSON ({exc}); write the artifact again."
            ) from exc
        if not isinstance(record, dict) or record.get("format") != ARTIFACT_FORMAT:
            raise InputDataError(
                f"{os.fspath(meta_path)!r} is not an eocausal map artifact (format {record.get('format') if isinstance(record, dict) else None!r})."
            )
        if record.get("version") != _VERSION:
            raise InputDataError(
                f"{os.fspath(meta_path)!r} has artifact version {record.get('version')!r}; this eocausal reads "
                f"version {_VERSION}. Write the map again with this version."
            )
        cog = folder / record["cog"]
        calibration_path = folder / record["calibration"]
        for p in (cog, calibration_path):
            if not p.is_file():
                raise InputDataError(
                    f"map artifact {os.fspath(folder)!r}: {p.name} is missing; write the artifact again."
                )
        table = _check_calibration(
            pd.read_csv(calibration_path), f"{calibration_path.name} in {os.fspath(folder)!r}"
        )
        return cls(
            cog,
            calibration_path,
            meta_path,
            table,
            record.get("metadata", {}),
            record.get("cog_sha256", ""),
        )

    def calibration_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Predictions, truths and spatial blocks of the calibration split.

        The blocks are the ``group`` column (the blocks ``eocausal map`` held
        out), for calibration bootstraps that draw whole blocks; None without
        that column or with a single block.
        """
        table = _check_calibration(self.calibration, f"calibration table {os.fspath(self.calibration_path)!r}")
        groups = table["group"].astype(str).to_numpy() if "group" in table.columns else None
        if groups is not None and len(np.unique(groups)) < 2:
            groups = None  # one block: nothing to resample as a whole
        return (
            pd.to_numeric(table["predicted"]).to_numpy(dtype=np.float64),
            pd.to_numeric(table["truth"]).to_numpy(dtype=np.float64),
            groups,
        )

    def verify(self) -> bool:
        """True when the COG's SHA-256 is still the one recorded when the artifact was written."""
        return file_sha256(self.cog_path) == self.cog_sha256
