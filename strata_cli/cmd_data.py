"""Data commands: ``strata generate`` (synthetic demo data), ``strata validate`` and ``strata import cdnow``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import StrataError
from strata_cli.app import (
    ConfigOpt,
    DataOpt,
    EventsOpt,
    OrdersOpt,
    SparkMasterOpt,
    UsersOpt,
    app,
    check_output_path,
    console,
    err_console,
    handle_errors,
    parse_time,
)

FormatOpt = Annotated[
    str,
    typer.Option("--format", help="Output file format: csv (ISO-8601 UTC timestamps) or parquet."),
]


@app.command("generate")
@handle_errors
def generate(
    users: Annotated[int, typer.Option("--users", help="Number of users to generate (prospects included).", min=1)],
    out: Annotated[Path, typer.Option("--out", help="Directory to write orders.*, events.* and users.* into.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same data.")] = 42,
    bad_rows: Annotated[
        float,
        typer.Option("--bad-rows", help="Fraction (0..0.5) of realistic bad rows to mix into every written table.", min=0.0, max=0.5),
    ] = 0.0,
    end: Annotated[
        str, typer.Option("--end", help="Last moment of the history (ISO date or timestamp, UTC); default: today.")
    ] = "today",
    years: Annotated[float, typer.Option("--years", help="Length of the history in years.", min=0.1)] = 2.5,
    fmt: FormatOpt = "csv",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace orders.*, events.* and users.* files already in --out.")
    ] = False,
) -> None:
    """Generate synthetic private-domain customer data (orders, engagement events, users)."""
    import pandas as pd
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.demo_data import generate_dataset, write_dataset_with_report

    if fmt not in ("csv", "parquet"):
        raise StrataError(f"--format: expected 'csv' or 'parquet', got {fmt!r}")
    end_ts = pd.Timestamp.now(tz="UTC").floor("D") if end == "today" else parse_time(end, "--end")
    check_output_path(out, directory=True)
    existing = sorted(p.name for p in out.glob("*") if p.name.split(".")[0] in ("orders", "events", "users")) \
        if out.is_dir() else []
    if existing and not overwrite:  # --out may be a directory of real data: never replace it silently
        raise StrataError(f"--out {out}: already holds {', '.join(existing)}; choose an empty directory or pass "
                          f"--overwrite to replace them")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("generating", total=None)
        ds = generate_dataset(users, end_ts, seed=seed, years=years,
                              progress=lambda msg: bar.update(task, description=f"generating {msg}"))
        bar.update(task, description=f"writing {fmt} files")
        paths, bad = write_dataset_with_report(ds, out, fmt, bad_rows=bad_rows, seed=seed)  # type: ignore[arg-type]
    sizes = {"orders": len(ds.orders), "events": len(ds.events) if ds.events is not None else 0,
             "users": len(ds.users) if ds.users is not None else 0}
    for name, path in paths.items():
        n_bad = sum(bad.get(name, {}).values())
        extra = f" + {n_bad:,} bad rows" if n_bad else ""
        console.print(f"wrote {path} ({sizes[name]:,} rows{extra})", highlight=False, soft_wrap=True)
    console.print(f"history {end_ts - pd.Timedelta(days=years * 365.25):%Y-%m-%d} .. {end_ts:%Y-%m-%d} (UTC), seed {seed}",
                  highlight=False, soft_wrap=True)


@app.command("validate")
@handle_errors
def validate(
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Directory to write <table>_rejected.csv files (row, reason, values).")
    ] = None,
    now: Annotated[
        str | None,
        typer.Option("--now", help="Validation time for rejecting future timestamps (ISO, UTC); default: the current time."),
    ] = None,
    config: ConfigOpt = None,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (in-process pandas validation) or spark (the same rules on Spark; "
                          "inputs and --rejects may be on any Hadoop file system).")
    ] = "duckdb",
    spark_master: SparkMasterOpt = None,
) -> None:
    """Check input files row by row: rows in, accepted, rejected per reason, and warnings.

    Rejected rows are normal (exit code 0); unusable files end with exit code 2.
    """
    import json

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from features.config import load_config
    from features.validation import load_dataset

    cfg = load_config(config)
    if engine not in ("duckdb", "spark"):
        raise StrataError(f"--engine: expected duckdb or spark, got {engine!r}")
    if rejects is not None and engine == "duckdb":
        check_output_path(rejects, "--rejects", directory=True)
    now_ts = parse_time(now, "--now") if now is not None else None
    report: Any  # ValidationReport or SparkValidationReport: the same tables, totals, JSON and reject files
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("validating", total=None)
        if engine == "spark":  # Spark glue lives in the features.spark package
            from features.spark.session import spark_session
            from features.spark.validation import load_dataset_spark

            bar.update(task, description="starting Spark")
            spark = spark_session(cfg, master=spark_master, app_name="strata-validate")
            _, report = load_dataset_spark(spark, data, orders=orders, events=events, users=users, config=cfg,
                                           now=now_ts, progress=lambda name: bar.update(task, description=f"validating {name}"))
        else:
            # only the report is used: the accepted frames keep just user_id (every column is still checked)
            _, report = load_dataset(data, orders=orders, events=events, users=users, config=cfg, now=now_ts,
                                     progress=lambda name: bar.update(task, description=f"validating {name}"),
                                     columns={"orders": (), "events": (), "users": ()})
        written = report.write_rejects(rejects) if rejects is not None else {}
    if as_json:
        payload = report.to_dict()
        if written:
            payload["rejects"] = {k: str(v) for k, v in written.items()}
        typer.echo(json.dumps(payload))
        return
    summary = Table(title=f"Validation (now = {report.now:%Y-%m-%d %H:%M} UTC)")
    summary.add_column("table", no_wrap=True)
    summary.add_column("file", overflow="fold")  # a long path folds over lines rather than losing its end
    for col in ("rows in", "accepted", "rejected"):
        summary.add_column(col, justify="right", no_wrap=True)
    for name, res in report.tables.items():
        summary.add_row(name, res.path or "", f"{res.rows_in:,}", f"{res.n_accepted:,}", f"{res.n_rejected:,}")
    console.print(summary)
    for name, res in report.tables.items():
        if res.reasons:
            reasons = Table(title=f"{name}: rejected rows by reason")
            reasons.add_column("reason")
            reasons.add_column("rows", justify="right")
            for reason, count in sorted(res.reasons.items(), key=lambda kv: -kv[1]):
                reasons.add_row(reason, f"{count:,}")
            console.print(reasons)
        for warning in res.warnings:
            console.print(f"[yellow]warning[/] {name}: {warning}", highlight=False, soft_wrap=True)
    for name, path in written.items():
        console.print(f"rejected {name} rows written to {path}", highlight=False, soft_wrap=True)


import_app = typer.Typer(help="Import public data sets into the Strata data contract.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("cdnow")
@handle_errors
def import_cdnow_cmd(
    path: Annotated[Path, typer.Argument(help="CDNOW_master.txt (with header) or CDNOW_sample.txt (no header).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write orders.csv (or .parquet) into.")],
    fmt: FormatOpt = "csv",
) -> None:
    """Convert the CDNOW purchase histories into an orders table (one order per purchase line)."""
    from features.cdnow import cdnow_orders
    from features.io import write_table

    if fmt not in ("csv", "parquet"):
        raise StrataError(f"--format: expected 'csv' or 'parquet', got {fmt!r}")
    orders = cdnow_orders(path)
    out.mkdir(parents=True, exist_ok=True)
    written = write_table(orders, out / f"orders.{fmt}")
    console.print(
        f"wrote {written} ({len(orders):,} orders of {orders['user_id'].nunique():,} customers, "
        f"{orders['ordered_at'].min():%Y-%m-%d} .. {orders['ordered_at'].max():%Y-%m-%d})",
        highlight=False,
        soft_wrap=True,
    )
