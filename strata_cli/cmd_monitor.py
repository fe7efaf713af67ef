"""``strata monitor``: drift since training, realised model health and a retraining recommendation.

Exit codes (for schedulers): 0 when no threshold is crossed, 1 on a breach (drift, layer shift or
realised performance past ``[monitoring]`` thresholds), 2 on an error (bad input, no model...).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strata_cli.app import (
    AsOfOpt,
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
    translate_error,
)

if TYPE_CHECKING:
    import pandas as pd

    from serving.monitoring import MonitorResult

BREACH_EXIT_CODE = 1
ERROR_EXIT_CODE = 2
#: Rows of the feature drift table printed (every alert and warning is always printed).
PRINT_FEATURES = 12


@app.command("monitor")
@handle_errors
def monitor(
    as_of: AsOfOpt,
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    model_alias: Annotated[str, typer.Option("--model-alias", help="Registered model alias to monitor.")] = "champion",
    scores: Annotated[
        list[Path] | None,
        typer.Option(
            "--scores",
            help="An earlier `strata score --out` directory to measure on realised outcomes once its horizon has "
            "passed; repeat the option for several.",
        ),
    ] = None,
    backtest_cutoffs: Annotated[
        int | None,
        typer.Option(
            "--backtest-cutoffs",
            min=0,
            help="Past cutoffs (horizon passed) to rescore for the realised-performance trend; default: "
            "monitoring.backtest_cutoffs in the configuration; 0: none.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout (progress goes to stderr).")
    ] = False,
    config_path: ConfigOpt = None,
) -> None:
    """Check drift of features, scores and layer shares since training, and the model's realised performance.

    Exits with code 1 when a monitoring threshold of the configuration is crossed (for schedulers), 0 otherwise,
    2 on an error.
    """
    from features.errors import StrataError

    try:
        breached = _monitor(as_of, data, orders, events, users, model_alias, scores, backtest_cutoffs, as_json,
                            config_path)
    except (StrataError, typer.Exit):
        raise
    except Exception as exc:
        known = translate_error(exc)  # a bad path or an out-of-range date: one line, not a traceback
        if known is not None:
            raise known from None
        # Exit code 1 means "breach" to schedulers: an unexpected failure must not look like one.
        err_console.print_exception()
        err_console.print("[bold red]error:[/] strata monitor failed unexpectedly (see the traceback above)")
        raise typer.Exit(code=ERROR_EXIT_CODE) from None
    if breached:
        raise typer.Exit(code=BREACH_EXIT_CODE)


def _monitor(
    as_of: str,
    data: Path | None,
    orders: Path | None,
    events: Path | None,
    users: Path | None,
    model_alias: str,
    scores: list[Path] | None,
    backtest_cutoffs: int | None,
    as_json: bool,
    config_path: Path | None,
) -> bool:
    """Run the monitoring and print it; returns True on a breach."""
    import json

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.config import load_config
    from features.errors import StrataError
    from serving.batch import read_scores, read_summary
    from serving.monitoring import run_monitor
    from serving.scorer import Scorer

    config = load_config(config_path)
    cutoff = parse_time(as_of)
    if data is None and orders is None:
        raise StrataError("no input: give --data DIR (with orders.csv|parquet) or --orders FILE")
    n_back = config.monitoring.backtest_cutoffs if backtest_cutoffs is None else backtest_cutoffs
    scored_dirs = list(scores or [])
    for d in scored_dirs:  # a missing or unfinished --scores fails before the model and the data are loaded
        read_summary(d)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("loading the model", total=5 + n_back + len(scored_dirs))
        scorer = Scorer.from_registry(config, alias=model_alias)
        progress.advance(task)
        scored = []
        for d in scored_dirs:
            progress.update(task, description=f"reading {d}")
            scored.append(read_scores(d))
        dataset = load_input(config, data, orders, events, users,
                             progress=lambda msg: progress.update(task, description=f"loading data: {msg}"))
        progress.advance(task)

        def step(msg: str) -> None:
            progress.update(task, description=msg)
            progress.advance(task)

        result = run_monitor(
            scorer.bundle,
            dataset,
            cutoff,
            config,
            model_name=scorer.model_name,
            model_version=scorer.model_version,
            model_alias=model_alias,
            scored=scored,
            backtest_cutoffs=n_back,
            progress=step,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print_result(result)
    return result.breached


# ----------------------------------------------------------------------------------------- printing


def _fmt(v: float, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def _status(s: str) -> str:
    return {"alert": "[bold red]alert[/]", "warn": "[yellow]warn[/]", "ok": "[green]ok[/]"}.get(s, s)


def _drift_table(title: str, table: pd.DataFrame, limit: int | None) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    flagged = int((table["status"] != "ok").sum())
    shown = table if limit is None else table.head(max(limit, flagged))
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("name", no_wrap=True, overflow="ellipsis", max_width=32)
    t.add_column("status", no_wrap=True, min_width=6)
    for col in ("PSI", "test p", "missing", "range"):
        t.add_column(col, justify="right", no_wrap=True)
    rows = shown.to_dict("records")
    for r in rows:
        test = "KS" if r["test"] == "KS" else "chi2"
        t.add_row(
            escape(str(r["name"])), _status(str(r["status"])), _fmt(r["psi"], ".3f"), f"{test} {_fmt(r['p_value'], '.1g')}",
            _fmt(r["missing_change"] * 100, "+.1f") + " pt", _fmt(r["out_of_range"], ".1%"),
        )
    console.print(t)
    for r in rows:
        if r["new_levels"]:
            console.print(f"  {escape(str(r['name']))}: levels unseen at training: {escape(str(r['new_levels']))}",
                          highlight=False)
    if len(table) > len(shown):
        console.print(f"  ... {len(table) - len(shown)} more stable (see --json)", highlight=False)


def _print_result(result: MonitorResult) -> None:
    import pandas as pd
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    m = result.model
    ref = m.get("reference_cutoff")
    console.print(
        f"monitoring [bold]{escape(str(m['name']))}[/] version {m['version']} ({m.get('alias')}) as of {result.as_of.date()}: "
        f"{result.n_users:,} users; training reference as of {ref.date() if ref is not None else 'unknown'}",
        highlight=False,
    )
    _drift_table("Feature drift since training (worst first)", result.feature_drift, PRINT_FEATURES)
    _drift_table("Score drift since training", result.score_drift, None)
    moved = result.layer_shift[(result.layer_shift["status"] == "alert") | (result.layer_shift["change"].abs() >= 0.01)]
    if not moved.empty:
        t = Table(title=f"Layer shares vs {result.layer_baseline}", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("dimension", "layer", "status", "reference", "now", "change"):
            t.add_column(col, justify="left" if col in ("dimension", "layer", "status") else "right")
        for r in moved.to_dict("records"):
            t.add_row(escape(str(r["dimension"])), escape(str(r["layer"])), _status(str(r["status"])),
                      f"{r['reference_share']:.1%}", f"{r['current_share']:.1%}", f"{r['change']:+.1%}")
        console.print(t)
    else:
        console.print(f"layer shares vs {escape(str(result.layer_baseline))}: no layer moved by 1 point or more", highlight=False)
    if result.health.empty:
        console.print("realised performance: no cutoff with outcomes yet", highlight=False)
    else:
        versions = sorted(set(result.health["model_version"].astype(str)))
        t = Table(title=f"Realised performance, model version {', '.join(versions)} (outcomes up to "
                  f"{result.label_end.date()})", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("cutoff", "source", "buyers", "churn", "risk", "AUC", "ECE", "Gini", "conv"):
            t.add_column(col, justify="left" if col in ("cutoff", "source") else "right", no_wrap=True)
        for r in result.health.to_dict("records"):
            t.add_row(
                f"{pd.Timestamp(r['cutoff']).date()}{'' if r['out_of_time'] else '*'}",
                escape(str(r["source"])) if len(versions) == 1 else f"{escape(str(r['source']))} v{escape(str(r['model_version']))}",
                f"{int(r['n_buyers']):,}", _fmt(r["churn_rate"], ".0%"), _fmt(r["mean_churn_risk"], ".0%"),
                _fmt(r["churn_auc"], ".3f"), _fmt(r["churn_ece"], ".3f"), _fmt(r["value_normalized_gini"], ".3f"),
                _fmt(r["conversion_auc"], ".3f"),
            )
        console.print(t)
        console.print("  * = a cutoff the model was trained on; churn = realised churn rate, risk = mean predicted "
                      "churn risk, Gini = value normalized Gini, conv = prospect conversion AUC", highlight=False)
        ref_m = ", ".join(f"{k} {v:.3f}" for k, v in result.health_reference.items())
        console.print(f"training backtest: {escape(str(ref_m or 'not stored'))}", highlight=False)
    console.print(f"health: {escape(result.health_status)}", highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    rec = result.recommendation
    colour = "bold red" if rec.retrain else "green"
    console.print(f"[{colour}]{'BREACH' if result.breached else 'OK'}[/]: {escape(rec.summary)}", highlight=False)
    for w in rec.watch:
        console.print(f"  watch: {escape(w)}", highlight=False)
