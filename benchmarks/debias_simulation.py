"""Reproduce the simulation of "One Map, Many Trials" (Pettersson, Jerzak, Daoud, AAAI 2026).

For each true effect tau on a grid over [-2, 2] the script

1. draws a labelled population (n = 10,000): C ~ N(0, 1),
   W ~ Bernoulli(logistic(C)), Y ~ N(tau W + C, 1);
2. builds an image proxy X = g(Y) + N(0, 0.3^2) with a frozen random MLP
   g: 1 -> 50 -> 50 -> 50 -> 100 (ReLU, dropout 0.2 after each hidden layer,
   PyTorch default initialisation) that is never put in eval mode, so the
   dropout stays ON and every draw of X loses information about Y; g is
   re-drawn for every tau; X is standardised with the labelled population's
   mean and SD;
3. trains the predictor f: 100 -> 64 -> 32 -> 32 -> 1 (ReLU) by MSE with
   full-batch Adam (lr 1e-4, weight decay 1e-2), up to ``--max-epochs``
   epochs, early stopping with patience ``--patience`` on a 20 % validation
   split (best weights restored);
4. draws a fresh downstream population (n = 10,000, same tau, same g, new
   dropout masks), predicts Y_hat = f(X) and estimates the ATE by Hajek IPW
   with the true propensity on
   - the predictions (naive),
   - Tweedie-corrected predictions (sigma = SD of the validation residuals,
     KDE of the downstream predictions, as in the authors' notebook),
   - linear-calibration-corrected predictions (fitted on the validation split),
   - PPI++ with ``--n-fresh`` fresh labels drawn from the downstream population,
   - the true outcomes (oracle);
5. regresses each estimate on tau and reports slope and intercept, and draws
   ``docs/figures/debias_slopes.png``.

Stage 1 (simulation and training, uses torch) caches one ``.npz`` per tau in
``--cache-dir`` and resumes from it; stage 2 applies :mod:`eocausal.debias`
(no torch) to the cached arrays.

Examples
--------
    python benchmarks/debias_simulation.py --quick
    python benchmarks/debias_simulation.py --n-tau 50 --max-epochs 50000 \
        --cache-dir /tmp/debias_sim --figure docs/figures/debias_slopes.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eocausal.atomic import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _generator(torch):
    """The frozen random generator g (left in train mode: dropout stays on)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(1, 50),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(50, 50),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(50, 50),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(50, 100),
    )


def _predictor(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(100, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 1),
    )


def _population(rng: np.random.Generator, n: int, tau: float):
    c = rng.standard_normal(n)
    e = 1.0 / (1.0 + np.exp(-c))
    w = (rng.random(n) < e).astype(np.int64)
    y = tau * w + c + rng.standard_normal(n)
    return c, e, w, y


def simulate_one(tau: float, seed: int, args) -> dict:
    """Stage 1 for one tau: data, proxy, trained predictor, predictions."""
    import torch

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    g = _generator(torch)  # default init; never .eval(): dropout ON while generating
    for p in g.parameters():
        p.requires_grad_(False)

    def proxy(y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = g(torch.as_tensor(y, dtype=torch.float32)[:, None]).numpy().astype(np.float64)
        return x + rng.normal(0.0, 0.3, size=x.shape)

    _, _, _, y_lab = _population(rng, args.n_labelled, tau)
    x_lab = proxy(y_lab)
    mu, sd = x_lab.mean(axis=0), x_lab.std(axis=0)
    sd[sd == 0] = 1.0
    x_lab = (x_lab - mu) / sd

    perm = rng.permutation(args.n_labelled)
    n_val = round(0.2 * args.n_labelled)
    val, tr = perm[:n_val], perm[n_val:]
    xt = torch.as_tensor(x_lab[tr], dtype=torch.float32)
    yt = torch.as_tensor(y_lab[tr], dtype=torch.float32)[:, None]
    xv = torch.as_tensor(x_lab[val], dtype=torch.float32)
    yv = torch.as_tensor(y_lab[val], dtype=torch.float32)[:, None]

    f = _predictor(torch)
    opt = torch.optim.Adam(f.parameters(), lr=args.lr, weight_decay=1e-2)
    loss_fn = torch.nn.MSELoss()
    best, best_state, since, epoch = np.inf, None, 0, 0
    for epoch in range(1, args.max_epochs + 1):
        f.train()
        opt.zero_grad()
        loss = loss_fn(f(xt), yt)
        loss.backward()
        opt.step()
        f.eval()
        with torch.no_grad():
            v = loss_fn(f(xv), yv).item()
        if v < best - 1e-7:
            best, since = v, 0
            best_state = {k: t.detach().clone() for k, t in f.state_dict().items()}
        else:
            since += 1
            if since >= args.patience:
                break
    f.load_state_dict(best_state)
    f.eval()

    _, e_d, w_d, y_d = _population(rng, args.n_downstream, tau)
    x_d = (proxy(y_d) - mu) / sd
    with torch.no_grad():
        yhat_val = f(xv).numpy()[:, 0].astype(np.float64)
        yhat_d = f(torch.as_tensor(x_d, dtype=torch.float32)).numpy()[:, 0].astype(np.float64)
    fresh = rng.choice(args.n_downstream, size=args.n_fresh, replace=False)
    return {
        "tau": tau,
        "seed": seed,
        "epochs": epoch,
        "best_val_mse": best,
        "y_val": y_lab[val],
        "yhat_val": yhat_val,
        "y": y_d,
        "yhat": yhat_d,
        "w": w_d,
        "e": e_d,
        "fresh": fresh,
    }


def analyse_one(d: dict, args) -> dict:
    """Stage 2 for one tau: naive, Tweedie, LCC, PPI and oracle ATEs (no torch).

    Also: Tweedie with the KDE of the calibration (validation-split)
    predictions instead of the downstream ones, the correction that
    ``select_correction`` picks on the validation split, and whether the 95 %
    intervals of ``debiased_ate`` (sampling + calibration SE) and of PPI++
    cover the true tau.
    """
    import warnings

    from eocausal.debias import (
        TweedieCorrection,
        debiased_ate,
        ppi_ate,
        select_correction,
    )
    from eocausal.errors import CalibrationWarning

    y, yhat, w, e = d["y"], d["yhat"], d["w"], d["e"]
    tau = float(d["tau"])

    def ipw(v):
        a1, a0 = w / e, (1 - w) / (1 - e)
        return float(np.sum(v * a1) / a1.sum() - np.sum(v * a0) / a0.sum())

    resid = d["yhat_val"] - d["y_val"]
    cal = {"calibration_predicted": d["yhat_val"], "calibration_truth": d["y_val"]}
    with warnings.catch_warnings():
        # a few downstream predictions beyond the validation split's range: expected
        warnings.simplefilter("ignore", CalibrationWarning)
        tw = debiased_ate(
            yhat, w, propensity=e, method="tweedie", residuals=resid,
            tweedie=TweedieCorrection(sigma_source="validation_residuals", step=args.step),
            n_bootstrap=args.n_bootstrap, seed=args.seed, **cal,
        )  # fmt: skip
        lcc = debiased_ate(
            yhat, w, propensity=e, method="linear", n_bootstrap=args.n_bootstrap,
            seed=args.seed, **cal,
        )  # fmt: skip
        tw_cal = TweedieCorrection(
            sigma_source="validation_residuals",
            density_source="calibration_predictions",
            step=args.step,
        ).fit(d["yhat_val"], d["y_val"], residuals=resid)
        chosen = select_correction(d["yhat_val"], d["y_val"], seed=args.seed).method
    truth = np.full(y.shape, np.nan)
    truth[d["fresh"]] = y[d["fresh"]]
    ppi = ppi_ate(yhat, w, truth, propensity=e)
    return {
        "tau": tau,
        "naive": tw.naive,
        "tweedie": tw.estimate,
        "linear": lcc.estimate,
        "ppi": ppi.estimate,
        "oracle": ipw(y),
        "tweedie_calkde": ipw(tw_cal.transform(yhat)),
        "auto_pick": chosen,
        "cover_tweedie": tw.ci_lower <= tau <= tw.ci_upper,
        "cover_linear": lcc.ci_lower <= tau <= lcc.ci_upper,
        "cover_ppi": ppi.ci_lower <= tau <= ppi.ci_upper,
        "se_tweedie": tw.std_err,
        "se_linear": lcc.std_err,
        "se_ppi": ppi.std_err,
        "sigma": tw.diagnostics["correction"]["sigma"],
        "k": lcc.diagnostics["correction"]["slope"],
        "epochs": int(d["epochs"]),
        "val_mse": float(d["best_val_mse"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-tau", type=int, default=50)
    ap.add_argument("--tau-min", type=float, default=-2.0)
    ap.add_argument("--tau-max", type=float, default=2.0)
    ap.add_argument("--n-labelled", type=int, default=10_000)
    ap.add_argument("--n-downstream", type=int, default=10_000)
    ap.add_argument("--n-fresh", type=int, default=100)
    ap.add_argument("--max-epochs", type=int, default=50_000)
    ap.add_argument("--patience", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument(
        "--step",
        type=float,
        default=1e-3,
        help="central-difference step for the Tweedie score (authors: small finite step)",
    )
    ap.add_argument("--n-bootstrap", type=int, default=100, help="calibration bootstrap for SEs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="one .npz per tau; existing files are reused (resume)",
    )
    ap.add_argument("--figure", type=Path, default=None)
    ap.add_argument("--only-simulate", action="store_true", help="stage 1 only")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="seconds: 5 tau values, n=2,000, 300 epochs (NOT the paper's setup)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n_tau, args.n_labelled, args.n_downstream = 5, 2_000, 2_000
        args.max_epochs, args.patience, args.lr = 300, 50, 1e-3

    taus = np.linspace(args.tau_min, args.tau_max, args.n_tau)
    rows = []
    t_all = time.perf_counter()
    for i, tau in enumerate(taus):
        path = args.cache_dir / f"tau_{i:03d}_of_{args.n_tau:03d}.npz" if args.cache_dir else None
        t0 = time.perf_counter()
        if path is not None and path.exists():
            d = dict(np.load(path))
            d = {k: (v.item() if v.ndim == 0 else v) for k, v in d.items()}
            src = "cached"
        else:
            import torch

            torch.set_num_threads(args.threads)
            d = simulate_one(float(tau), args.seed * 100_003 + i, args)
            if path is not None:
                with atomic_path(path) as tmp:
                    np.savez(tmp, **d)
            src = "trained"
        print(
            f"tau[{i:2d}] = {tau:+.3f}: {src}, {int(d['epochs'])} epochs, "
            f"val MSE {float(d['best_val_mse']):.3f}, {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        if not args.only_simulate:
            rows.append(analyse_one(d, args))
    if args.only_simulate:
        return 0

    import pandas as pd

    table = pd.DataFrame(rows)
    print(f"\n{len(taus)} tau values, total {time.perf_counter() - t_all:.1f} s\n")
    print(table.round(3).to_string(index=False))
    fits = {}
    print("\nregression of estimated ATE on true tau")
    print(
        f"{'estimator':<15} {'slope':>8} {'intercept':>10} {'RMSE':>8} {'mean SE':>8} {'cover95':>8}"
    )
    for name in ("naive", "tweedie", "linear", "ppi", "oracle", "tweedie_calkde"):
        slope, intercept = np.polyfit(table["tau"], table[name], 1)
        rmse = float(np.sqrt(np.mean((table[name] - table["tau"]) ** 2)))
        fits[name] = (slope, intercept)
        se = f"{table['se_' + name].mean():8.3f}" if f"se_{name}" in table else f"{'':>8}"
        cov = f"{table['cover_' + name].mean():8.2f}" if f"cover_{name}" in table else f"{'':>8}"
        print(f"{name:<15} {slope:8.3f} {intercept:10.3f} {rmse:8.3f} {se} {cov}")
    picks = table["auto_pick"].value_counts().to_dict()
    print(f"\nselect_correction on the validation split picked: {picks}")
    print(
        f"\nratio of slopes: Tweedie / naive = {fits['tweedie'][0] / fits['naive'][0]:.2f}, "
        f"linear / naive = {fits['linear'][0] / fits['naive'][0]:.2f}"
    )
    if args.figure is not None:
        _figure(table, fits, args)
        print(f"figure written to {args.figure}")
    return 0


def _figure(table, fits, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    grid = np.array([table["tau"].min(), table["tau"].max()])
    ax.plot(grid, grid, color="0.6", lw=1, ls="--", label="45° (unbiased)")
    styles = {
        "naive": ("tab:red", "o"),
        "tweedie": ("tab:blue", "s"),
        "linear": ("tab:green", "^"),
        "ppi": ("tab:purple", "x"),
    }
    labels = {
        "naive": "naive (predictions)",
        "tweedie": "Tweedie",
        "linear": "linear calibration",
        "ppi": f"PPI++ ({args.n_fresh} fresh labels)",
    }
    for name, (col, mk) in styles.items():
        slope, icpt = fits[name]
        ax.scatter(
            table["tau"],
            table[name],
            s=16,
            color=col,
            marker=mk,
            alpha=0.8,
            label=f"{labels[name]}: slope {slope:.3f}, intercept {icpt:+.3f}",
        )
        ax.plot(grid, icpt + slope * grid, color=col, lw=1)
    ax.set_xlabel("true ATE τ")
    ax.set_ylabel("estimated ATE (Hajek IPW, true propensity)")
    ax.set_title(
        f"Debiasing predicted outcomes ({len(table)} values of τ, n = {args.n_downstream:,} per τ)",
        fontsize=10,
    )
    ax.legend(fontsize=7.5, loc="upper left")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
