"""Model commands: ``strata train``, ``strata experiment``, ``strata promote``, ``strata rollback``, ``strata models``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from features.errors import StrataError
from strata_cli.app import (
    ConfigOpt,
    DataOpt,
    EventsOpt,
    OrdersOpt,
    UsersOpt,
    app,
    console,
    err_console,
    handle_errors,
    load_input,
    parse_time,
)

if TYPE_CHECKING:
    from features.config import StrataConfig
    from features.dataset import Dataset

TrainAsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Training end (ISO date or timestamp, UTC): no label window reaches past it. Default: the end of the data.",
    ),
]
HorizonOpt = Annotated[
    int | None,
    typer.Option("--horizon-days", help="Prediction horizon H in days (default: labels.horizon_days in the configuration).", min=1),
]
RunNameOpt = Annotated[str | None, typer.Option("--run-name", help="Name of the MLflow run.")]


def _load(config_path: Path | None, data: Path | None, orders: Path | None, events: Path | None, users: Path | None) -> tuple[StrataConfig, Dataset]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.config import load_config

    config = load_config(config_path)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("reading input", total=None)
        dataset = load_input(config, data, orders, events, users,
                             progress=lambda name: bar.update(task, description=f"reading and validating {name}"))
    return config, dataset


def _print_metrics(metrics: dict[str, float]) -> None:
    from rich.table import Table

    from training.train import side_by_side

    table = Table(title="Backtest on the latest cutoff (evaluation half; same rows for every column)")
    table.add_column("metric")
    for col in ("model", "BG/NBD", "rule"):
        table.add_column(col, justify="right")
    wanted = ("churn_auc", "churn_pr_auc", "churn_brier", "churn_ece", "churn_lift_top_decile",
              "value_normalized_gini", "value_spearman", "value_mae", "value_total_spend_error_pct")
    frame = side_by_side(metrics).set_index("metric")
    for key in wanted:
        if key in frame.index:
            row = frame.loc[key]
            table.add_row(key, *("" if v != v else f"{v:.4f}" for v in (row["model"], row["bgnbd"], row["rule"])))
    console.print(table)
    if "conversion_auc" in metrics:
        console.print(f"prospect conversion: AUC {metrics['conversion_auc']:.4f}, ECE {metrics['conversion_ece']:.4f}", highlight=False)


def _report(result: Any) -> None:
    _print_metrics(result.metrics)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    console.print(
        f"registered [bold]{escape(result.model_name)}[/] version {result.model_version} as [bold]challenger[/] "
        f"(run {result.run_id}, training end {result.end.isoformat()}); `strata promote` to make it champion",
        highlight=False,
    )


@app.command("train")
@handle_errors
def train(
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    as_of: TrainAsOfOpt = None,
    horizon_days: HorizonOpt = None,
    run_name: RunNameOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Train churn, conversion and value models, log the run to MLflow and register a challenger."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from training.train import train_model

    as_of_ts = parse_time(as_of) if as_of is not None else None  # before the data load: fail fast
    cfg, dataset = _load(config, data, orders, events, users)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("training", total=None)
        result = train_model(
            dataset, cfg, as_of=as_of_ts, horizon_days=horizon_days, run_name=run_name,
            progress=lambda msg: bar.update(task, description=msg),
        )
    _report(result)


@app.command("experiment")
@handle_errors
def experiment(
    trials: Annotated[int, typer.Option("--trials", help="Number of Optuna trials (each a nested MLflow run).", min=1)] = 20,
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    as_of: TrainAsOfOpt = None,
    horizon_days: HorizonOpt = None,
    run_name: RunNameOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Tune the churn model's LightGBM parameters with Optuna (trials scored by holdout churn AUC); the best
    parameters train the churn and conversion models, the value models keep the configured ones; the bundle is
    registered as challenger, as `strata train` does."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from training.experiment import run_experiment

    as_of_ts = parse_time(as_of) if as_of is not None else None  # before the data load: fail fast
    cfg, dataset = _load(config, data, orders, events, users)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("trials", total=trials)

        def on_trial(done: int, total: int, best: float) -> None:
            bar.update(task, completed=done, description=f"trials (best holdout churn AUC {best:.4f})")

        result = run_experiment(dataset, cfg, trials, as_of=as_of_ts, horizon_days=horizon_days, run_name=run_name,
                                progress=on_trial)
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best_params.items())
    console.print(f"best of {trials} trials: holdout churn AUC {result.best_value:.4f} with {escape(str(params))}", highlight=False)
    _report(result.train_result)


def _require_registry(cfg: Any) -> None:
    """Refuse a registry command where no tracking store exists yet (instead of creating an empty one)."""
    from training.tracking import missing_local_store

    missing = missing_local_store(cfg)
    if missing is not None:
        raise StrataError(f"no model registry at {missing} yet: run `strata train` first (from this directory), or "
                          "set [tracking] tracking_uri or MLFLOW_TRACKING_URI to the store models were trained into")


@app.command("promote")
@handle_errors
def promote(
    force: Annotated[bool, typer.Option("--force", help="Promote even if the challenger does not beat the champion.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (required with --force); recorded on the version.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Make the challenger the champion if it beats the current champion on the same backtest rows."""
    from features.config import load_config
    from training.registry import promote as do_promote

    cfg = load_config(config)
    _require_registry(cfg)
    decision = do_promote(cfg, force=force, reason=reason)
    name = cfg.training.model_name
    if decision.promoted:
        console.print(f"[green]promoted[/] {escape(name)} v{decision.challenger_version} to champion: {escape(decision.reason)}",
                      highlight=False)
    else:
        console.print(f"[yellow]not promoted[/] {escape(name)} v{decision.challenger_version}: {escape(decision.reason)}",
                      highlight=False)
        if decision.champion_version and decision.champion_version != decision.challenger_version:
            console.print("use --force --reason TEXT to override", highlight=False)


@app.command("rollback")
@handle_errors
def rollback(config: ConfigOpt = None) -> None:
    """Move the champion alias back to the previous champion."""
    from features.config import load_config
    from training.registry import rollback as do_rollback

    cfg = load_config(config)
    _require_registry(cfg)
    result = do_rollback(cfg)
    console.print(
        f"champion of {escape(cfg.training.model_name)} rolled back from v{result.from_version} to v{result.to_version}",
        highlight=False,
    )


@app.command("models")
@handle_errors
def models(config: ConfigOpt = None) -> None:
    """List registered model versions with their aliases and key backtest metrics."""
    from features.config import load_config
    from training.registry import list_models
    from training.tracking import missing_local_store

    cfg = load_config(config)
    missing = missing_local_store(cfg)
    if missing is not None:  # nothing trained here: say so without creating an empty registry
        console.print(f"no versions of {escape(repr(cfg.training.model_name))} registered yet (no tracking store at "
                      f"{escape(str(missing))}): run `strata train`", highlight=False)
        return
    frame = list_models(cfg)
    if frame.empty:
        console.print(f"no versions of {escape(repr(cfg.training.model_name))} registered yet: run `strata train`", highlight=False)
        return
    console.print(models_renderable(frame, cfg.training.model_name, console.width))


#: ``strata models`` columns: key in :func:`training.registry.list_models` -> header.
MODEL_COLUMNS: dict[str, str] = {
    "version": "version",
    "aliases": "aliases",
    "train_end": "train end",
    "churn_auc": "churn\nAUC",
    "bgnbd_churn_auc": "BG/NBD\nAUC",
    "value_normalized_gini": "value\nGini",
    "bgnbd_value_normalized_gini": "BG/NBD\nGini",
    "promotion_decision": "promotion",
}


def models_table(frame: Any, model_name: str) -> Any:
    """The Rich table of ``strata models``: metrics always whole (4 decimals), text columns wrapped instead.

    At 80 columns (a pipe, CI logs, the demo) the metrics were squeezed to ``0.…`` when the text columns
    refused to wrap; now the numbers and dates keep their width, and aliases and decisions wrap between words.
    """
    from rich import box
    from rich.table import Table

    title = f"Registered versions of {model_name} (backtest metrics at training)"
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for key, header in MODEL_COLUMNS.items():
        if key in ("aliases", "promotion_decision"):
            table.add_column(header, justify="left", overflow="fold", min_width=_TEXT_MIN_WIDTH)
        else:
            width = 10 if key == "train_end" else 6
            table.add_column(header, justify="left" if key == "train_end" else "right", no_wrap=True, min_width=width)
    for row in frame.itertuples(index=False):
        cells = []
        for key in MODEL_COLUMNS:
            v = getattr(row, key)
            if isinstance(v, float):
                cells.append(_metric(v))
            elif key == "train_end":
                cells.append(str(v)[:10])
            elif key == "aliases":
                cells.append(", ".join(a for a in str(v).split(",") if a))  # wraps between aliases, not inside one
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


#: The narrowest a folded text column of :func:`models_table` gets (its ``min_width``).
_TEXT_MIN_WIDTH = 11


def models_table_width(frame: Any) -> int:
    """The narrowest width at which :func:`models_table` shows every cell whole: fixed columns at their
    widest cell or header line, text columns at their longest word, two spaces between columns."""
    widths = []
    for key, header in MODEL_COLUMNS.items():
        head = max(len(line) for line in header.split("\n"))
        if key in ("aliases", "promotion_decision"):
            words = [w for v in frame[key] for w in str(v).replace(",", ", ").split()]
            widths.append(max(_TEXT_MIN_WIDTH, head, *(len(w) for w in words)))
        else:
            cells = [_metric(v) if isinstance(v, float) else str(v)[:10] for v in frame[key]]
            widths.append(max(6, head, *(len(c) for c in cells)))
    return sum(widths) + 2 * (len(widths) - 1)


def models_renderable(frame: Any, model_name: str, width: int) -> Any:
    """``strata models`` at a terminal ``width``: :func:`models_table` when every cell fits whole (about 77
    columns), otherwise one block per version, so that no metric, alias or decision is ever cut."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    if models_table_width(frame) <= width:
        return models_table(frame, model_name)
    blocks: list[Any] = [Text(f"Registered versions of {model_name} (backtest metrics at training)")]
    for row in frame.itertuples(index=False):
        aliases = ", ".join(a for a in str(row.aliases).split(",") if a)
        blocks.append(Text(f"version {row.version}" + (f" ({aliases})" if aliases else ""), style="bold"))
        lines = [f"train end {str(row.train_end)[:10]}"]
        for key, base in (("churn_auc", "bgnbd_churn_auc"), ("value_normalized_gini", "bgnbd_value_normalized_gini")):
            label = MODEL_COLUMNS[key].replace("\n", " ")
            value, baseline = _metric(getattr(row, key)) or "-", _metric(getattr(row, base)) or "-"
            lines.append(f"{label} {value} (BG/NBD {baseline})")
        lines.append(f"promotion: {row.promotion_decision}")
        blocks.append(Padding(Text("\n".join(lines)), (0, 0, 0, 4), expand=False))
    return Group(*blocks)


def _metric(value: Any) -> str:
    return "" if value is None or value != value else f"{float(value):.4f}"
