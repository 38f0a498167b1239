"""Benchmark: time and memory of each analysis step, given the embeddings, as n grows.

Simulation with known effects. A low-dimensional latent Z (n x 4, standard
normal) is what the images "show": each scale's embedding is
``Z @ P_s + 0.5 * noise`` with its own random projection ``P_s`` (4 x dims,
float32), so the embeddings encode Z up to noise. Three covariates: Z_3 + noise
and two pure-noise columns. Truth:

.. math:: \\tau(Z) = 1 + 0.5 Z_0 + 0.5 \\tanh(2 Z_1), \\quad
          e(Z) = \\operatorname{logistic}(0.5 Z_2), \\quad
          Y = Z_0 + \\sin(Z_1) + 0.5 Z_2 + W \\tau(Z) + \\varepsilon,
          \\ \\varepsilon \\sim N(0, 1).

Steps (each timed, wall clock; RSS sampled every 20 ms from /proc/self/statm):

- ``load``: :meth:`Embeddings.load` of the artifact written just before (the
  write is reported as ``save``, not a step of the analysis).
- ``features``: :class:`MultiScaleFeatures` with ``--pca`` components per scale,
  fitted on all units (unsupervised), plus the covariates.
- ``nuisances``: cross-fitted m̂ = E[Y|X] (:func:`crossfit_outcome`,
  histogram gradient boosting) and ê (:func:`estimate_propensity`), 5 folds, all units.
- ``causal_forest`` / ``dr_learner``: fitted on a random half of the units
  (the training half) with ``propensity`` = the cross-fitted ê of that half,
  so ê is not re-estimated; each fit still cross-fits its own outcome model
  (m̂ for the forest, μ̂₀ and μ̂₁ for the DR learner), which is part of its
  time. Then ``effect`` on the held-out half: MSE(τ̂) against the true τ.
- ``aipw``: :func:`aipw_ate` on all units with m̂, ê and τ̂ (out-of-bag on the
  training half, predicted on the held-out half) of the first learner run;
  with no learner in ``--steps``, τ̂ = 0 (still a valid AIPW, less efficient).
- ``rate``: :func:`rate` (AUTOC, ``--n-bootstrap`` draws) on the held-out half,
  DR scores from m̂, ê and the learner's τ̂, priorities τ̂.
- ``calibration``: :func:`calibration_test` on the held-out half.

``rate`` and ``calibration`` need a τ̂: with no learner in ``--steps`` they use
the TRUE τ as priorities / predictions and the output says ``cate: oracle``;
their times are then valid, their statistics are not estimates.

Each n runs in its own subprocess, so the peak RSS (``ru_maxrss``) is per n.
The printed table gives, per step, seconds, the RSS growth during the step
(sampled peak minus RSS at its start) and the scaling exponent
log(t2 / t1) / log(n2 / n1) between consecutive sizes.

Examples
--------
python benchmarks/scale.py --n 10000 30000
python benchmarks/scale.py --n 100000 --steps load features nuisances aipw rate calibration
python benchmarks/scale.py --report a.json b.json   # one table from earlier --json runs
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STEPS = (
    "load",
    "features",
    "nuisances",
    "causal_forest",
    "dr_learner",
    "aipw",
    "rate",
    "calibration",
)
LEARNERS = ("causal_forest", "dr_learner")
LATENT_DIM = 4


class RSSSampler:
    """Peak of the process's current RSS (MB) between :meth:`start` and :meth:`stop`."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")

    def current_mb(self) -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page / 2**20

    def start(self) -> float:
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = self.current_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self.start_mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self.current_mb())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())
        return self.peak_mb - self.start_mb


def simulate(n: int, scales: int, dims: int, seed: int):
    """Embeddings (float32 blocks), covariates, W, Y and the true τ of the DGP above."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, LATENT_DIM))
    vectors = {}
    for s in range(scales):
        P = rng.standard_normal((LATENT_DIM, dims)).astype(np.float32) / np.float32(
            math.sqrt(LATENT_DIM)
        )
        block = Z.astype(np.float32) @ P
        block += np.float32(0.5) * rng.standard_normal((n, dims), dtype=np.float32)
        vectors[f"s{s}"] = block
    covariates = np.column_stack(
        [Z[:, 3] + 0.5 * rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)]
    )
    tau = 1.0 + 0.5 * Z[:, 0] + 0.5 * np.tanh(2.0 * Z[:, 1])
    e = 1.0 / (1.0 + np.exp(-0.5 * Z[:, 2]))
    T = (rng.random(n) < e).astype(np.int64)
    Y = Z[:, 0] + np.sin(Z[:, 1]) + 0.5 * Z[:, 2] + T * tau + rng.standard_normal(n)
    return vectors, covariates, T, Y, tau


def write_study(args) -> dict:
    """Simulate ``args.setup`` units; write the Embeddings artifact and the rest (npz); time the write."""
    from eocausal.embeddings import Embeddings

    n = args.setup
    vectors, covariates, T, Y, tau = simulate(n, args.scales, args.dims, args.seed)
    np.savez(args.data, covariates=covariates, T=T, Y=Y, tau=tau)
    emb = Embeddings(np.array([f"u{i}" for i in range(n)]), vectors)
    vectors.clear()
    t0 = time.perf_counter()
    emb.save(args.artifact)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "setup_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_one(args) -> dict:
    """All requested steps at one n, in this process (the artifact written by a
    :func:`write_study` process before); returns the measurements."""
    import pandas as pd

    from eocausal.embeddings import Embeddings
    from eocausal.estimate import (
        CausalForest,
        DRLearner,
        aipw_ate,
        crossfit_outcome,
        dr_scores,
        estimate_propensity,
        make_folds,
    )
    from eocausal.estimate.forest_settings import resolved_settings
    from eocausal.evaluate import calibration_test, rate
    from eocausal.features import MultiScaleFeatures

    n, seed = args.child, args.seed
    steps = [s for s in STEPS if s in args.steps]
    sampler = RSSSampler()
    out: dict = {"n": n, "steps": {}, "notes": []}
    out["rss_after_imports_mb"] = sampler.current_mb()

    with np.load(args.data) as z:
        covariates, T, Y, tau = z["covariates"], z["T"], z["Y"], z["tau"]
    unit_ids = np.array([f"u{i}" for i in range(n)])
    cov = pd.DataFrame(covariates, columns=["c_latent", "c_noise1", "c_noise2"], index=unit_ids)
    held_out = np.zeros(n, dtype=bool)
    held_out[np.random.default_rng(seed + 1).permutation(n)[: n // 2]] = True
    train = ~held_out
    out["rss_after_simulation_mb"] = sampler.current_mb()
    out["artifact_mb"] = args.artifact.stat().st_size / 2**20

    def timed(name, fn):
        sampler.start()
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        growth = sampler.stop()
        out["steps"][name] = {
            "seconds": seconds,
            "rss_growth_mb": growth,
            "rss_peak_mb": sampler.peak_mb,
        }
        print(f"  n={n:,} {name}: {seconds:.2f} s, +{growth:.0f} MB", file=sys.stderr, flush=True)
        return result

    emb = (
        timed("load", lambda: Embeddings.load(args.artifact))
        if "load" in steps
        else Embeddings.load(args.artifact)
    )

    def features():
        return MultiScaleFeatures(pca_components=args.pca).fit_transform(emb, covariates=cov).X

    X = timed("features", features) if "features" in steps else features()
    emb = None  # free the embedding blocks before the estimation steps
    out["n_features"] = int(X.shape[1])

    def nuisances():
        folds = make_folds(n, 5, stratify=T, seed=seed)
        m = crossfit_outcome(X, Y, folds, random_state=seed, n_jobs=-1)
        e = estimate_propensity(X, T, seed=seed, n_jobs=-1)
        return m, e

    m_hat, e_hat = timed("nuisances", nuisances) if "nuisances" in steps else nuisances()

    tau_hat = None
    learners = {"causal_forest": CausalForest, "dr_learner": DRLearner}
    fitted = {}
    for name in LEARNERS:
        if name not in steps:
            continue

        def fit_predict(cls=learners[name]):
            small_n = {"max_samples": 0.45} | ({"final_model": "forest"} if cls is DRLearner else {})
            settings = small_n if args.learner_settings == "defaults" else {}
            est = cls(n_estimators=args.n_estimators, propensity=e_hat[train], random_state=seed, **settings)
            est.fit(X[train], T[train], Y[train])
            fitted[name] = est
            full = np.empty(n)
            full[train] = est.effect_oof_
            full[held_out] = est.effect(X[held_out])
            return full

        full = timed(name, fit_predict)
        out["steps"][name]["settings"] = resolved_settings(fitted[name])
        mse = float(np.mean((full[held_out] - tau[held_out]) ** 2))
        out["steps"][name]["mse_held_out"] = mse
        out["steps"][name]["mse_constant_ate"] = float(
            np.mean((tau[held_out] - tau[held_out].mean()) ** 2)
        )
        if tau_hat is None:
            tau_hat = full
            out["cate"] = name
    if tau_hat is None:
        out["cate"] = "oracle"

    if "aipw" in steps:
        effect = np.zeros(n) if tau_hat is None else tau_hat
        res = timed("aipw", lambda: aipw_ate(Y, T, e_hat, outcome_hat=m_hat, effect=effect))
        out["steps"]["aipw"].update(
            estimate=float(res.estimate), se=float(res.std_err), true_ate=float(tau.mean())
        )

    pri = tau if tau_hat is None else tau_hat
    h = held_out
    if "rate" in steps:

        def run_rate():
            gamma = dr_scores(Y[h], T[h], e_hat[h], m_hat[h], pri[h])
            return rate(gamma, pri[h], target="AUTOC", n_bootstrap=args.n_bootstrap, seed=seed)

        res = timed("rate", run_rate)
        out["steps"]["rate"].update(estimate=float(res.estimate), se=float(res.std_err))
    if "calibration" in steps:
        res = timed("calibration", lambda: calibration_test(Y[h], T[h], m_hat[h], e_hat[h], pri[h]))
        tab = res.table.set_index("term")
        out["steps"]["calibration"].update(
            {
                term: [float(tab.loc[term, "estimate"]), float(tab.loc[term, "std_err"])]
                for term in tab.index
            }
        )

    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _child(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def exponent(t1: float, t2: float, n1: int, n2: int) -> float:
    return math.log(t2 / t1) / math.log(n2 / n1)


def report(results: list[dict]) -> str:
    results = sorted(results, key=lambda r: r["n"])
    ns = [r["n"] for r in results]
    names = ["save"] + [s for s in STEPS if any(s in r["steps"] for r in results)]
    head = "| step | " + " | ".join(f"n = {n:,}: s (+MB)" for n in ns)
    pairs = list(itertools.pairwise(results))
    head += "".join(f" | exponent {a['n']:,} -> {b['n']:,}" for a, b in pairs) + " |"
    lines = [head, "|---" * (1 + len(ns) + len(pairs)) + "|"]
    for name in names:
        cells = []
        for r in results:
            s = r["steps"].get(name)
            cells.append("-" if s is None else f"{s['seconds']:.3f} (+{s['rss_growth_mb']:.0f})")
        for a, b in pairs:
            sa, sb = a["steps"].get(name), b["steps"].get(name)
            ok = sa and sb and sa["seconds"] > 0.005 and sb["seconds"] > 0.005
            cells.append(
                f"{exponent(sa['seconds'], sb['seconds'], a['n'], b['n']):.2f}" if ok else "-"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    analysis = [s for s in STEPS if s != "save"]
    totals = [sum(r["steps"][s]["seconds"] for s in analysis if s in r["steps"]) for r in results]
    lines.append(
        "| **all steps, load to calibration (s)** | "
        + " | ".join(f"{t:.1f}" for t in totals)
        + "".join(
            f" | {exponent(a, b, r1['n'], r2['n']):.2f}"
            for (a, b), (r1, r2) in zip(itertools.pairwise(totals), pairs, strict=True)
        )
        + " |"
    )
    lines.append(
        "| peak RSS of the process (MB) | "
        + " | ".join(f"{r['peak_rss_mb']:.0f}" for r in results)
        + " |" * (len(pairs) + 1)
    )
    extra = []
    for r in results:
        st = r["steps"]
        bits = [
            (
                f"n = {r['n']:,}: {r['n_features']} features, artifact {r['artifact_mb']:.0f} MB, "
                f"RSS after imports {r['rss_after_imports_mb']:.0f} MB, after simulation "
                f"{r['rss_after_simulation_mb']:.0f} MB, CATE for aipw/rate/calibration: {r['cate']}"
            )
        ]
        for name in LEARNERS:
            if name in st:
                bits.append(
                    f"{name} held-out MSE(tau) {st[name]['mse_held_out']:.4f} "
                    f"(constant true ATE: {st[name]['mse_constant_ate']:.4f})"
                )
        if "aipw" in st:
            bits.append(
                f"AIPW {st['aipw']['estimate']:.4f} (SE {st['aipw']['se']:.4f}), "
                f"true mean tau {st['aipw']['true_ate']:.4f}"
            )
        if "rate" in st:
            bits.append(f"AUTOC {st['rate']['estimate']:.4f} (SE {st['rate']['se']:.4f})")
        if "calibration" in st:
            cal = st["calibration"]
            bits.append(
                "calibration "
                + ", ".join(
                    f"{term} {cal[term][0]:.3f} (SE {cal[term][1]:.3f})"
                    for term in ("mean_prediction", "differential_prediction")
                )
            )
        extra.append("; ".join(bits))
    return "\n".join(lines + [""] + extra)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--pca", type=int, default=10, help="PCA components per scale")
    parser.add_argument("--n-estimators", type=int, default=200)
    parser.add_argument("--n-bootstrap", type=int, default=200)
    parser.add_argument(
        "--learner-settings",
        choices=["auto", "defaults"],
        default="auto",
        help="auto: the learners' large-n rules; defaults: the small-n settings at every n",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the raw measurements here")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        help="print the table of earlier --json files (merged) and exit",
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--setup", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--artifact", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.report is not None:
        print(report([r for f in args.report for r in json.loads(f.read_text())]))
        return
    if args.child is not None:
        print(json.dumps(run_one(args)))
        return
    if args.setup is not None:
        print(json.dumps(write_study(args)))
        return

    print(
        f"# {platform.machine()}, nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results = []
    common = ["--scales", str(args.scales), "--dims", str(args.dims), "--seed", str(args.seed)]
    for n in args.n:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            files = ["--artifact", str(Path(tmp) / "embeddings.parquet"), "--data", str(Path(tmp) / "study.npz")]
            setup = _child([sys.executable, __file__, "--setup", str(n), *files, *common])
            result = _child(
                [sys.executable, __file__, "--child", str(n), *files, *common, "--steps", *args.steps,
                 "--pca", str(args.pca), "--n-estimators", str(args.n_estimators),
                 "--n-bootstrap", str(args.n_bootstrap), "--learner-settings", args.learner_settings]
            )
        result["steps"]["save"] = {"seconds": setup["seconds"], "rss_growth_mb": 0.0}
        result["setup_peak_rss_mb"] = setup["setup_peak_rss_mb"]
        results.append(result)
        print(
            f"# n = {n:,} done in {time.perf_counter() - t0:.0f} s "
            f"(load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
