"""``strata layers`` (rule layers of every user) and ``strata report`` (the HTML report for operators).

Both compare with a previous cutoff for KPIs and alerts (``strata layers`` only with ``--previous`` or
``--fail-on-alert``); ``--fail-on-alert`` makes them exit with code 1 when an alert fires, so a
scheduler can page someone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import rich.markup
import typer
from rich.markup import escape

from features.errors import StrataError
from strata_cli.app import (
    AsOfOpt,
    ConfigOpt,
    DataOpt,
    EventsOpt,
    OrdersOpt,
    UsersOpt,
    app,
    check_output_path,
    console,
    err_console,
    handle_errors,
    load_input,
    parse_time,
)

if TYPE_CHECKING:
    import pandas as pd

    from features.alerts import Alert
    from features.config import StrataConfig
    from features.dataset import Dataset

DEFAULT_PREVIOUS_DAYS = 30
ALERT_EXIT_CODE = 1
#: ``strata report --outcomes`` default, used only when the file exists (``strata outcomes import --store``).
DEFAULT_OUTCOMES_STORE = "outcomes.parquet"
#: ``strata report --model-alias`` default, skipped when no model has it.
DEFAULT_MODEL_ALIAS = "champion"

PreviousOpt = Annotated[
    str | None,
    typer.Option(
        "--previous",
        help=f"Previous cutoff to compare with (KPI changes, migration, alerts); default: --as-of minus "
        f"{DEFAULT_PREVIOUS_DAYS} days.",
    ),
]
FailOnAlertOpt = Annotated[
    bool,
    typer.Option(
        "--fail-on-alert",
        help=f"Exit with code {ALERT_EXIT_CODE} when an alert fires (for schedulers); compares with --previous.",
    ),
]


@dataclass
class Cutoff:
    """Features and layers of every user at one cutoff."""

    as_of: pd.Timestamp
    features: pd.DataFrame
    layers: pd.DataFrame


def _previous(as_of: pd.Timestamp, previous: str | None) -> pd.Timestamp:
    import pandas as pd

    prev = parse_time(previous, "--previous") if previous is not None else as_of - pd.Timedelta(days=DEFAULT_PREVIOUS_DAYS)
    if prev >= as_of:
        raise StrataError(f"--previous: {prev.isoformat()} must be before --as-of {as_of.isoformat()}")
    return prev


def _compute(
    cutoffs: list[pd.Timestamp],
    config: StrataConfig,
    data: Path | None,
    orders: Path | None,
    events: Path | None,
    users: Path | None,
    *,
    features_only: bool = False,
) -> tuple[Dataset, list[Cutoff]]:
    """Load and validate the data once, then features and layers at each cutoff, with a progress bar.

    ``features_only``: the caller uses the data set only through these features (see
    :func:`strata_cli.app.load_input`); the returned data set then holds only the feature input columns.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.layers import assign_layers
    from features.pipeline import DuckDBEngine

    out: list[Cutoff] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("loading data", total=1 + len(cutoffs))
        dataset = load_input(config, data, orders, events, users, features_only=features_only,
                             progress=lambda msg: progress.update(task, description=f"loading data: {msg}"))
        progress.advance(task)
        with DuckDBEngine(dataset, config=config) as engine:
            for ts in cutoffs:
                progress.update(task, description=f"features and layers as of {ts.date()}")
                features = engine.features(ts, config)
                out.append(Cutoff(ts, features, assign_layers(features, config)))
                progress.advance(task)
    return dataset, out


def _check_cutoffs(dataset: Dataset, curr: Cutoff, prev: Cutoff | None, *, output: str, previous_given: bool,
                   strict_previous: bool) -> None:
    """The shared cutoff checks (:mod:`strata_cli.cutoff_checks`) of ``layers`` and ``report``.

    No user at --as-of: an error (``output`` would be empty). No user at the previous cutoff: an error when
    ``strict_previous`` (an explicit --previous or --fail-on-alert: comparing with nobody would be a false
    all-clear), else a warning. An --as-of long after the last order or event: a warning.
    """
    from strata_cli.cutoff_checks import (
        no_user_message,
        require_users,
        warn_if_stale,
    )

    first = dataset.first_activity()
    require_users(curr.features, f"--as-of {curr.as_of.isoformat()}", first, f"{output} would be empty",
                  "check --as-of")
    if prev is not None and not len(prev.features):
        if previous_given:
            where, fix = f"--previous {prev.as_of.isoformat()}", "choose a later --previous"
        else:
            where = f"the previous cutoff {prev.as_of.isoformat()} (--as-of minus {DEFAULT_PREVIOUS_DAYS} days)"
            fix = "give a later --previous"
        if strict_previous:
            raise StrataError(no_user_message(where, first, "there is nothing to compare with (\"no alert fired\" "
                                              "would be a false all-clear)", fix))
        message = no_user_message(where, first, "KPI changes, migration and alerts compare with no user", fix)
        err_console.print(f"[yellow]warning:[/] {rich.markup.escape(message)}", highlight=False, soft_wrap=True)
    warn_if_stale(curr.as_of, dataset.last_activity())


def _print_layer_counts(layers: pd.DataFrame) -> None:
    from rich.table import Table

    from features.layer_names import DIMENSION_NAMES, LAYER_DIMENSIONS, display_name

    n = max(len(layers), 1)
    for dim, codes in LAYER_DIMENSIONS.items():
        counts = layers[dim].value_counts()
        table = Table(title=" ".join(DIMENSION_NAMES[dim]), title_justify="left")
        table.add_column("layer")
        table.add_column("code")
        table.add_column("users", justify="right")
        table.add_column("share", justify="right")
        for code in [*codes, *sorted(set(counts.index) - set(codes))]:
            k = int(counts.get(code, 0))
            table.add_row(display_name(code), code, f"{k:,}", f"{k / n:.1%}")
        console.print(table)


def _print_alerts(alerts: list[Alert], previous: pd.Timestamp) -> None:
    if not alerts:
        console.print(f"[green]no alert fired[/] (compared with {previous.date()})")
        return
    console.print(f"[bold red]{len(alerts)} alert(s) fired[/] (compared with {previous.date()}):")
    for a in alerts:
        console.print(f"  [red]![/] {escape(a.message)}", highlight=False, soft_wrap=True)


def _kpis_and_alerts(
    curr: Cutoff, prev: Cutoff, config: StrataConfig, before: Cutoff | None = None
) -> tuple[pd.DataFrame, list[Alert]]:
    from features.alerts import evaluate_alerts
    from features.kpis import kpi_table

    kpis = kpi_table(
        curr.features,
        curr.layers,
        prev.features,
        prev.layers,
        before_prev_features=before.features if before else None,
        before_prev_layers=before.layers if before else None,
    )
    return kpis, evaluate_alerts(kpis, config.alerts)


def _write_table(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix.lower() == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        raise StrataError(f"--out {out}: use a .parquet or .csv file name")


@app.command("layers")
@handle_errors
def layers_command(
    as_of: AsOfOpt,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write user_id, as_of and the four layer codes here (.parquet or .csv)."),
    ] = None,
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    explain: Annotated[
        str | None,
        typer.Option("--explain", help="Print the rule trace of this user_id (which rule put them where)."),
    ] = None,
    previous: PreviousOpt = None,
    fail_on_alert: FailOnAlertOpt = False,
    config_path: ConfigOpt = None,
) -> None:
    """Assign rule layers (lifecycle, RFM segment, value tier, activity tier) to every user as of a cutoff.

    With --previous or --fail-on-alert, also compares per-layer KPIs with the previous cutoff and prints
    the alerts that fire.

    A cutoff (--as-of, or the previous one) at which no user is known yet is an error; an --as-of more than
    30 days after the last order or event gets a warning (every user then looks churned).
    """
    from features.config import load_config
    from features.layers import explain_user

    config = load_config(config_path)
    cutoff = parse_time(as_of)
    if out is not None:
        check_output_path(out, suffixes=(".parquet", ".csv"))
    compare = previous is not None or fail_on_alert
    prev_ts = _previous(cutoff, previous) if compare else None
    dataset, results = _compute(
        [cutoff] + ([prev_ts] if prev_ts is not None else []), config, data, orders, events, users, features_only=True
    )
    curr = results[0]
    _check_cutoffs(dataset, curr, results[1] if prev_ts is not None else None, output="the layers",
                   previous_given=previous is not None, strict_previous=True)
    if out is not None:
        table = curr.layers.copy()
        table.insert(1, "as_of", curr.features["as_of"].to_numpy() if "as_of" in curr.features else cutoff)
        _write_table(table, out)
        console.print(f"[green]wrote[/] layers of {len(table):,} users as of {cutoff.date()} to {escape(str(out))}")
    _print_layer_counts(curr.layers)
    if explain is not None:
        console.print(f"[bold]rule trace of {escape(explain)}[/]")
        for line in explain_user(curr.features, explain, config):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if prev_ts is not None:
        _, alerts = _kpis_and_alerts(curr, results[1], config)
        _print_alerts(alerts, prev_ts)
        if alerts and fail_on_alert:
            raise typer.Exit(code=ALERT_EXIT_CODE)


@app.command("report")
@handle_errors
def report_command(
    as_of: AsOfOpt,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write, .html or .htm (self-contained: opens offline).")],
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    previous: PreviousOpt = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help="A `strata score --out` directory: adds score, refined-layer and action sections.",
        ),
    ] = None,
    outcomes_store: Annotated[
        Path | None,
        typer.Option(
            "--outcomes",
            help=f"Outcomes store from `strata outcomes import`: with --scores, adds measured uplift and ROI; a "
            f"file given here must exist. Default: ./{DEFAULT_OUTCOMES_STORE}, used only when it exists and "
            f"--scores is given.",
        ),
    ] = None,
    model_alias: Annotated[
        str | None,
        typer.Option("--model-alias", help=f"Registered model whose quality and drift the report shows. Default: "
                     f"{DEFAULT_MODEL_ALIAS}, left out of the report when no model has that alias yet; an alias "
                     f"given here must exist."),
    ] = None,
    monitor: Annotated[
        bool,
        typer.Option("--monitor/--no-monitor", help="Add drift and realised model health (needs a registered model)."),
    ] = True,
    title: Annotated[str, typer.Option("--title", help="Report title.")] = "Strata customer layers report",
    fail_on_alert: FailOnAlertOpt = False,
    config_path: ConfigOpt = None,
) -> None:
    """Write the HTML report: layers, migration, KPIs, alerts, feature distributions; with a model and scores
    also risk and value per layer, refined layers, interventions, uplift, model quality and drift.

    An --as-of at which no user is known yet is an error, and so is such a previous cutoff when --previous or
    --fail-on-alert is given (a warning otherwise); an --as-of more than 30 days after the last order or event
    gets a warning (every user then looks churned)."""
    from features.config import load_config
    from serving.report import Report, layer_sections

    config = load_config(config_path)
    cutoff = parse_time(as_of)
    check_output_path(out, suffixes=(".html", ".htm"))
    prev_ts = _previous(cutoff, previous)
    # Options that name something missing fail before the data is read.
    outcomes_path = _outcomes_path(outcomes_store, scores)
    if model_alias is not None:
        from training.registry import alias_version

        if alias_version(config, model_alias) is None:
            raise StrataError(f"--model-alias: no model with alias '{model_alias}' registered (model "
                              f"{config.training.model_name}); `strata models` lists the registered aliases")
    scored = outcomes = None
    if scores is not None:
        from serving.outcomes import load_store

        scored = _read_scores(scores, cutoff)
        outcomes = load_store(outcomes_path) if outcomes_path is not None else None
    # The cutoff before the previous one gives the previous value of prospect conversion.
    before_ts = prev_ts - (cutoff - prev_ts)
    dataset, (curr, prev, before) = _compute([cutoff, prev_ts, before_ts], config, data, orders, events, users)
    _check_cutoffs(dataset, curr, prev, output="the report", previous_given=previous is not None,
                   strict_previous=previous is not None or fail_on_alert)
    kpis, alerts = _kpis_and_alerts(curr, prev, config, before)
    report = Report(title, cutoff, meta={"previous cutoff 上期": str(prev_ts.date())})
    report.extend(
        layer_sections(
            curr.features,
            curr.layers,
            config,
            prev_features=prev.features,
            prev_layers=prev.layers,
            kpis=kpis,
            alerts=alerts,
        )
    )
    if scored is not None:
        from serving.report_sections_scoring import scoring_sections

        report.extend(scoring_sections(scored, outcomes))
    report.extend(_model_sections(dataset, cutoff, config, model_alias or DEFAULT_MODEL_ALIAS, monitor))
    path = report.write(out)
    console.print(
        f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:,.1f} MB, {len(report.sections)} sections)"
    )
    _print_alerts(alerts, prev_ts)
    if alerts and fail_on_alert:
        raise typer.Exit(code=ALERT_EXIT_CODE)


def _outcomes_path(given: Path | None, scores: Path | None) -> Path | None:
    """The outcomes store ``strata report`` reads: ``--outcomes`` (which needs --scores and must exist), else
    :data:`DEFAULT_OUTCOMES_STORE` when it exists and --scores is given; None: no uplift section."""
    if given is None:
        default = Path(DEFAULT_OUTCOMES_STORE)
        return default if scores is not None and default.exists() else None
    if scores is None:
        raise StrataError(f"--outcomes {given}: needs --scores (the `strata score --out` run whose actions the "
                          f"outcomes measure); add --scores or drop --outcomes")
    if not given.exists():
        raise StrataError(f"--outcomes {given}: not found; give the store written by `strata outcomes import "
                          f"--store`, or drop --outcomes")
    return given


def _read_scores(path: Path, cutoff: pd.Timestamp) -> Any:
    from serving.batch import read_scores

    scores = read_scores(path)
    if len(scores) and "as_of" in scores.columns:
        scored_at = {str(ts) for ts in scores["as_of"].dropna().unique()}
        if scored_at and scored_at != {str(cutoff)}:
            err_console.print(
                f"[yellow]warning:[/] {path} was scored as of {', '.join(sorted(scored_at))}, "
                f"the report is as of {cutoff.isoformat()}"
            )
    return scores


def _model_sections(
    dataset: Dataset, cutoff: pd.Timestamp, config: StrataConfig, alias: str, monitor: bool
) -> list[Any]:
    """Model quality and monitoring sections for the model behind ``alias``; none if no model is registered."""
    from serving.report_sections_model import champion_quality_section
    from training.registry import alias_version

    if alias_version(config, alias) is None:
        err_console.print(f"[dim]no model with alias '{escape(alias)}' registered: report has no model sections[/]")
        return []
    sections: list[Any] = []
    quality = champion_quality_section(config, alias)
    if quality is not None:
        sections.append(quality)
    if monitor:
        from serving.monitoring import run_monitor
        from serving.report_sections_monitoring import monitoring_sections
        from serving.scorer import Scorer

        try:
            scorer = Scorer.from_registry(config, alias=alias)
            result = run_monitor(
                scorer.bundle,
                dataset,
                cutoff,
                config,
                model_name=scorer.model_name,
                model_version=scorer.model_version,
                model_alias=alias,
            )
        except StrataError as err:
            # The layer report stays useful without the drift section; say why it is missing.
            err_console.print(f"[yellow]warning:[/] no monitoring section: {rich.markup.escape(str(err))}")
        else:
            sections.extend(monitoring_sections(result))
    return sections
