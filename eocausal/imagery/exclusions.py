"""Why units get no chips: reason kinds, counts by kind, and the error when none is left.

A unit is excluded before any read (its point is outside all imagery, its
image key is unknown) or when it is read (too small a valid fraction at some
scale, an unreadable file). Every exclusion carries a reason string; the
tables of exclusions have the columns ``unit_id`` and ``reason``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pandas as pd

from eocausal.errors import EocausalError, ImageryError

__all__ = ["all_excluded_error", "count_by_kind", "reason_kind", "status_only"]

#: (pattern at the start of a reason's first clause, kind, how to fix it); first match wins.
#: The labels match those of the run summary (:mod:`eocausal.pipeline.report`).
_KINDS: tuple[tuple[str, str, str | None], ...] = (
    (
        r"valid fraction [\d.]+ < min_valid_fraction",
        "too little valid imagery (below imagery.min_valid_fraction)",
        (
            "check that the imagery holds data at the units (its nodata value, an empty or "
            "cloudy scene, `imagery.qa_mask`), or lower `imagery.min_valid_fraction`"
        ),
    ),
    (
        r"missing covariate",
        "missing covariates",
        "fill the covariates, or drop them (`study.drop_covariates`)",
    ),
    (
        r"outside all imagery",
        "outside the imagery",
        (
            "check that the imagery (`imagery.paths`) covers the units and that `study.crs`, "
            "`study.lon_col` and `study.lat_col` are right"
        ),
    ),
    (
        r"image key .* not found",
        "image key not found",
        "check `study.image_key_col` against the keys of the pre-cut chips (`imagery.precut`)",
    ),
    (
        r"unreadable",
        "unreadable imagery",
        "check that every imagery file opens (e.g. `gdalinfo FILE`) and is complete",
    ),
)


def reason_kind(reason: str) -> str:
    """The kind of an exclusion reason: a fixed label for known reasons, else its first clause.

    Parameters
    ----------
    reason : str
        E.g. ``"valid fraction 0.000 < min_valid_fraction 0.5 at scale '1km'"``.

    Returns
    -------
    str
        E.g. ``"too little valid imagery (below imagery.min_valid_fraction)"``;
        an unknown reason gives its first clause (up to ``";"``) with numbers
        written ``N``.

    Examples
    --------
    >>> reason_kind("image key 'k9' not found in the pre-cut chips")
    'image key not found'
    >>> reason_kind("cloud cover 12.5% above 10%; other")
    'cloud cover N% above N%'
    """
    first = str(reason).split(";", 1)[0].strip()
    for pattern, kind, _ in _KINDS:
        if re.match(pattern, first):
            return kind
    first = re.sub(r"(?<![\w.])[-+]?\d[\d.]*", "N", first)
    return re.sub(r" at scale '[^']*'", "", first) or "no reason given"


def count_by_kind(reasons: Iterable[str]) -> dict[str, int]:
    """Number of exclusions of each :func:`reason_kind`, most frequent first (ties by name)."""
    counts = Counter(reason_kind(r) for r in reasons)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _fix(kind: str) -> str | None:
    return next((fix for _, k, fix in _KINDS if k == kind), None)


def all_excluded_error(
    exclusions: pd.DataFrame,
    n_units: int,
    *,
    table_path: str | os.PathLike | None = None,
    consequence: str = "none has chips to embed",
    error: type[EocausalError] = ImageryError,
) -> EocausalError:
    """The error to raise when every unit is excluded: counts by reason, an example, a fix.

    Parameters
    ----------
    exclusions : DataFrame with columns unit_id, reason
        Every excluded unit (before and at read time), e.g.
        :meth:`~eocausal.imagery.ChipDataset.scan_exclusions`.
    n_units : int
        Number of units of the study.
    table_path : path-like, optional
        Where the table was written (named in the message).
    consequence : str, default="none has chips to embed"
        What it means, said after the count.
    error : EocausalError subclass, default=ImageryError

    Returns
    -------
    EocausalError
        Of class ``error``; its message reads, e.g., "all 200 units were
        excluded, none has chips to embed: 200 too little valid imagery
        (valid fraction below min_valid_fraction), e.g. unit 'u0': valid
        fraction 0.000 < ... ; fix: ...".
    """
    reasons = exclusions["reason"].astype(str).tolist()
    ids = exclusions["unit_id"].astype(str).tolist()
    counts = count_by_kind(reasons)
    parts = []
    for kind, k in counts.items():
        first = next(i for i, r in enumerate(reasons) if reason_kind(r) == kind)
        parts.append(f"{k} {kind} (e.g. unit {ids[first]!r}: {reasons[first]})")
    top = next(iter(counts), None)
    fix = _fix(top) if top is not None else None
    where = f"; every unit and its reason are listed in {table_path}" if table_path else ""
    message = (
        f"all {n_units} units were excluded, {consequence}: "
        + ("; ".join(parts) if parts else "no reasons were recorded")
        + where
        + (f"; to fix: {fix}" if fix else "")
    )
    return error(message)


def status_only(items: list[dict[str, Any]]) -> list[tuple[str, bool, str]]:
    """Collate chip items to (unit_id, excluded, reason); an excluded item always has a reason."""
    return [
        (it["unit_id"], bool(it["excluded"]), str(it["reason"]) or "excluded by the chip reader")
        for it in items
    ]
