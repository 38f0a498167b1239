"""Benchmark: image-type heterogeneity model vs a T-learner + post-hoc k-means (METHODS.md section 6).

Simulated chips (n, 3, size, size) with two latent image types. Band 0 decides
the type: its mean brightness (``--pattern brightness``, darker/brighter by
``--shift`` per pixel) or a +/-``--shift`` checkerboard texture that leaves the
band means unchanged (``--pattern texture``). Band 1 is noise, band 2 drives the
baseline outcome:

    Y = 2 mean(band 2) + W tau + N(0, 0.5^2),  tau = 0 (type A) or 2 (type B),
    W ~ Bernoulli(0.5).

For each replicate the script fits :class:`eocausal.image_types.ImageTypeModel`
on the chips and, as the paper's validation, a T-learner on per-band chip means
whose out-of-bag per-unit effects are clustered by k-means (K = 2). It reports
type-effect recovery (vs the truth and vs an oracle that knows the types and
the baseline), type accuracy, implied-ATE error, per-unit effect RMSE, the
adjusted Rand index (ARI) between recovered types, k-means clusters and the
truth, the salience ratio |deciding band| / |noise band| and the fit times.

Usage::

    python benchmarks/image_types.py                 # n=1000, 8 px, 5 replicates, model defaults
    python benchmarks/image_types.py --pattern texture --shift 0.5 --reps 3
    python benchmarks/image_types.py --quick         # a few seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing


def simulate(n: int, size: int, shift: float, seed: int, pattern: str = "brightness"):
    """Draw chips, treatment, outcome, true types, true tau and true baseline.

    ``pattern="brightness"``: band 0 is darker/brighter by ``shift`` per pixel.
    ``pattern="texture"``: type B adds a +/-``shift`` checkerboard to band 0,
    so the band means carry no information about the type.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 2, n)
    chips = rng.normal(size=(n, 3, size, size)).astype(np.float32)
    if pattern == "brightness":
        chips[:, 0] += np.where(types == 1, shift, -shift)[:, None, None]
    else:
        board = np.where(
            (np.arange(size)[:, None] + np.arange(size)[None, :]) % 2 == 0, shift, -shift
        )
        chips[types == 1, 0] += board.astype(np.float32)
    T = rng.integers(0, 2, n)
    tau = np.where(types == 1, 2.0, 0.0)
    mu0 = 2.0 * chips[:, 2].mean(axis=(1, 2))
    Y = mu0 + T * tau + rng.normal(scale=0.5, size=n)
    return chips, T, Y, types, tau, mu0


def one_replicate(args, seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from eocausal.estimate import TLearner
    from eocausal.image_types import ImageTypeModel

    chips, T, Y, types, tau, mu0 = simulate(args.n, args.size, args.shift, seed, args.pattern)
    r = Y - mu0
    oracle = np.array(
        [r[(types == k) & (T == 1)].mean() - r[(types == k) & (T == 0)].mean() for k in (0, 1)]
    )

    params = {"random_state": seed}
    if args.epochs is not None:
        params["epochs"] = args.epochs
    if args.batch_size is not None:
        params["batch_size"] = args.batch_size
    if args.hidden is not None:
        params["hidden"] = args.hidden
    t0 = time.perf_counter()
    model = ImageTypeModel(**params).fit(chips, T, Y)
    t_model = time.perf_counter() - t0
    labels = model.type_probabilities_.argmax(axis=1)
    effects = model.type_effects_["mean"].to_numpy()
    sal = np.abs(model.salience(chips[: min(200, args.n)], 1)).mean(axis=(0, 2, 3))

    t0 = time.perf_counter()
    X = chips.mean(axis=(2, 3))
    tl = TLearner(n_estimators=args.trees, propensity=0.5, random_state=seed).fit(X, T, Y)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(tl.effect_oof_.reshape(-1, 1))
    t_tl = time.perf_counter() - t0
    # orient k-means labels so that cluster 1 has the larger mean effect
    km_labels = km.labels_
    if tl.effect_oof_[km_labels == 0].mean() > tl.effect_oof_[km_labels == 1].mean():
        km_labels = 1 - km_labels

    return {
        "tau0": effects[0],
        "tau1": effects[1],
        "oracle_gap": float(np.abs(effects - oracle).max()),
        "accuracy": float((labels == types).mean()),
        "ate_err": float(model.ate_ - tau.mean()),
        "rmse_model": float(np.sqrt(np.mean((model.effect_ - tau) ** 2))),
        "rmse_tlearner": float(np.sqrt(np.mean((tl.effect_oof_ - tau) ** 2))),
        "ari_model_truth": adjusted_rand_score(types, labels),
        "ari_kmeans_truth": adjusted_rand_score(types, km_labels),
        "ari_model_kmeans": adjusted_rand_score(labels, km_labels),
        "salience_ratio": float(sal[0] / sal[1]),
        "t_model": t_model,
        "t_tlearner": t_tl,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="units per replicate")
    parser.add_argument("--size", type=int, default=8, help="chip side in pixels")
    parser.add_argument(
        "--shift", type=float, default=0.3, help="band-0 brightness shift per pixel"
    )
    parser.add_argument(
        "--pattern",
        choices=["brightness", "texture"],
        default="brightness",
        help="what decides the type: band-0 brightness or a band-0 checkerboard",
    )
    parser.add_argument("--reps", type=int, default=5, help="replicates (seeds 0..reps-1)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="ImageTypeModel epochs (default: its own)"
    )
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--trees", type=int, default=200, help="T-learner trees per arm")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="n=300, 2 replicates, 20 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.reps, args.epochs, args.trees = 300, 2, 20, 40
        args.batch_size = args.batch_size or 64
        args.hidden = args.hidden or 16

    import torch

    torch.set_num_threads(args.threads)
    rows = [one_replicate(args, seed) for seed in range(args.reps)]
    keys = list(rows[0])
    print(
        f"pattern={args.pattern} n={args.n} size={args.size}px shift={args.shift} reps={args.reps} "
        f"(truth: tau = 0 / 2, per-unit noise sd 0.5)"
    )
    print(
        f"{'metric':<18}"
        + "".join(f"{'rep ' + str(i):>10}" for i in range(args.reps))
        + f"{'mean':>10}"
    )
    for k in keys:
        vals = [row[k] for row in rows]
        print(f"{k:<18}" + "".join(f"{v:>10.3f}" for v in vals) + f"{np.mean(vals):>10.3f}")
    mean = {k: float(np.mean([row[k] for row in rows])) for k in keys}
    print(
        f"\nper-unit effect RMSE, T-learner / image-type model: {mean['rmse_tlearner'] / mean['rmse_model']:.2f}x"
        f"\nARI vs truth: image-type model {mean['ari_model_truth']:.3f}, "
        f"T-learner + k-means {mean['ari_kmeans_truth']:.3f}; agreement model vs k-means {mean['ari_model_kmeans']:.3f}"
        f"\nfit time, model / T-learner+k-means: {mean['t_model'] / mean['t_tlearner']:.2f}x"
    )


if __name__ == "__main__":
    main()
