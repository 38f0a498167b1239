"""The ``eocausal`` command line: a thin layer over :mod:`eocausal.pipeline`.

Every command takes a YAML configuration (see ``configs/demo.yaml``). User
errors (a bad config field, a missing file, invalid data) print one line and
exit with code 2; Ctrl-C prints "aborted" and exits with code 130; nothing
else is printed as a traceback. Relative paths in the configuration, ``run_dir``
included, are taken from the configuration file's folder; ``--run-dir`` on the
command line is taken from the current folder.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from eocausal.config import RunConfig, load_config
from eocausal.errors import EocausalError

__all__ = ["app", "main"]

app = typer.Typer(
    help="Causal inference with satellite imagery: chips -> embeddings -> CATE -> RATE -> report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
weights_app = typer.Typer(help="Encoder weights: list what is registered, fetch a file.", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

console = Console(stderr=True, highlight=False)

ConfigArg = Annotated[Path, typer.Argument(help="YAML run configuration.")]
RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--run-dir",
        help="Output folder, relative to the current folder (overrides `run_dir` in the config, "
        "which is relative to the config file's folder).",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


_MAX_MESSAGE_CHARS = 2000


def _load(config: Path, run_dir: Path | None) -> RunConfig:
    """The validated config; ``--run-dir`` is made absolute here, against the current folder."""
    overrides = {"run_dir": str(run_dir.expanduser().resolve())} if run_dir else None
    return load_config(config, overrides=overrides)


def _log(quiet: bool):
    if quiet:
        return lambda message: None
    return lambda message: console.log(message)


def _wealth_summary(s: dict, run_dir: Path) -> None:
    """The wealth demo's map accuracy, then its trials with the map's value and with its change."""
    console.print(f"map of {s['n_map_cells']:,} cells: spatial-CV R\u00b2 {s['spatial_cv_r2']:.3f}, shrinkage slope "
                  f"{s['spatial_cv_slope']:.3f}; correlation with the true wealth {s['map_corr_with_true_wealth']:.3f}; "
                  f"{s['n_calibration_pairs']:,} calibration pairs")
    console.print(f"over {s['n_trials (map)']} trials, against the true ATEs:   map value        change since baseline")
    for label, key in (("slope of naive ATEs", "slope_naive_on_truth"),
                       ("slope of corrected ATEs", "slope_corrected_on_truth"),
                       ("  its OLS SE", "slope_corrected_on_truth_se"),
                       ("coverage of corrected 95% CIs", "coverage_corrected_95")):
        console.print(f"  {label:<38} {_num(s.get(f'{key} (map)'), '8.3f')}         "
                      f"{_num(s.get(f'{key} (change)'), '8.3f')}")
    console.print(f"reports: {run_dir / 'trials' / 'report.html'} (map value), "
                  f"{run_dir / 'trials_change' / 'report.html'} (change)")


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted, or a dash when it is missing (e.g. a RATE ratio with SE 0)."""
    return "–".rjust(int(spec.split(".")[0] or 0)) if value is None else format(value, spec)


def _summary(results: dict) -> None:
    """Print the headline numbers; any section may be missing or empty (panel runs have no RATE)."""
    rate = results.get("rate") or {}
    table = rate.get("table") or []
    if table:
        console.print("[bold]RATE on held-out units[/bold] (estimate, SE, ratio):")
        for row in table:
            console.print(
                f"  {escape(str(row.get('combination', '?'))):<24} {_num(row.get('estimate'), '8.3f')} "
                f"{_num(row.get('std_err'), '8.3f')} {_num(row.get('ratio'), '7.2f')}"
            )
    seq = rate.get("sequential_cv")
    if seq:
        console.print(
            f"sequential cross-fitted RATE test over {seq.get('n_folds', '?')} folds: statistic "
            f"{_num(seq.get('statistic'), '.2f')}, p = {_num(seq.get('p_value'), '.3g')}"
        )
    panel = results.get("panel") or {}
    if panel.get("effects"):
        console.print("[bold]Panel effects[/bold] (estimate, SE):")
        for row in panel["effects"]:
            console.print(
                f"  {escape(str(row.get('method', '?'))):<12} {_num(row.get('estimate'), '8.3f')} "
                f"{_num(row.get('std_err'), '8.3f')}"
            )
        if panel.get("truth") is not None:
            console.print(f"  {'truth':<12} {_num(panel['truth'], '8.3f')}")
    corr = (results.get("cate") or {}).get("corr_with_true_tau_held_out")
    if corr is not None:
        console.print(f"correlation of estimated with true tau (held out): {_num(corr, '.3f')}")
    excl = results.get("exclusions") or {}
    if excl.get("n"):
        kinds = ", ".join(f"{n} x {kind}" for kind, n in (excl.get("by_reason") or {}).items())
        console.print(
            f"[yellow]{excl['n']} units excluded[/yellow]{escape(f' ({kinds})') if kinds else ''}; "
            "every one is listed in exclusions.csv"
        )


@app.command()
def demo(
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="Output folder (default runs/STUDY).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated study and every model.")] = 0,
    study: Annotated[
        str, typer.Option(help="Built-in study: 'trial' (randomized trial, CATE and RATE), 'panel' "
                          "(programme placement over several periods, TWFE and IPW) or 'wealth' "
                          "(a wealth map, then many trials that use it as their outcome).")
    ] = "trial",
    quiet: QuietOpt = False,
) -> None:
    """Run the whole pipeline on a built-in simulated study and write a report."""
    from eocausal.pipeline import run_pipeline

    files = {"trial": "demo.yaml", "panel": "panel.yaml", "wealth": None}
    if study not in files:
        raise EocausalError(f"--study must be one of {sorted(files)}; got {study!r}")
    run_dir = run_dir or Path("runs") / ("demo" if study == "trial" else study)
    if study == "wealth":
        from eocausal.pipeline.wealth_demo import run_wealth_demo

        summary = run_wealth_demo(run_dir, seed=seed, log=_log(quiet), progress=not quiet)
        _wealth_summary(summary, run_dir.resolve())
        typer.echo(str(run_dir.resolve() / "trials" / "report.html"))
        return
    path = resources.files("eocausal") / "configs" / files[study]
    with resources.as_file(path) as cfg_path:
        cfg = load_config(cfg_path, overrides={"run_dir": str(run_dir.resolve()), "seed": seed})
    result = run_pipeline(cfg, log=_log(quiet), progress=not quiet)
    _summary(result.results)
    typer.echo(str(result.report_path))


@app.command()
def run(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Run every stage of CONFIG: chips, embeddings, features, CATE, evaluation, report."""
    from eocausal.pipeline import run_pipeline

    result = run_pipeline(_load(config, run_dir), log=_log(quiet), progress=not quiet)
    _summary(result.results)
    typer.echo(str(result.report_path))


@app.command()
def chips(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Build the chips of CONFIG: write the exclusion table and a preview of every scale."""
    from eocausal.pipeline import run_chips

    cfg = _load(config, run_dir)
    _, preview = run_chips(cfg, scan=True, log=_log(quiet))
    typer.echo(f"{cfg.run_dir / 'chips' / 'exclusions.csv'}\n{preview}")


@app.command()
def embed(
    config: ConfigArg,
    run_dir: RunDirOpt = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto (overrides encoder.accelerator).")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices per node (overrides encoder.devices).")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="Nodes (overrides encoder.num_nodes).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy, e.g. ddp (overrides encoder.strategy).")] = None,
    num_workers: Annotated[int | None, typer.Option(help="DataLoader workers per process.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Embed the chips of CONFIG (resumable: finished shards are skipped).

    Under SLURM, launch one task per GPU with srun (see scripts/slurm_embed.sh); the
    options override the config's encoder section.
    """
    from eocausal.pipeline import embed_stage, prepare_study

    cfg = _load(config, run_dir)
    overrides = {
        "accelerator": accelerator,
        "devices": int(devices) if devices is not None and devices.isdigit() else devices,
        "num_nodes": num_nodes,
        "strategy": strategy,
        "num_workers": num_workers,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg.encoder, key, value)
    result = embed_stage(cfg, prepare_study(cfg, log=_log(quiet)), log=_log(quiet), progress=not quiet)
    typer.echo(str(Path(result.out_dir) / "embeddings.parquet"))


@app.command()
def evaluate(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Estimate and evaluate effects (ATE, RATE, scales, calibration) and write the report.

    Reuses the embeddings of an earlier `eocausal embed` or `eocausal run` with the same
    units, imagery and encoder (an error when they are missing or stale), and the fitted
    models when the estimation settings are unchanged.
    """
    from eocausal.pipeline import run_pipeline

    result = run_pipeline(_load(config, run_dir), log=_log(quiet), progress=not quiet,
                          reuse_embeddings=True)
    _summary(result.results)
    typer.echo(str(result.report_path))


@app.command("fit-outcome")
def fit_outcome(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Fit the outcome model of CONFIG on its labelled locations (spatially blocked cross-fitting).

    Writes outcome/ in the run folder: the model, out-of-fold predictions, metrics per fold
    (R², RMSE, slope of prediction on truth) and the held-out calibration pairs.
    """
    from eocausal.config import load_map_config
    from eocausal.pipeline.outcome_map import fit_outcome_stage

    cfg = load_map_config(config, overrides={"run_dir": str(run_dir)} if run_dir else None)
    fit_outcome_stage(cfg, log=_log(quiet), progress=not quiet)
    metrics = cfg.run_dir / "outcome" / "metrics.csv"
    console.print(metrics.read_text().strip())
    typer.echo(str(metrics))


@app.command("map")
def map_(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Map the outcome of CONFIG over its `region`, tile by tile, into a Cloud-Optimized GeoTIFF.

    Resumable: a rerun after an interruption predicts only the missing tiles. Writes the map
    artifact (COG, calibration pairs, metadata) that `eocausal trials` reads.
    """
    from eocausal.config import load_map_config
    from eocausal.pipeline.outcome_map import map_stage

    cfg = load_map_config(config, overrides={"run_dir": str(run_dir)} if run_dir else None)
    artifact = map_stage(cfg, log=_log(quiet), progress=not quiet)
    typer.echo(str(artifact.cog_path))


@app.command()
def trials(config: ConfigArg, run_dir: RunDirOpt = None, quiet: QuietOpt = False) -> None:
    """Run every trial of CONFIG against one map: naive and corrected ATEs in one table."""
    from eocausal.config import load_trials_config
    from eocausal.pipeline.trials import trials_stage

    cfg = load_trials_config(config, overrides={"run_dir": str(run_dir)} if run_dir else None)
    result = trials_stage(cfg, log=_log(quiet))
    console.print(result.table.round(3).to_string(index=False))
    typer.echo(str(cfg.run_dir / "trials.csv"))


@weights_app.command("list")
def weights_list(
    cache_dir: Annotated[Path | None, typer.Option(help="Weights cache folder.")] = None,
) -> None:
    """Show the registered encoder weights and whether each file is present."""
    from eocausal.encode import list_weights

    frame = list_weights(cache_dir)
    typer.echo(frame.to_string(index=False))


@weights_app.command("fetch")
def weights_fetch(
    name: Annotated[str, typer.Argument(help="Registered weights name (see `eocausal weights list`).")],
    cache_dir: Annotated[Path | None, typer.Option(help="Weights cache folder.")] = None,
) -> None:
    """Download NAME into the cache and verify its sha256 (the only command that downloads)."""
    from eocausal.encode import fetch_weights

    typer.echo(str(fetch_weights(name, cache_dir)))


def _one_line(message: object) -> str:
    """``message`` on one line (whitespace runs collapsed), at most 2,000 characters, markup escaped."""
    text = " ".join(str(message).split())
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return escape(text)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    console.print(f"[yellow]warning:[/yellow] {_one_line(message)}", soft_wrap=True)


class _Interrupted(BaseException):
    """Ctrl-C in the main process.

    Raised instead of KeyboardInterrupt because Lightning turns a KeyboardInterrupt inside
    ``Trainer.predict`` into its own message and ``sys.exit(1)``; any other exception it
    re-raises unchanged.
    """


def _on_sigint(main_pid: int):
    def handler(signum: int, frame: object) -> None:
        if os.getpid() != main_pid:  # a forked DataLoader worker stops quietly on KeyboardInterrupt
            raise KeyboardInterrupt
        raise _Interrupted("interrupted (Ctrl-C)")

    return handler


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C exits with 130."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.showwarning = _show_warning
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _on_sigint(os.getpid())) if in_main_thread else None
    try:
        app(standalone_mode=False)
    except EocausalError as err:
        console.print(f"[red]error:[/red] {_one_line(err)}", soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt, _Interrupted):
        console.print("aborted")
        sys.exit(130)
    except Exception as err:  # click usage errors (bad option, missing argument)
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if isinstance(err, click.exceptions.Exit):
            sys.exit(err.exit_code)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
