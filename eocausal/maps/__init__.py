"""Maps: region grids, a resumable per-tile map job writing a Cloud-Optimized GeoTIFF, and its use.

Typical use (a wealth map at 1 km, then sampled at trial locations)::

    from eocausal.maps import RegionGrid, run_map_job, sample_map, support_flags, MapArtifact

    grid = RegionGrid.from_bbox((32.0, 0.0, 33.0, 1.0), bbox_crs="EPSG:4326", cell_size_m=1000)

    def predict_tile(tile, points):          # points: unit_id, lon, lat, x, y, row, col
        X = features_of(points)              # chips -> embeddings -> features (the caller's model)
        flag, _ = support_flags(X_train, X)
        return {"wealth": model.predict(X), "out_of_support": flag}

    run_map_job(grid, predict_tile, "wealth.tif", key=model_hash,
                bands=[("wealth", "float32", "predicted wealth index", float("nan")),
                       ("out_of_support", "uint8", "1 = outside the training features", float("nan"))])
    artifact = MapArtifact.write("wealth_map", cog_path="wealth.tif",
                                 calibration_table=model.calibration_table_, metadata={...})
    values = sample_map(artifact.cog_path, lon, lat, band="wealth", radius_m=2000)

Modules: :mod:`~eocausal.maps.grid` (grids and tiles), :mod:`~eocausal.maps.job`
(the map job), :mod:`~eocausal.maps.cog` (COG assembly), :mod:`~eocausal.maps.support`
(out-of-support flags), :mod:`~eocausal.maps.sample` (sampling at points),
:mod:`~eocausal.maps.artifact` (the map artifact). No module imports torch.
"""

from eocausal.maps.artifact import MapArtifact
from eocausal.maps.cog import Band
from eocausal.maps.grid import RegionGrid, Tile, utm_crs
from eocausal.maps.job import run_map_job
from eocausal.maps.sample import sample_map
from eocausal.maps.support import FeatureSupport, support_flags

__all__ = [
    "Band",
    "FeatureSupport",
    "MapArtifact",
    "RegionGrid",
    "Tile",
    "run_map_job",
    "sample_map",
    "support_flags",
    "utm_crs",
]
