"""Georeferenced imagery from GeoTIFF/COG/VRT files: :class:`RasterSource`."""

from __future__ import annotations

import os
from collections.abc import Sequence

from eocausal.errors import BandError, ImageryError
from eocausal.imagery.geosource import GeoSource
from eocausal.imagery.layers import Layer, open_raster_meta

__all__ = ["RasterSource"]


class RasterSource(GeoSource):
    """A mosaic of GeoTIFF/COG files (or a VRT), possibly in different CRSs.

    Parameters
    ----------
    paths : path-like or sequence of path-like
        One file (GeoTIFF, COG, VRT, anything GDAL opens) or several.
        Every file must hold the same bands.
    band_names : sequence of str, optional
        Names of the bands in file order; by default the band descriptions
        stored in the files, else ``B1``, ``B2``, ...
    nodata : float, optional
        Overrides the files' nodata value.
    date : str, optional
        ISO date of the imagery (recorded in chip info).

    Raises
    ------
    ImageryError
        A file is missing, has no CRS, or its bands differ from the first file's.
    ChipReadError
        A file cannot be opened as a raster.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        date: str | None = None,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [str(p) for p in paths]
        if not paths:
            raise ImageryError("RasterSource needs at least one imagery file.")
        self.paths = paths
        self.description = (
            paths[0] if len(paths) == 1 else f"the mosaic of {len(paths)} files ({paths[0]}, ...)"
        )
        layers: list[Layer] = []
        names0: list[str] | None = None
        for path in paths:
            meta = open_raster_meta(path)
            if band_names is not None:
                if len(band_names) != meta["count"]:
                    raise BandError(
                        f"band_names has {len(band_names)} names but {path} has {meta['count']} bands; "
                        "give one name per band in file order."
                    )
                names = [str(b) for b in band_names]
            elif all(meta["descriptions"]):
                names = [str(d) for d in meta["descriptions"]]
            else:
                names = [f"B{i + 1}" for i in range(meta["count"])]
            if len({n.lower() for n in names}) != len(names):
                raise BandError(
                    f"Duplicate band names {names} in {path}; pass band_names= to rename them."
                )
            if names0 is None:
                names0 = names
            elif [n.lower() for n in names] != [n.lower() for n in names0]:
                raise ImageryError(
                    f"Imagery file {path} has bands {names}, but {paths[0]} has {names0}; "
                    "all files of a mosaic must hold the same bands in the same order."
                )
            layers.append(
                Layer(
                    name=path,
                    crs_wkt=meta["crs_wkt"],
                    transform=meta["transform"],
                    width=meta["width"],
                    height=meta["height"],
                    bands={n: (path, i + 1) for i, n in enumerate(names0)},
                    nodata={path: nodata if nodata is not None else meta["nodata"]},
                    block=meta["block"],
                    date=date,
                )
            )
        self.layers = layers
        self.band_names = list(names0 or [])

    def __repr__(self) -> str:
        return f"RasterSource({len(self.layers)} files, bands={self.band_names})"
