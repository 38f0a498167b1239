"""Errors and warnings raised by eocausal.

Every error derives from :class:`EocausalError` and, where one fits, from the
matching builtin too, so callers can catch either (the rasterio convention).
Messages name the offending rows, columns, files or config fields and say how
to fix the problem. The CLI turns any ``EocausalError`` into one readable line
and exit code 2.
"""

from __future__ import annotations

__all__ = [
    "EocausalError",
    "ConfigError",
    "InputDataError",
    "UnitsError",
    "ImageryError",
    "ChipReadError",
    "BandError",
    "CRSMismatchError",
    "WeightsError",
    "EmbeddingsError",
    "NothingEmbeddedError",
    "EstimationError",
    "NotFittedError",
    "EocausalWarning",
    "OverlapWarning",
    "ExclusionWarning",
    "CalibrationWarning",
]


class EocausalError(Exception):
    """Root of every error eocausal raises on purpose."""


class ConfigError(EocausalError, ValueError):
    """Raised when a configuration file or field is invalid."""


class InputDataError(EocausalError, ValueError):
    """Raised when arrays or tables passed to an estimator are invalid."""


class UnitsError(InputDataError):
    """Raised when the table of study units is invalid (ids, geometry, CRS, columns)."""


class ImageryError(EocausalError, OSError):
    """Raised when imagery cannot be found, opened or understood."""


class ChipReadError(ImageryError):
    """Raised when a chip cannot be read from a file."""


class BandError(ImageryError, KeyError):
    """Raised when a requested band is absent from a source."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CRSMismatchError(EocausalError, ValueError):
    """Raised when coordinate reference systems cannot be reconciled."""


class WeightsError(EocausalError, OSError):
    """Raised when encoder weights are missing, corrupt or do not match the model."""


class EmbeddingsError(EocausalError, ValueError):
    """Raised when an embeddings artifact is missing, incomplete or inconsistent."""


class NothingEmbeddedError(EmbeddingsError):
    """Raised when every unit of an embedding job was excluded (e.g. a map tile with no valid imagery)."""


class EstimationError(EocausalError, RuntimeError):
    """Raised when an estimator cannot be fitted or evaluated on the data given."""


class NotFittedError(EocausalError, AttributeError):
    """Raised when a method needs a fitted estimator and ``fit`` was not called."""


class EocausalWarning(UserWarning):
    """Root of the warnings eocausal emits."""


class OverlapWarning(EocausalWarning):
    """Warn that estimated propensities come close to 0 or 1."""


class ExclusionWarning(EocausalWarning):
    """Warn that units were excluded (always with the table of ids and reasons)."""


class CalibrationWarning(EocausalWarning):
    """Warn that a calibration set is small, or predictions fall outside its support."""
