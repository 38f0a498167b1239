"""Write notebooks/01_quickstart.ipynb (unexecuted) from the cells below.

Run ``python scripts/build_quickstart_notebook.py`` after editing the cells;
CI executes the notebook (tests/test_notebooks.py).
"""

from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", """# eocausal quick start

This notebook walks the built-in study through the Python API, stage by stage:
a simulated Landsat-like scene, a randomized trial whose effect depends on a
**local** (1 km) and a **regional** (6 km) image feature, chips at two scales,
MOSAIKS embeddings, multi-scale features, a causal forest, and an honest RATE
evaluation on held-out units. The study here is smaller than `eocausal demo`
so that the notebook runs in about a minute on a laptop."""),
    ("code", """import tempfile
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import eocausal
from eocausal.estimate import split_units
from eocausal.evaluate import plot_scale_comparison, plot_toc

workdir = Path(tempfile.mkdtemp(prefix="eocausal-quickstart-"))
SEED = 0"""),
    ("md", """## 1. The study: a scene and a trial with known effects

`make_demo_study` writes a real GeoTIFF (6 uint16 bands scaled like Landsat
Collection 2 surface reflectance, UTM 36N, 30 m, with a nodata margin) and a
CSV of units with the true effect `tau_true`."""),
    ("code", """study = eocausal.make_demo_study(workdir / "study", seed=SEED, n_units=800, scene_size=768)
study.units.head()"""),
    ("code", """units = eocausal.StudyUnits.read(
    study.units_path,
    treatment_col="treated",
    outcome_col="outcome",
    covariate_cols=["hh_size", "age", "female"],
    cluster_col="village",
    lon_col="lon",
    lat_col="lat",
    crs="EPSG:4326",
)
units"""),
    ("md", """## 2. Chips at two scales

Windows of 1 km and 6 km centred on each unit, both resampled to 32 x 32 px
(area averaging when shrinking). Units whose chips have too little valid
imagery are excluded **with a reason**, never silently."""),
    ("code", """spec = eocausal.ChipSpec(
    [eocausal.Scale("1km", size_km=1.0, out_px=32), eocausal.Scale("6km", size_km=6.0, out_px=32)],
    recipe="c2_sr",
    min_valid_fraction=0.5,
)
source = eocausal.RasterSource([str(study.scene_path)])
chips = eocausal.ChipDataset(units, source, spec)
item = chips[0]
{scale: tuple(x.shape) for scale, x in item["chips"].items()}"""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(6, 3))
for ax, (scale, x) in zip(axes, item["chips"].items()):
    rgb = x[[2, 1, 0]].numpy().transpose(1, 2, 0)
    ax.imshow(np.clip(rgb / 0.3, 0, 1))
    ax.set_title(f"unit {item['unit_id']}, {scale}")
    ax.axis("off")"""),
    ("md", """## 3. Embeddings

MOSAIKS random convolutional features (Rolf et al. 2021) need no pretrained
weights; `eocausal.build_encoder` loads timm ViTs such as the SSL4EO-L Landsat
weights from local files instead. `embed` runs a Lightning prediction job
that writes resumable shards and one `embeddings.parquet`."""),
    ("code", """encoder = eocausal.MosaiksEncoder(len(chips.band_names), n_features=256, seed=SEED)
result = eocausal.embed(chips, encoder, workdir / "embeddings", batch_size=128, progress=False)
emb = result.embeddings
print(emb.n_units, "units embedded at scales", emb.scales)
result.exclusions"""),
    ("md", """## 4. Multi-scale features and a causal forest, fitted on a training half"""),
    ("code", """ids = np.array([u for u in units.unit_id if u in set(emb.unit_ids)])
units_a, emb = units.subset(ids), emb.subset(ids)
T, Y = units_a.treatment, units_a.outcome
tau_true = study.units.set_index("unit_id").loc[ids, "tau_true"].to_numpy()
train, test = split_units(len(ids), test_size=0.5, clusters=units_a.clusters, seed=SEED)

features = eocausal.MultiScaleFeatures(pca_components=10).fit(emb.subset(ids[train]), units_a.covariates.iloc[train])
X_train = features.transform(emb.subset(ids[train]), units_a.covariates.iloc[train]).X
X_test = features.transform(emb.subset(ids[test]), units_a.covariates.iloc[test]).X

forest = eocausal.CausalForest(n_estimators=200, propensity=0.5, random_state=SEED)
forest.fit(X_train, T[train], Y[train], clusters=units_a.clusters[train])
tau_hat = forest.effect(X_test)
print("correlation of estimated with true tau on held-out units:", np.corrcoef(tau_hat, tau_true[test])[0, 1].round(3))"""),
    ("md", """## 5. Honest evaluation: RATE on the held-out half

Doubly robust scores come from a second forest fitted on the held-out half
only; the priorities come from the training-half forest. The AUTOC and its
SE follow grf's `rank_average_treatment_effect` exactly."""),
    ("code", """features_eval = eocausal.MultiScaleFeatures(pca_components=10).fit(emb.subset(ids[test]), units_a.covariates.iloc[test])
X_eval = features_eval.transform(emb.subset(ids[test]), units_a.covariates.iloc[test]).X
eval_forest = eocausal.CausalForest(n_estimators=200, propensity=0.5, random_state=SEED)
eval_forest.fit(X_eval, T[test], Y[test], clusters=units_a.clusters[test])
autoc = eocausal.rate(eval_forest.dr_scores_, tau_hat, target="AUTOC", clusters=units_a.clusters[test], seed=SEED)
print(f"AUTOC = {autoc.estimate:.3f} (SE {autoc.std_err:.3f}), RATE ratio = {autoc.ratio:.2f}")
plot_toc(autoc);"""),
    ("md", """## 6. Which scales carry the heterogeneity?

Every single scale and the concatenation, evaluated with the same split and
the same bootstrap draws, so that their differences have valid SEs."""),
    ("code", """comparison = eocausal.compare_scales(
    emb, T, Y,
    learner=eocausal.CausalForest(n_estimators=200, propensity=0.5, random_state=SEED),
    covariates=units_a.covariates, pca_components=10, clusters=units_a.clusters,
    combinations="singles+all", seed=SEED,
)
plot_scale_comparison(comparison)
comparison.table"""),
    ("md", """## 7. Average effect with cluster-robust inference"""),
    ("code", """ate = eocausal.aipw_ate(Y[test], T[test], 0.5, outcome_hat=eval_forest.outcome_oof_,
                       effect=eval_forest.effect_oof_, clusters=units_a.clusters[test])
print(ate)
print("true mean effect of these units:", tau_true[test].mean().round(3))"""),
    ("md", """The same run, with a report, an effect map and `results.json`, is one
command: `eocausal demo` (or `eocausal run configs/demo.yaml`)."""),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        for kind, src in CELLS
    ]
    out = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
    out.parent.mkdir(exist_ok=True)
    nbf.write(nb, out)
    print(out)


if __name__ == "__main__":
    main()
