"""Study units: load and validate the table of units once.

A study unit is one row: an identifier, a location (a point with a CRS) or an
``image_key`` naming a pre-cut chip, and optionally a treatment, an outcome,
covariates, a cluster and a weight. Every later stage trusts what
:class:`StudyUnits` holds, so all checks happen here, with messages that name
the offending rows and columns and say how to fix them.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from pyproj import CRS
from pyproj.exceptions import CRSError

from eocausal.errors import UnitsError

__all__ = ["SUPPORTED_UNITS_SUFFIXES", "StudyUnits", "check_units_file", "read_units_table"]

_LON_NAMES = ("lon", "longitude", "lng", "long", "x")
_LAT_NAMES = ("lat", "latitude", "y")
_MAX_LISTED = 10


def _listing(values: Sequence[Any]) -> str:
    """Format at most ``_MAX_LISTED`` values, then a count of the rest."""
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    if len(values) > _MAX_LISTED:
        shown += f", ... ({len(values) - _MAX_LISTED} more)"
    return shown


def _rows(mask: np.ndarray, frame: pd.DataFrame) -> str:
    """Name the rows of ``frame`` selected by ``mask`` by their index labels."""
    return _listing(frame.index[np.asarray(mask)].tolist())


def _require_columns(frame: pd.DataFrame, columns: dict[str, str | None]) -> None:
    missing = {
        arg: col for arg, col in columns.items() if col is not None and col not in frame.columns
    }
    if missing:
        detail = ", ".join(f"{arg}={col!r}" for arg, col in missing.items())
        raise UnitsError(
            f"Column(s) not found in the units table: {detail}. "
            f"Available columns: {_listing(list(frame.columns))}. Fix the column names in the call or config."
        )


def _parse_crs(crs: Any, what: str) -> CRS:
    try:
        return CRS.from_user_input(crs)
    except CRSError as exc:
        raise UnitsError(
            f"{what} {crs!r} is not a valid CRS ({exc}); give e.g. 'EPSG:4326'."
        ) from exc


def _unit_ids(frame: pd.DataFrame, id_col: str) -> np.ndarray:
    raw = frame[id_col]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise UnitsError(
            f"Column {id_col!r} has missing unit ids in rows {_rows(missing, frame)}; every unit needs an id."
        )
    # Integral floats (1.0) become "1", so ids read from CSV and Parquet agree.
    if pd.api.types.is_float_dtype(raw) and np.all(np.mod(raw.to_numpy(), 1) == 0):
        raw = raw.astype("int64")
    ids = raw.astype(str).to_numpy(dtype=object).astype(str)
    values, counts = np.unique(ids, return_counts=True)
    dup = values[counts > 1]
    if dup.size:
        rows = _rows(np.isin(ids, dup), frame)
        raise UnitsError(
            f"Column {id_col!r} must hold unique unit ids; duplicated: {_listing(dup.tolist())} (rows {rows}). "
            "Deduplicate the table or choose another id column."
        )
    return ids


def _treatment(frame: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(frame[col], errors="coerce")
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
        raise UnitsError(
            f"Treatment column {col!r} must be binary 0/1 without missing values; rows {_rows(bad, frame)} "
            f"hold {_listing(frame[col][bad].tolist())}. Recode the treatment as 0/1."
        )
    return values.to_numpy().astype(np.int64)


def _numeric(frame: pd.DataFrame, col: str, what: str) -> np.ndarray:
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise UnitsError(
            f"{what} column {col!r} must be numeric and finite; rows {_rows(bad, frame)} hold "
            f"{_listing(frame[col][bad].tolist())}. Fill or drop those rows explicitly before loading."
        )
    return values


def _find_column(frame: pd.DataFrame, names: Sequence[str]) -> str | None:
    lower = {str(c).lower(): c for c in frame.columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


_TEXT_SUFFIXES = (".csv", ".txt", ".tsv")
_PARQUET_SUFFIXES = (".parquet", ".geoparquet", ".pq")
_VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".gdb")
#: file name endings :func:`read_units_table` reads
SUPPORTED_UNITS_SUFFIXES = _TEXT_SUFFIXES + _PARQUET_SUFFIXES + _VECTOR_SUFFIXES
_CHUNK_BYTES = 1 << 20


def _first_line(exc: BaseException) -> str:
    """The first line of a reader's message, at most 200 characters."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    line = lines[0].rstrip(".")
    return line if len(line) <= 200 else line[:199] + "…"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_text(path: Path) -> None:
    """A ``.csv``/``.txt``/``.tsv`` file: UTF-8 throughout, a comma-separated header, rows after it.

    Decoded in chunks with an incremental decoder, so the offset of a bad byte is exact
    and a large file is never held whole.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines: list[str] = []  # the first two non-blank lines: the header and a row
    pending, offset = "", 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                byte = err.object[err.start : err.start + 1].hex()
                raise UnitsError(
                    f"Units file {str(path)!r} is not UTF-8 text: byte 0x{byte} at offset {offset + err.start} "
                    "cannot be decoded. Save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)."
                ) from None
            offset += len(chunk)
            if len(lines) < 2:
                *complete, pending = (pending + text).split("\n")
                lines += [line for line in complete if line.strip()][: 2 - len(lines)]
    if len(lines) < 2 and pending.strip():
        lines.append(pending)
    if not lines:
        raise UnitsError(f"Units file {str(path)!r} holds only blank lines; give a header and one row per unit.")
    header = lines[0].strip()
    if path.suffix.lower() != ".tsv" and "," not in header:
        if ";" in header:
            raise UnitsError(
                f"Units file {str(path)!r} looks like a semicolon-separated file (header {_clip(header)!r}); "
                "save it with commas as the separator."
            )
        if "\t" in header:
            raise UnitsError(
                f"Units file {str(path)!r} looks tab-separated (header {_clip(header)!r}); "
                "save it with commas, or name it .tsv."
            )
    if len(lines) < 2:
        raise UnitsError(f"Units file {str(path)!r} has a header but no rows; give one row per unit.")


def check_units_file(path: str | os.PathLike) -> Path:
    """Check a units file before it is parsed; return its path.

    The file must exist, have a supported name ending (:data:`SUPPORTED_UNITS_SUFFIXES`)
    and not be empty; a ``.csv``/``.txt``/``.tsv`` file must be UTF-8 throughout, hold at
    least one row after its header, and (``.csv``/``.txt``) use commas. Cheap enough for
    config validation: a text file is decoded in chunks and never parsed.

    Raises
    ------
    UnitsError
        Naming the file, what is wrong and the fix (e.g. a semicolon-separated CSV).
    """
    path = Path(path)
    if not path.exists():
        raise UnitsError(f"Units file not found: {path}. Check the path in the config.")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_UNITS_SUFFIXES:
        raise UnitsError(
            f"Units file {str(path)!r} has the unsupported ending {path.suffix or '(none)'!r}; "
            f"save it as one of {', '.join(SUPPORTED_UNITS_SUFFIXES)}."
        )
    if suffix == ".gdb":  # a FileGDB is a folder
        return path
    if not path.is_file():
        raise UnitsError(f"Units file {str(path)!r} is a folder, not a file; name the table file inside it.")
    if path.stat().st_size == 0:
        raise UnitsError(f"Units file {str(path)!r} is empty (0 bytes); give a table with one row per unit.")
    if suffix in _TEXT_SUFFIXES:
        _check_text(path)
    return path


def _ids_as_text(frame: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """The id column as text (integral floats as integers); missing ids stay missing."""
    if id_col not in frame.columns:
        return frame
    raw = frame[id_col]
    present = raw.notna()
    if pd.api.types.is_float_dtype(raw) and np.all(np.mod(raw[present].to_numpy(), 1) == 0):
        raw = raw.astype("Int64")
    text = pd.Series([str(v) if ok else None for v, ok in zip(raw, present)], index=frame.index, dtype=object)
    return frame.assign(**{id_col: text})


def read_units_table(path: str | os.PathLike, *, id_col: str = "unit_id") -> pd.DataFrame | gpd.GeoDataFrame:
    """Read the table of units from a file, with the id column as text.

    Parameters
    ----------
    path : path-like
        ``.csv``/``.txt`` (comma-separated, UTF-8) or ``.tsv``, with coordinates in
        columns; ``.parquet``/``.geoparquet``/``.pq`` (GeoParquet, or plain Parquet with
        coordinate columns); or a vector file geopandas reads (``.gpkg``, ``.geojson``,
        ``.json``, ``.shp``, ``.fgb``, ``.gml``, ``.kml``, ``.gdb``).
    id_col : str, default="unit_id"
        The id column, read as text so that "007" stays "007" (from binary formats,
        integers and integral floats become their integer digits: 7.0 -> "7").

    Returns
    -------
    DataFrame or GeoDataFrame
        One row per line of the file; a GeoDataFrame when the file holds geometry.
        Nothing else is checked: :meth:`StudyUnits.from_frame` checks the content.

    Raises
    ------
    UnitsError
        A missing, empty, unreadable or non-UTF-8 file, an unsupported ending, a
        semicolon- or tab-separated ``.csv``, or a table without rows; the message
        names the file.
    """
    path = check_units_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix in _TEXT_SUFFIXES:
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(path, sep=sep, dtype={id_col: str}, encoding="utf-8-sig")
        elif suffix in _PARQUET_SUFFIXES:
            try:
                frame = gpd.read_parquet(path)
            except ValueError:  # plain Parquet without geo metadata
                frame = pd.read_parquet(path)
            frame = _ids_as_text(frame, id_col)
        else:
            frame = _ids_as_text(gpd.read_file(path), id_col)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UnitsError(
            f"Could not read units file {str(path)!r}: {_first_line(exc)}. Check that it is a valid "
            f"{suffix} file (open it in a GIS or spreadsheet program and save it again)."
        ) from exc
    if len(frame) == 0:
        raise UnitsError(f"Units file {str(path)!r} has no rows; give one row per unit.")
    return frame


class StudyUnits:
    """A validated table of study units.

    Build it with :meth:`from_frame` or :meth:`read`; the constructor is not
    meant to be called directly.

    Attributes
    ----------
    unit_id : ndarray of str, shape (n_units,)
        Unique unit identifiers (always strings).
    treatment : ndarray of int, shape (n_units,), or None
        Binary treatment 0/1.
    outcome : ndarray of float, shape (n_units,), or None
    covariates : DataFrame of shape (n_units, n_covariates), or None
        Index is ``unit_id``.
    clusters : ndarray of shape (n_units,), or None
    weights : ndarray of float, shape (n_units,), or None
        Strictly positive.
    image_key : ndarray of shape (n_units,), or None
        Keys of pre-cut chips (many units may share one key).
    gdf : GeoDataFrame or None
        Point geometry with a CRS, index ``unit_id``; None for image-key-only units.
    crs : pyproj.CRS or None
    n_units : int
    """

    def __init__(
        self,
        *,
        unit_id: np.ndarray,
        treatment: np.ndarray | None,
        outcome: np.ndarray | None,
        covariates: pd.DataFrame | None,
        clusters: np.ndarray | None,
        weights: np.ndarray | None,
        image_key: np.ndarray | None,
        gdf: gpd.GeoDataFrame | None,
    ) -> None:
        self.unit_id = unit_id
        self.treatment = treatment
        self.outcome = outcome
        self.covariates = covariates
        self.clusters = clusters
        self.weights = weights
        self.image_key = image_key
        self.gdf = gdf

    @property
    def crs(self) -> CRS | None:
        """CRS of the unit points (None for image-key-only units)."""
        return None if self.gdf is None else CRS.from_user_input(self.gdf.crs)

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.unit_id.shape[0])

    def __len__(self) -> int:
        return self.n_units

    def __repr__(self) -> str:
        parts = [f"n_units={self.n_units}"]
        for name in ("treatment", "outcome", "covariates", "clusters", "weights", "image_key"):
            if getattr(self, name) is not None:
                parts.append(name)
        if self.gdf is not None:
            parts.append(f"crs={self.crs.to_string()}")
        return f"StudyUnits({', '.join(parts)})"

    # ------------------------------------------------------------------ build
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        id_col: str = "unit_id",
        treatment_col: str | None = None,
        outcome_col: str | None = None,
        covariate_cols: Sequence[str] | None = None,
        cluster_col: str | None = None,
        weight_col: str | None = None,
        lon_col: str | None = None,
        lat_col: str | None = None,
        crs: Any = None,
        image_key_col: str | None = None,
    ) -> StudyUnits:
        """Validate a table of units.

        Parameters
        ----------
        frame : DataFrame or GeoDataFrame
            One row per unit. A GeoDataFrame must hold point geometry and a CRS.
        id_col : str, default="unit_id"
            Column with unique unit ids (converted to strings).
        treatment_col, outcome_col, cluster_col, weight_col : str, optional
            Binary 0/1 treatment, numeric outcome, cluster label, positive weight.
        covariate_cols : list of str, optional
            Tabular covariates (numeric, finite).
        lon_col, lat_col : str, optional
            Coordinate columns of a plain DataFrame. When both are None, columns
            named lon/longitude/x and lat/latitude/y are used if present.
        crs : CRS-like, optional
            CRS of the coordinate columns; defaults to EPSG:4326 for lon/lat
            columns. For a GeoDataFrame it overrides a missing CRS only.
        image_key_col : str, optional
            Column naming each unit's pre-cut chip.

        Returns
        -------
        StudyUnits

        Raises
        ------
        UnitsError
            Missing columns, duplicated or missing ids, non-binary treatment,
            non-finite numbers, missing or non-point geometry, no CRS, or
            coordinates that look like swapped lat/lon.
        """
        if not isinstance(frame, pd.DataFrame):
            raise UnitsError(
                f"Units must be a pandas DataFrame or GeoDataFrame, got {type(frame).__name__}."
            )
        if len(frame) == 0:
            raise UnitsError("The units table is empty; give at least one unit.")
        covariate_cols = list(covariate_cols or [])
        _require_columns(
            frame,
            {
                "id_col": id_col,
                "treatment_col": treatment_col,
                "outcome_col": outcome_col,
                "cluster_col": cluster_col,
                "weight_col": weight_col,
                "lon_col": lon_col,
                "lat_col": lat_col,
                "image_key_col": image_key_col,
                **{f"covariate_cols[{i}]": c for i, c in enumerate(covariate_cols)},
            },
        )
        frame = frame.reset_index(drop=True)
        ids = _unit_ids(frame, id_col)
        treatment = _treatment(frame, treatment_col) if treatment_col else None
        outcome = _numeric(frame, outcome_col, "Outcome") if outcome_col else None
        covariates = None
        if covariate_cols:
            covariates = pd.DataFrame(
                {c: _numeric(frame, c, "Covariate") for c in covariate_cols},
                index=pd.Index(ids, name="unit_id"),
            )
        clusters = None
        if cluster_col:
            missing = frame[cluster_col].isna().to_numpy()
            if missing.any():
                raise UnitsError(
                    f"Cluster column {cluster_col!r} has missing values in rows {_rows(missing, frame)}."
                )
            clusters = frame[cluster_col].to_numpy()
        weights = None
        if weight_col:
            weights = _numeric(frame, weight_col, "Weight")
            bad = weights <= 0
            if bad.any():
                raise UnitsError(
                    f"Weight column {weight_col!r} must be strictly positive; rows {_rows(bad, frame)} are not. "
                    "Drop zero-weight units explicitly."
                )
        image_key = None
        if image_key_col:
            missing = frame[image_key_col].isna().to_numpy()
            if missing.any():
                raise UnitsError(
                    f"Image key column {image_key_col!r} has missing values in rows {_rows(missing, frame)}."
                )
            image_key = frame[image_key_col].to_numpy()
        gdf = cls._geometry(frame, ids, lon_col=lon_col, lat_col=lat_col, crs=crs)
        if gdf is None and image_key is None:
            raise UnitsError(
                "Units need a location: give point geometry (GeoDataFrame), coordinate columns "
                "(lon_col/lat_col, or columns named lon/lat or x/y with crs) or an image_key_col for pre-cut chips. "
                f"Columns found: {_listing(list(frame.columns))}."
            )
        return cls(
            unit_id=ids,
            treatment=treatment,
            outcome=outcome,
            covariates=covariates,
            clusters=clusters,
            weights=weights,
            image_key=image_key,
            gdf=gdf,
        )

    @staticmethod
    def _geometry(
        frame: pd.DataFrame, ids: np.ndarray, *, lon_col: str | None, lat_col: str | None, crs: Any
    ) -> gpd.GeoDataFrame | None:
        index = pd.Index(ids, name="unit_id")
        if isinstance(frame, gpd.GeoDataFrame) and lon_col is None and lat_col is None:
            geom = frame.geometry
            empty = (geom.isna() | geom.is_empty).to_numpy()
            if empty.any():
                raise UnitsError(
                    f"Units have missing or empty geometry in rows {_rows(empty, frame)}; every unit needs a point."
                )
            not_point = (geom.geom_type != "Point").to_numpy()
            if not_point.any():
                kinds = sorted(set(geom.geom_type[not_point]))
                raise UnitsError(
                    f"Units must be points; rows {_rows(not_point, frame)} are {kinds}. "
                    "Use e.g. gdf.geometry.representative_point() to reduce polygons to points."
                )
            if frame.crs is None and crs is None:
                raise UnitsError(
                    "The units GeoDataFrame has no CRS; set one (gdf.set_crs(...)) or pass crs=."
                )
            out_crs = frame.crs if frame.crs is not None else _parse_crs(crs, "crs")
            x, y = geom.x.to_numpy(), geom.y.to_numpy()
            StudyUnits._check_coordinates(
                x, y, CRS.from_user_input(out_crs), frame, "geometry x", "geometry y"
            )
            return gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=out_crs, index=index)
        if lon_col is None and lat_col is None:
            lon_col, lat_col = _find_column(frame, _LON_NAMES), _find_column(frame, _LAT_NAMES)
            if lon_col is None or lat_col is None:
                return None
        elif lon_col is None or lat_col is None:
            raise UnitsError(
                f"Give both lon_col and lat_col (got lon_col={lon_col!r}, lat_col={lat_col!r})."
            )
        if crs is None:
            if str(lon_col).lower() in ("x",) or str(lat_col).lower() in ("y",):
                raise UnitsError(
                    f"Coordinate columns {lon_col!r}/{lat_col!r} need a CRS: pass crs= (e.g. 'EPSG:32636')."
                )
            crs = "EPSG:4326"
        crs_obj = _parse_crs(crs, "crs")
        x = pd.to_numeric(frame[lon_col], errors="coerce").to_numpy(dtype=np.float64)
        y = pd.to_numeric(frame[lat_col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            raise UnitsError(
                f"Missing or non-numeric coordinates in columns {lon_col!r}/{lat_col!r} at rows {_rows(bad, frame)}; "
                "every unit needs a location."
            )
        StudyUnits._check_coordinates(x, y, crs_obj, frame, lon_col, lat_col)
        return gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs=crs_obj, index=index)

    @staticmethod
    def _check_coordinates(
        x: np.ndarray, y: np.ndarray, crs: CRS, frame: pd.DataFrame, xname: str, yname: str
    ) -> None:
        if not crs.is_geographic:
            return
        bad_lat = np.abs(y) > 90
        bad_lon = np.abs(x) > 180
        if bad_lat.any():
            hint = ""
            if np.all(np.abs(x[bad_lat]) <= 90):
                hint = f" The values fit as longitudes and {xname!r} fits as latitudes: lon/lat look swapped."
            raise UnitsError(
                f"Latitudes in {yname!r} must lie in [-90, 90]; rows {_rows(bad_lat, frame)} hold "
                f"{_listing(np.round(y[bad_lat], 6).tolist())}.{hint} Check which column is longitude and which is latitude."
            )
        if bad_lon.any():
            raise UnitsError(
                f"Longitudes in {xname!r} must lie in [-180, 180]; rows {_rows(bad_lon, frame)} hold "
                f"{_listing(np.round(x[bad_lon], 6).tolist())}. Check the coordinate columns and the CRS."
            )

    @classmethod
    def read(cls, path: str | os.PathLike, **kwargs: Any) -> StudyUnits:
        """Read units from a CSV, GeoPackage, (Geo)Parquet or other vector file.

        Parameters
        ----------
        path : path-like
            A file :func:`read_units_table` reads (see there for the formats).
        **kwargs
            The keyword arguments of :meth:`from_frame`.

        Returns
        -------
        StudyUnits
        """
        frame = read_units_table(path, id_col=kwargs.get("id_col", "unit_id"))
        return cls.from_frame(frame, **kwargs)

    # ------------------------------------------------------------------ use
    def subset(self, unit_ids: Sequence[str] | np.ndarray) -> StudyUnits:
        """Units with the given ids, in the order given.

        Raises
        ------
        UnitsError
            If an id is unknown or repeated.
        """
        wanted = np.asarray(unit_ids).astype(str)
        pos = pd.Index(self.unit_id)
        idx = pos.get_indexer(wanted)
        if (idx < 0).any():
            raise UnitsError(f"Unknown unit ids in subset: {_listing(wanted[idx < 0].tolist())}.")
        values, counts = np.unique(wanted, return_counts=True)
        if (counts > 1).any():
            raise UnitsError(
                f"Repeated unit ids in subset: {_listing(values[counts > 1].tolist())}."
            )

        def take(a: Any) -> Any:
            return None if a is None else a[idx]

        return StudyUnits(
            unit_id=self.unit_id[idx],
            treatment=take(self.treatment),
            outcome=take(self.outcome),
            covariates=None if self.covariates is None else self.covariates.iloc[idx],
            clusters=take(self.clusters),
            weights=take(self.weights),
            image_key=take(self.image_key),
            gdf=None if self.gdf is None else self.gdf.iloc[idx],
        )

    def coordinates(self, crs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Unit point coordinates ``(x, y)``, each of shape (n_units,), in ``crs``."""
        if self.gdf is None:
            raise UnitsError(
                "These units have no coordinates (image-key-only units); a georeferenced source needs points."
            )
        g = self.gdf.geometry
        target = CRS.from_user_input(crs)
        if not target.equals(self.crs):
            g = g.to_crs(target)
        return g.x.to_numpy(), g.y.to_numpy()
