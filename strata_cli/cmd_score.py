"""``strata score`` (batch scoring of every user) and ``strata outcomes import`` (measured uplift)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from features.errors import StrataError
from strata_cli.app import (
    AsOfOpt,
    ConfigOpt,
    DataOpt,
    EventsOpt,
    OrdersOpt,
    SparkMasterOpt,
    UsersOpt,
    app,
    check_output_path,
    console,
    handle_errors,
    load_input,
    parse_time,
)

if TYPE_CHECKING:
    from serving.batch import BatchSummary

outcomes_app = typer.Typer(
    help="Import intervention outcomes and measure the real uplift and ROI against the control groups.",
    no_args_is_help=True,
)
app.add_typer(outcomes_app, name="outcomes")

DEFAULT_OUTCOMES_STORE = "outcomes.parquet"


@app.command("score")
@handle_errors
def score(
    as_of: AsOfOpt,
    out: Annotated[Path, typer.Option("--out", help="Output directory (part files + _manifest.json); must not exist "
                                      "unless --overwrite.")],
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    model_alias: Annotated[
        str, typer.Option("--model-alias", help="Registered model alias to score with.")
    ] = "champion",
    budget: Annotated[
        float | None,
        typer.Option("--budget", help="Total cost (shop currency) the recommended actions may use; default: "
                     "interventions.budget in the configuration, else unlimited."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Part file format: parquet or csv.")] = "parquet",
    outcomes: Annotated[
        Path | None,
        typer.Option("--outcomes", help="Outcomes store (from `strata outcomes import`) whose contacts enforce "
                     "each action's frequency cap."),
    ] = None,
    online_store: Annotated[
        bool,
        typer.Option("--online-store/--no-online-store", help="Also write this run's features and scores "
                     "to the online store (serving.online_store): built beside the live file and swapped in "
                     "when the run is complete, so the store then holds exactly this run's users."),
    ] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    config_path: ConfigOpt = None,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (in-process, resumable part files) or spark (validation, "
                          "features and scoring on Spark; --out gets Parquet partitioned by refined_layer).")
    ] = "duckdb",
    spark_master: SparkMasterOpt = None,
    features_file: Annotated[
        Path | None,
        typer.Option("--features", help="Score this precomputed feature table (Parquet, as written by "
                     "`strata features --out`) instead of building features from --data; its as_of must be "
                     "--as-of."),
    ] = None,
) -> None:
    """Score every user: churn risk, value, layers, reasons and budgeted interventions.

    Features are built from the input files as of --as-of, or read from --features. The run is atomic and
    resumable: chunks go to <out>.tmp-<key>/ and the directory is renamed to --out only when complete;
    re-running the same command after an interruption skips finished chunks.

    An --as-of at which no user is known yet (before every order, event and join) is an error: nothing is
    written and the online store keeps its users. An --as-of more than 30 days after the last order or
    event gets a warning (every user then looks churned).
    """
    from features.config import load_config
    from features.io import find_table_files
    from serving.batch import file_fingerprint, run_batch
    from serving.online_store import OnlineStore
    from serving.outcomes import last_contacted, load_store
    from serving.scorer import Scorer

    config = load_config(config_path)
    cutoff = parse_time(as_of)
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter(f"expected parquet or csv, got {fmt!r}", param_hint="--format")
    if budget is None:
        budget = config.interventions.budget
    if budget is not None and not (math.isfinite(budget) and budget >= 0):  # before features are built
        raise StrataError(f"--budget: must be a finite non-negative amount (got {budget}); omit it for no limit")
    if engine != "spark":  # (Spark output may be on any Hadoop file system)
        check_output_path(out, directory=True)
        if overwrite and out.is_dir() and any(out.iterdir()) and not (out / "_manifest.json").exists():
            # --overwrite replaces an earlier score output, never a directory of something else (input data, ...)
            raise StrataError(f"--out {out}: not an earlier `strata score` output (no _manifest.json); --overwrite "
                              f"will not delete it, choose another --out")
    if engine not in ("duckdb", "spark"):
        raise typer.BadParameter(f"expected duckdb or spark, got {engine!r}", param_hint="--engine")
    if engine == "spark" and features_file is not None:
        raise typer.BadParameter("--engine spark builds its features on Spark; --features is for the embedded "
                                 "engine", param_hint="--features")
    if engine == "spark":  # Spark glue lives in serving.spark_scoring
        from serving.spark_scoring import run_score_spark

        if fmt != "parquet" or outcomes is not None:
            raise StrataError("--engine spark writes Parquet and does not apply --outcomes frequency caps; "
                              "drop --format/--outcomes or use --engine duckdb")
        run = run_score_spark(data_dir=data, orders=orders, events=events, users=users, as_of=cutoff, out=out,
                              config=config, alias=model_alias, master=spark_master, budget=budget,
                              overwrite=overwrite, progress=lambda msg: console.print(f"[dim]{escape(msg)}...[/]"))
        if run.report["rows_rejected"]:  # the embedded run's line, word for word
            console.print(
                f"[yellow]validation rejected {run.report['rows_rejected']:,} of {run.report['rows_in']:,} input rows; "
                "run `strata validate` for details[/]"
            )
        for line in run.summary_lines():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        if online_store:
            console.print("[dim]the online store is not updated by --engine spark (load the Parquet output instead)[/]")
        return

    if features_file is not None:
        if any(x is not None for x in (data, orders, events, users)):
            raise typer.BadParameter("give either --features or the input files (--data/--orders/--events/--users), "
                                     "not both", param_hint="--features")
        if not features_file.is_file():
            raise typer.BadParameter(f"{features_file}: no such file", param_hint="--features")
        files: dict[str, Path | None] = {"features": features_file}
    else:
        files = find_table_files(data, orders, events, users)
    scorer = Scorer.from_registry(config, alias=model_alias)
    console.print(
        f"scoring with [bold]{scorer.model_name}[/] version {scorer.model_version} ({model_alias}), as of "
        f"{cutoff.isoformat()}"
    )
    history = None
    if outcomes is not None:
        history = last_contacted(load_store(outcomes))
        console.print(f"frequency caps from {escape(str(outcomes))}: {len(history):,} past contacts")

    def build() -> object:
        # Checked before anything of the run is written (run_batch removes its empty temporary directory):
        # a run of no user would replace the online store with nothing.
        from features.pipeline import build_features
        from strata_cli.cutoff_checks import (
                    last_activity_from_features,
            require_users,
            warn_if_stale,
        )

        fix = "check --as-of"
        consequence = "nothing to score" + (", and the online store is left as it is" if online_store else "")
        if features_file is not None:
            from features.io import read_feature_table

            table = read_feature_table(features_file, cutoff)
            require_users(table, f"--as-of {cutoff.isoformat()} in {features_file}", None, consequence, fix)
            warn_if_stale(cutoff, last_activity_from_features(table, cutoff), f"the feature table {features_file}")
            return table
        dataset = load_input(config, data, orders, events, users, features_only=True)
        table = build_features(dataset, cutoff, config)
        require_users(table, f"--as-of {cutoff.isoformat()}", dataset.first_activity(), consequence, fix)
        warn_if_stale(cutoff, dataset.last_activity())
        return table

    run_args = {
        "as_of": cutoff.isoformat(),
        "inputs": {name: file_fingerprint(path) for name, path in files.items()},
    }
    summary = run_batch(
        scorer,
        build,  # type: ignore[arg-type]
        out,
        run_args=run_args,
        budget=budget,
        fmt=fmt,  # type: ignore[arg-type]
        last_contacted=history,
        online_store=OnlineStore(config.serving.online_store) if online_store else None,
        overwrite=overwrite,
        show_progress=True,
        console=console,
    )
    _print_summary(summary)


def _print_summary(summary: BatchSummary) -> None:
    from rich.table import Table

    from features.layer_names import display_name
    from serving.refinement import refined_layer_label

    s = summary
    console.print(
        f"[green]wrote[/] {s.n_users:,} users in {s.n_chunks} part file(s) to {s.out} "
        f"({s.format}, {s.seconds:.1f}s"
        + (f", {s.chunks_resumed} chunk(s) resumed" if s.chunks_resumed else "")
        + ")"
    )
    table = Table(title="Users per layer")
    table.add_column("lifecycle (rule)")
    table.add_column("users", justify="right")
    table.add_column("refined layer")
    table.add_column("users", justify="right")
    life = sorted(s.lifecycle.items(), key=lambda kv: -kv[1])
    refined = sorted(s.refined_layer.items(), key=lambda kv: -kv[1])
    for i in range(max(len(life), len(refined))):
        a = life[i] if i < len(life) else ("", None)
        b = refined[i] if i < len(refined) else ("", None)
        table.add_row(
            display_name(a[0]) if a[0] else "", f"{a[1]:,}" if a[1] is not None else "",
            refined_layer_label(b[0]) if b[0] else "", f"{b[1]:,}" if b[1] is not None else "",
        )
    console.print(table)
    console.print(
        f"buyers {s.buyers_scored:,}: expected churners {s.expected_churners:,.1f} "
        f"(mean risk {s.mean_churn_risk:.3f}); prospects {s.prospects_scored:,}: "
        f"expected converters {s.expected_converters:,.1f}"
    )
    console.print(f"predicted value over the horizon: {s.predicted_value_total:,.2f}")
    budget = "unlimited" if s.budget is None else f"{s.budget:,.2f}"
    console.print(
        f"interventions: {s.treated:,} to contact, {s.control:,} held out as control; "
        f"cost {s.budget_used:,.2f} of budget {budget}; expected incremental value "
        f"{s.expected_incremental_value_total:,.2f}"
    )


@outcomes_app.command("import")
@handle_errors
def outcomes_import(
    file: Annotated[Path, typer.Argument(help="Outcomes CSV: user_id, action_id, contacted, bought, spend "
                                         "[, contacted_at] (rows contacted in the future are rejected).")],
    scores: Annotated[
        Path, typer.Option("--scores", help="The `strata score --out` directory that recommended these actions.")
    ],
    store: Annotated[
        Path, typer.Option("--store", help="Outcomes store (Parquet) to merge into.")
    ] = Path(DEFAULT_OUTCOMES_STORE),
    by: Annotated[
        str, typer.Option("--by", help="Summarise measured uplift by action_id, refined_layer, lifecycle or all.")
    ] = "action_id",
    config_path: ConfigOpt = None,
) -> None:
    """Import outcomes, join them with the control flags of the scoring, and print the measured uplift and ROI."""
    from rich.table import Table

    from features.config import load_config
    from serving.batch import read_scores
    from serving.outcomes import SUMMARY_GROUPS, outcome_summary, read_outcomes, save_outcomes

    if by not in SUMMARY_GROUPS:  # before anything is read or merged into the store
        raise StrataError(f"--by: expected one of {', '.join(SUMMARY_GROUPS)}, got {by!r}")
    config = load_config(config_path)
    scored = read_scores(scores)
    if not len(scored):  # (an old or hand-made output: `strata score` refuses a run of no user)
        raise StrataError(f"--scores {scores}: the scoring output holds no user, so it recommended no action to "
                          f"join outcomes with; give the `strata score --out` run that recommended them")
    result = read_outcomes(file, scored, config)
    console.print(
        f"{file}: {result.rows_in:,} row(s): {len(result.accepted):,} accepted, {len(result.rejected):,} rejected"
    )
    for row in result.rejected.head(10).itertuples(index=False):
        console.print(f"  [yellow]row {row.row}[/]: {escape(str(row.reason))}", highlight=False)
    if len(result.rejected) > 10:
        console.print(f"  ... and {len(result.rejected) - 10:,} more")
    stored = save_outcomes(result.accepted, store)
    console.print(f"outcomes store {escape(str(store))}: {len(stored):,} row(s)")
    summary = outcome_summary(stored, by=by)
    table = Table(title=f"Measured uplift by {by} (95% intervals)")
    for col in ("group", "treated", "control", "rate t/c", "uplift", "relative (prior)", "ROI"):
        table.add_column(col, justify="left" if col == "group" else "right")

    def ci(v: Any, lo: Any, hi: Any, pct: bool = True) -> str:
        if v != v:  # NaN
            return "-"
        f = (lambda x: f"{x:+.1%}") if pct else (lambda x: f"{x:+.2f}")
        return f"{f(v)} [{f(lo)}, {f(hi)}]" if lo == lo else f(v)

    for r in summary.itertuples(index=False):
        table.add_row(
            escape(str(r.group)), f"{r.n_treated:,}", f"{r.n_control:,}",
            f"{r.rate_treated:.1%} / {r.rate_control:.1%}" if r.n_control and r.n_treated else "-",
            ci(r.uplift, r.uplift_lo, r.uplift_hi),
            ci(r.relative_uplift, r.relative_uplift_lo, r.relative_uplift_hi) + f" ({r.uplift_prior:.0%})",
            ci(r.roi, r.roi_lo, r.roi_hi, pct=False),
        )
    console.print(table)
