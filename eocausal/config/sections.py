"""Config sections shared by every workflow: imagery and chip scales, the encoder, the features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from eocausal.config.loading import Strict as _Strict

__all__ = ["EncoderConfig", "FeaturesConfig", "ImageryConfig", "ScaleConfig"]


class ScaleConfig(_Strict):
    """One chip scale: a width in pixels or kilometres, and the output size."""

    name: str
    size_px: Annotated[int, Field(ge=1)] | None = None
    size_km: Annotated[float, Field(gt=0)] | None = None
    out_px: Annotated[int, Field(ge=4, le=1024)] = 32

    @model_validator(mode="after")
    def _one_size(self) -> ScaleConfig:
        if (self.size_px is None) == (self.size_km is None):
            raise ValueError(f"scale {self.name!r}: give exactly one of `size_px` or `size_km`")
        return self


class ImageryConfig(_Strict):
    """Imagery source and chip specification."""

    source: Literal["raster", "stac", "precut", "simulated"] = "raster"
    paths: list[Path] = Field(default_factory=list)
    precut: Path | None = None
    precut_images_key: str = "images"
    precut_keys_key: str = "image_keys"
    bands: list[str] | None = None
    recipe: str = "none"
    dates: list[str] | None = None
    qa_mask: bool = False
    min_valid_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    scales: Annotated[list[ScaleConfig], Field(min_length=1)]

    @model_validator(mode="after")
    def _names_unique(self) -> ImageryConfig:
        names = [s.name for s in self.scales]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"scale names must be unique; repeated: {dup}")
        return self


class EncoderConfig(_Strict):
    """The image encoder and how the embedding job runs."""

    name: str = "mosaiks"
    n_features: Annotated[int, Field(ge=2)] = 256
    weights_path: Path | None = None
    #: sha256 (64 hex digits) that ``weights_path`` must have; required for a timm architecture
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    cache_dir: Path | None = None
    batch_size: Annotated[int, Field(ge=1)] = 64
    num_workers: Annotated[int, Field(ge=0)] = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: Annotated[int, Field(ge=1)] = 1
    strategy: str = "auto"
    precision: str | None = None
    # the temporal transformer is trained on an outcome (eocausal.encode.temporal_pool, API only)
    temporal: Literal["mean", "concat"] = "mean"


class FeaturesConfig(_Strict):
    """Multi-scale concatenation."""

    scales: list[str] | None = None
    pca_components: Annotated[int, Field(ge=1)] | None = 10
    standardize: bool = True
    include_covariates: bool = True


