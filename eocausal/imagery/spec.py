"""What to cut around each unit: :class:`Scale` and :class:`ChipSpec`."""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any

from eocausal.errors import ConfigError
from eocausal.imagery.bands import RECIPES

__all__ = ["ChipSpec", "Scale", "size_field"]


@dataclass(frozen=True)
class Scale:
    """One chip scale.

    Parameters
    ----------
    name : str
        Scale name (keys of the item dictionaries and of the embeddings).
    size_px : int, optional
        Window size in source pixels.
    size_km : float, optional
        Window size in kilometres (exactly one of ``size_px``/``size_km``).
    out_px : int
        Output chip size in pixels (square).
    """

    name: str
    _: KW_ONLY
    size_px: int | None = None
    size_km: float | None = None
    out_px: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(
                f"A scale name (config field `imagery.scales[].name`, Scale(name=...)) must be a "
                f"non-empty string, got {self.name!r}; name each scale, e.g. '1km'."
            )
        if (self.size_px is None) == (self.size_km is None):
            raise ConfigError(
                f"scale {self.name!r} (config field `imagery.scales[]`): give exactly one of size_px or "
                f"size_km (got size_px={self.size_px!r}, size_km={self.size_km!r})."
            )
        if self.size_px is not None and (int(self.size_px) != self.size_px or self.size_px < 1):
            raise ConfigError(
                f"scale {self.name!r}: `size_px` must be a positive integer (pixels), got "
                f"{self.size_px!r}; set `imagery.scales[].size_px` to 1 or more."
            )
        if self.size_km is not None and not (math.isfinite(self.size_km) and self.size_km > 0):
            raise ConfigError(
                f"scale {self.name!r}: `size_km` must be a positive number (kilometres), got "
                f"{self.size_km!r}; set `imagery.scales[].size_km` above 0."
            )
        if int(self.out_px) != self.out_px or self.out_px < 1:
            raise ConfigError(
                f"scale {self.name!r}: `out_px` must be a positive integer (output pixels), got "
                f"{self.out_px!r}; set `imagery.scales[].out_px` to 1 or more."
            )


@dataclass(frozen=True)
class ChipSpec:
    """What to cut around each unit.

    Parameters
    ----------
    scales : list of Scale
        Distinct names.
    bands : list of str, optional
        Band names to keep, in order (default: every band but a QA band).
    recipe : str, default="none"
        Scaling recipe of :mod:`eocausal.imagery.bands` ("none", "c2_sr",
        "ssl4eo_l_sr_uint8", "ssl4eo_l_toa_uint8").
    dates : list of str or "all", optional
        ISO dates of a time series (chips of shape (T, C, H, W)); "all" takes
        every date of the source. None mosaics all layers without a time axis.
    min_valid_fraction : float, default=0.5
        Units with a smaller fraction of valid pixels at any scale (averaged
        over dates) are excluded, with the reason recorded.
    qa_mask : bool, default=False
        Mask Landsat QA_PIXEL fill, dilated cloud, cloud and cloud shadow.
    """

    scales: list[Scale]
    _: KW_ONLY
    bands: list[str] | None = None
    recipe: str = "none"
    dates: list[str] | str | None = None
    min_valid_fraction: float = 0.5
    qa_mask: bool = False

    def __post_init__(self) -> None:
        scales = list(self.scales)
        if not scales or not all(isinstance(s, Scale) for s in scales):
            raise ConfigError(
                "config field `imagery.scales` (ChipSpec.scales) must be a non-empty list of scales, "
                f"got {self.scales!r}; give at least one, e.g. [Scale('1km', size_km=1, out_px=32)]."
            )
        names = [s.name for s in scales]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"config field `imagery.scales` (ChipSpec.scales) has duplicate names: {names}; "
                "give every scale its own name."
            )
        object.__setattr__(self, "scales", scales)
        if self.recipe not in RECIPES:
            raise ConfigError(
                f"Unknown recipe {self.recipe!r} in config field `imagery.recipe` (ChipSpec(recipe=...)); "
                f"choose one of {sorted(RECIPES)}."
            )
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ConfigError(
                "config field `imagery.min_valid_fraction` (ChipSpec(min_valid_fraction=...)) must lie "
                f"in [0, 1], got {self.min_valid_fraction!r}."
            )
        if isinstance(self.dates, str) and self.dates != "all":
            raise ConfigError(
                "config field `imagery.dates` (ChipSpec.dates) must be a list of ISO dates "
                f"(YYYY-MM-DD) or 'all', got {self.dates!r}."
            )
        if self.dates is not None and not isinstance(self.dates, str):
            object.__setattr__(self, "dates", [str(d) for d in self.dates])
        if self.bands is not None:
            object.__setattr__(self, "bands", [str(b) for b in self.bands])

    @property
    def scale_names(self) -> list[str]:
        return [s.name for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (recorded in embeddings metadata)."""
        d = asdict(self)
        d.pop("_", None)
        for s in d["scales"]:
            s.pop("_", None)
        return d


def size_field(k: int, scale: Scale) -> str:
    """How messages name the size of scale ``k``: its config field and value.

    Examples
    --------
    >>> size_field(1, Scale("wide", size_km=6.0, out_px=32))
    "scale 'wide' (config field `imagery.scales[1].size_km` = 6)"
    """
    attr, value = (
        ("size_px", scale.size_px) if scale.size_px is not None else ("size_km", scale.size_km)
    )
    return f"scale {scale.name!r} (config field `imagery.scales[{k}].{attr}` = {value:g})"
