"""Benchmark: time and held-out MSE(τ) of the CATE learners' large-n settings.

The simulation, features and split of ``benchmarks/scale.py`` (its ``simulate`` is
imported, not copied): 3 scales x 384-dimensional embeddings of a 4-d latent Z,
PCA 10 per scale plus 3 covariates (33 features), τ = 1 + 0.5 Z0 + 0.5 tanh(2 Z1),
e = logistic(0.5 Z2); ê cross-fitted on all n units (5 folds); each learner is
fitted on the same random half (``propensity`` = ê of that half, so it cross-fits
only its own outcome model) and predicts the other half. Reported per learner:
wall-clock seconds for ``fit`` and for ``effect`` on the held-out half and the
process's CPU seconds for both (all threads; steadier than wall time on a shared
machine), held-out MSE(τ̂), out-of-fold MSE(τ̂) on the training half
(``effect_oof_``), and the settings the learner resolved
(:func:`eocausal.estimate.forest_settings.resolved_settings`).

Learners are given as ``NAME[:key=value,...]`` with NAME ``causal_forest``,
``dr_learner`` or ``t_learner`` and keyword arguments of that class (numbers are
parsed, everything else stays a string), e.g. ``causal_forest:max_samples=0.45``.

Results (2-core x86_64 shared with other jobs, load average 2.8-6.8 during the
runs, so wall times vary up to 1.5x between runs; CPU seconds, of all threads, are
steadier. Python 3.11.7, econml 0.17.0, scikit-learn 1.9.1; 200 trees; MSE of the
constant true ATE 0.41; seed 0). Wall s (CPU s), held-out MSE(τ), out-of-fold MSE:

=====================  ==================================  ===========  ======  ======
n (fit on)             learner                             s (CPU s)    MSE     OOF
=====================  ==================================  ===========  ======  ======
100,000 (50,000)       causal forest, 0.45 (22,500)        220 (222)    0.0250  0.0266
100,000 (50,000)       causal forest, auto 0.4 (20,000)    271 (190)    0.0252  0.0266
100,000 (50,000)       causal forest, 0.2 (10,000)         112 (-)      0.0318  0.0325
100,000 (50,000)       causal forest, 0.1 (5,000)          35 (-)       0.0402  0.0409
100,000 (50,000)       DR, forest final, 0.45              191 (193)    0.0259  0.0289
100,000 (50,000)       DR, auto = hgb final                12.5 (12)    0.0218  0.0249
1,000,000 (500,000)    causal forest, auto 0.04 (20k)      239 (235)    0.0226  0.0226
1,000,000 (500,000)    DR, auto = hgb final                131 (120)    0.0051  0.0057
=====================  ==================================  ===========  ======  ======

The 0.2 and 0.1 rows come from an earlier run (second command below; no CPU
column yet; in that run 0.45 took 292 s and auto 256 s wall, load 5-6). The DR learner's
final stage, forest (0.45) vs gradient boosting, same pseudo-outcomes:

=====================  ====================  ====================
n (fit on)             forest: s, MSE        hgb: s, MSE
=====================  ====================  ====================
10,000 (5,000)         9.8, 0.0450           3.9, 0.0691
20,000 (10,000)        22.7, 0.0497          4.3, 0.0492
40,000 (20,000)        54.9, 0.0405          13.9, 0.0395
60,000 (30,000)        84.7, 0.0319          33.5, 0.0295
100,000 (50,000)       191.3, 0.0259         12.5, 0.0218
=====================  ====================  ====================

So: the forest's share cap ``max_samples="auto"`` (at most 20,000 units per tree)
costs nothing in accuracy at 50,000 units and holds the forest at 1,000,000 units
to about 4 minutes on 2 cores, but its error stops falling with n (0.0252 at
50,000, 0.0226 at 500,000); gradient boosting on the DR pseudo-outcomes breaks
even with the forest at about 10,000 units, is ahead from 20,000
(``AUTO_HGB_MIN_UNITS``) and keeps improving (0.0051 at 500,000).

Commands (``--cache`` keeps each n's features and ê between runs)::

    python benchmarks/learners_large_n.py --n 100000 --cache /tmp/lln \\
        --learners dr_learner causal_forest:max_samples=0.45 causal_forest \\
        dr_learner:final_model=forest,max_samples=0.45
    # the earlier run (its DR-learner row had a gradient-boosting final stage since
    # replaced, with leaves of 200 units: 0.0212)
    python benchmarks/learners_large_n.py --n 100000 --cache /tmp/lln \\
        --learners causal_forest:max_samples=0.45 causal_forest \\
        causal_forest:max_samples=0.2 causal_forest:max_samples=0.1 \\
        dr_learner:final_model=forest,max_samples=0.45 dr_learner
    python benchmarks/learners_large_n.py --n 10000 20000 40000 60000 \\
        --learners dr_learner:final_model=forest,max_samples=0.45 dr_learner:final_model=hgb
    python benchmarks/learners_large_n.py --n 1000000 --cache /tmp/lln \\
        --learners causal_forest dr_learner

Examples
--------
python benchmarks/learners_large_n.py --n 100000   # small-n settings against "auto"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import simulate  # benchmarks/ is not a package

LEARNERS = {"causal_forest": "CausalForest", "dr_learner": "DRLearner", "t_learner": "TLearner"}


def parse_learner(spec: str) -> tuple[str, dict]:
    """``"dr_learner:final_model=hgb,n_folds=3"`` -> ``("dr_learner", {"final_model": "hgb",
    "n_folds": 3})``."""
    name, _, rest = spec.partition(":")
    if name not in LEARNERS:
        raise SystemExit(f"unknown learner {name!r} in {spec!r}; use one of {sorted(LEARNERS)}")
    kwargs: dict = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r} in {spec!r} is not key=value")
        for cast in (int, float):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def study(n: int, seed: int, cache: Path | None) -> dict[str, np.ndarray]:
    """Features, treatment, outcome, true τ, cross-fitted ê and the held-out mask at ``n``."""
    path = None if cache is None else cache / f"study_n{n}_seed{seed}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    import pandas as pd

    from eocausal.embeddings import Embeddings
    from eocausal.estimate import estimate_propensity
    from eocausal.features import MultiScaleFeatures

    t0 = time.perf_counter()
    vectors, covariates, T, Y, tau = simulate(n, 3, 384, seed)
    ids = np.array([f"u{i}" for i in range(n)])
    cov = pd.DataFrame(covariates, columns=["c_latent", "c_noise1", "c_noise2"], index=ids)
    emb = Embeddings(ids, vectors)
    vectors.clear()
    X = MultiScaleFeatures(pca_components=10).fit_transform(emb, covariates=cov).X
    del emb
    e = estimate_propensity(X, T, seed=seed, n_jobs=-1)
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed + 1).permutation(n)[: n // 2]] = True  # as scale.py
    print(
        f"# n = {n:,}: simulation, features and ê in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    data = {"X": X, "T": T, "Y": Y, "tau": tau, "e": e, "held_out": held_out}
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    return data


def run_learner(name: str, kwargs: dict, data: dict, n_estimators: int, seed: int) -> dict:
    """Fit one learner on the training half; time it and score it against the true τ."""
    from eocausal.estimate import forest_settings

    X, T, Y, tau, e, held = (data[k] for k in ("X", "T", "Y", "tau", "e", "held_out"))
    train = ~held
    params = {"n_estimators": n_estimators, "random_state": seed, **kwargs}
    model = getattr(cate, LEARNERS[name])(propensity=e[train], **params)
    load = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    model.fit(X[train], T[train], Y[train])
    t1 = time.perf_counter()
    tau_held = model.effect(X[held])
    c2, t2 = time.process_time(), time.perf_counter()
    return {
        "n": len(Y),
        "learner": name,
        "kwargs": kwargs,
        "fit_s": t1 - t0,
        "effect_s": t2 - t1,
        "cpu_s": c2 - c0,
        "mse_held_out": float(np.mean((tau_held - tau[held]) ** 2)),
        "mse_oof_train": float(np.mean((model.effect_oof_ - tau[train]) ** 2)),
        "mse_constant_ate": float(np.mean((tau[held] - tau[held].mean()) ** 2)),
        "load_average_before": load,
        "load_average_after": os.getloadavg()[0],
        "settings": forest_settings.resolved_settings(model),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| n (fit on) | learner | settings | fit + effect: wall s (CPU s) | held-out MSE "
        "| OOF MSE | load |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["settings"]
        setting = f"max_samples {s['max_samples']:.3g} ({s['units_per_tree']:,}/tree)"
        if "final_model" in s:
            setting = f"final {s['final_model']}" + (
                f", {setting}" if s["final_model"] == "forest" else ""
            )
        extra = ",".join(f"{k}={v}" for k, v in r["kwargs"].items())
        lines.append(
            f"| {r['n']:,} ({r['settings']['n_fit']:,}) | {r['learner']}"
            f"{':' + extra if extra else ''} | {setting} | {r['fit_s'] + r['effect_s']:.1f} "
            f"({r.get('cpu_s', float('nan')):.0f}) | "
            f"{r['mse_held_out']:.4f} | {r['mse_oof_train']:.4f} | "
            f"{r['load_average_before']:.1f}-{r['load_average_after']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--learners",
        nargs="+",
        default=[
            "causal_forest:max_samples=0.45",
            "causal_forest",
            "dr_learner:final_model=forest",
            "dr_learner",
        ],
        help="NAME[:key=value,...] (default: small-n settings against 'auto', both learners)",
    )
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder to keep each n's features and ê between runs",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw measurements here")
    args = parser.parse_args(argv)
    specs = [parse_learner(s) for s in args.learners]

    print(
        f"# {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}",
        flush=True,
    )
    rows = []
    for n in args.n:
        data = study(n, args.seed, args.cache)
        for name, kwargs in specs:
            row = run_learner(name, kwargs, data, args.n_estimators, args.seed)
            print(json.dumps(row), flush=True)
            rows.append(row)
        if args.json is not None:
            args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
