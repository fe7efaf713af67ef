"""Data commands: ``strata generate`` (synthetic demo data), ``strata validate`` and ``strata import cdnow``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from features.errors import StrataError
from features.io import TABLE_FILE_SUFFIXES
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

if TYPE_CHECKING:
    import pandas as pd

FormatOpt = Annotated[
    str,
    typer.Option("--format", help="Output file format: csv (ISO-8601 UTC timestamps) or parquet."),
]

#: The tables of a data directory.
TABLE_NAMES = ("orders", "events", "users")


def existing_tables(directory: Path) -> list[Path]:
    """The entries of ``directory`` named ``orders.*``, ``events.*`` or ``users.*`` (or ``orders``, a directory of
    Spark part files), sorted; none when ``directory`` is not an existing directory."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.split(".")[0] in TABLE_NAMES)


def check_tables_output(out: Path, overwrite: bool, option: str = "--out") -> None:
    """Before any work: refuse an ``out`` directory that cannot take a data set, or that already holds
    ``orders.*``, ``events.*`` or ``users.*`` unless ``overwrite``. Even with ``overwrite`` a directory where a
    table file is read from is refused (it is never deleted, and would stay beside the new file)."""
    check_output_path(out, option, directory=True)
    existing = existing_tables(out)
    if existing and not overwrite:  # --out may be a directory of real data: never replace it silently
        raise StrataError(f"{option} {out}: already holds {', '.join(p.name for p in existing)}; choose an empty "
                          f"directory or pass --overwrite to replace them")
    readable = {f"{name}{suffix}" for name in TABLE_NAMES for suffix in ("", *TABLE_FILE_SUFFIXES)}
    dirs = [p.name for p in existing if p.is_dir() and p.name in readable]
    if dirs:
        raise StrataError(f"{option} {out}: {', '.join(dirs)} {'is a directory' if len(dirs) == 1 else 'are directories'}"
                          f", which --overwrite does not remove (it is read as a table); move it away or choose "
                          f"another {option}")


def remove_other_tables(out: Path, written: Iterable[Path]) -> list[Path]:
    """After a write with ``--overwrite``: remove the table files in ``out`` that this write did not produce (the
    other format of a written table, or a table the new data set has not), so that ``out`` holds one data set.

    Returns
    -------
    The removed files.
    """
    keep = {Path(p).name for p in written}
    removed = []
    for name in TABLE_NAMES:
        for suffix in TABLE_FILE_SUFFIXES:
            path = out / f"{name}{suffix}"
            if path.name not in keep and (path.is_file() or path.is_symlink()):
                path.unlink()
                removed.append(path)
    return removed


def check_history_range(end_ts: pd.Timestamp, years: float, now: pd.Timestamp, min_timestamp: str) -> None:
    """Refuse a demo history the validator would reject: one ending after ``now`` (future timestamps) or starting
    before ``min_timestamp`` (``[data] min_timestamp``); the message names the option and the allowed range."""
    import pandas as pd

    earliest = parse_time(min_timestamp, "[data] min_timestamp")
    span = pd.Timedelta(days=years * 365.25)  # beyond a timestamp's range: translated into the range message
    first_end = (earliest + span).ceil("D") if span <= now - earliest else None  # (no overflow past 2262)
    allowed = (f"with --years {years:g}, choose an --end from {first_end:%Y-%m-%d} to now ({now:%Y-%m-%d %H:%M} UTC)"
               if first_end is not None and first_end <= now else "")
    if end_ts > now:
        raise StrataError(f"--end {end_ts.isoformat()}: is after the current time ({now:%Y-%m-%d %H:%M} UTC) and "
                          f"validation rejects future timestamps; " + (allowed or "choose an --end at or before now"))
    if end_ts - span < earliest:
        contract = (f"before [data] min_timestamp {earliest:%Y-%m-%d}, the earliest time validation accepts (see "
                    f"`strata config show`)")
        if not allowed:
            most = (now - earliest) / pd.Timedelta(days=365.25)
            raise StrataError(f"--years {years:g}: a history that long would start {contract}; at most {most:.1f} "
                              f"years fit before now: choose fewer --years")
        raise StrataError(f"--end {end_ts:%Y-%m-%d}: the {years:g}-year history would start on "
                          f"{end_ts - span:%Y-%m-%d}, {contract}; {allowed}, or fewer --years")


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
        bool, typer.Option("--overwrite", help="Replace orders.*, events.* and users.* files already in --out (those "
                           "of the other format are removed).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Generate synthetic private-domain customer data (orders, engagement events, users).

    The history must end by now and start at or after data.min_timestamp, so that validation accepts it.
    """
    import pandas as pd
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.config import load_config
    from features.demo_data import generate_dataset, write_dataset_with_report

    cfg = load_config(config)
    if fmt not in ("csv", "parquet"):
        raise StrataError(f"--format: expected 'csv' or 'parquet', got {fmt!r}")
    now = pd.Timestamp.now(tz="UTC")
    end_ts = now.floor("D") if end == "today" else parse_time(end, "--end")
    check_history_range(end_ts, years, now, cfg.data.min_timestamp)
    check_tables_output(out, overwrite)
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
        console.print(f"wrote {escape(str(path))} ({sizes[name]:,} rows{escape(extra)})", highlight=False, soft_wrap=True)
    if overwrite:
        for path in remove_other_tables(out, paths.values()):
            console.print(f"removed {escape(str(path))}", highlight=False, soft_wrap=True)
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

    Rejected rows are normal (exit code 0); unusable files, or every row rejected, end with exit code 2.
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
        _refuse_nothing_accepted(report, rejects)
        return
    summary = Table(title=f"Validation (now = {report.now:%Y-%m-%d %H:%M} UTC)")
    summary.add_column("table", no_wrap=True)
    summary.add_column("file", overflow="fold")  # a long path folds over lines rather than losing its end
    for col in ("rows in", "accepted", "rejected"):
        summary.add_column(col, justify="right", no_wrap=True)
    for name, res in report.tables.items():
        summary.add_row(name, escape(str(res.path or "")), f"{res.rows_in:,}", f"{res.n_accepted:,}", f"{res.n_rejected:,}")
    console.print(summary)
    for name, res in report.tables.items():
        if res.reasons:
            reasons = Table(title=f"{name}: rejected rows by reason")
            reasons.add_column("reason")
            reasons.add_column("rows", justify="right")
            for reason, count in sorted(res.reasons.items(), key=lambda kv: -kv[1]):
                reasons.add_row(escape(str(reason)), f"{count:,}")
            console.print(reasons)
        for warning in res.warnings:
            console.print(f"[yellow]warning[/] {name}: {escape(warning)}", highlight=False, soft_wrap=True)
    for name, path in written.items():
        console.print(f"rejected {name} rows written to {escape(str(path))}", highlight=False, soft_wrap=True)
    _refuse_nothing_accepted(report, rejects)


def _refuse_nothing_accepted(report: Any, rejects: Path | None) -> None:
    """Exit 2 (after the report is printed) when rows were read and every one was rejected: nothing can use the
    data. The message names the most frequent reason."""
    accepted = sum(res.n_accepted for res in report.tables.values())
    if accepted or not report.rows_in:
        return
    reasons: dict[str, int] = {}
    for res in report.tables.values():
        for reason, count in res.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + count
    top = f" (most often: {max(reasons, key=lambda r: reasons[r])})" if reasons else ""
    where = (f"they are written to {rejects}" if rejects is not None
             else "`strata validate --rejects DIR` writes them with their reasons")
    raise StrataError(f"no row was accepted: validation rejected all {report.rows_in:,} input rows{top}; {where}")


import_app = typer.Typer(help="Import public data sets into the Strata data contract.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("cdnow")
@handle_errors
def import_cdnow_cmd(
    path: Annotated[Path, typer.Argument(help="CDNOW_master.txt (with header) or CDNOW_sample.txt (no header).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write orders.csv (or .parquet) into.")],
    fmt: FormatOpt = "csv",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace orders.*, events.* and users.* files already in --out: the "
                           "orders file is written and the other tables' files removed (CDNOW has only orders).")
    ] = False,
) -> None:
    """Convert the CDNOW purchase histories into an orders table (one order per purchase line)."""
    import os

    from features.cdnow import cdnow_orders, write_orders

    if fmt not in ("csv", "parquet"):
        raise StrataError(f"--format: expected 'csv' or 'parquet', got {fmt!r}")
    check_tables_output(out, overwrite)
    orders = cdnow_orders(path)
    try:
        written = write_orders(orders, out, fmt)
    except OSError as err:  # pyarrow's errors name no file: say which one, and what to do
        reason = os.strerror(err.errno).lower() if err.errno else str(err)
        raise StrataError(f"--out {out}: cannot write {out / f'orders.{fmt}'} ({reason}); choose a writable "
                          f"directory for --out") from None
    removed = remove_other_tables(out, [written]) if overwrite else []
    console.print(
        f"wrote {written} ({len(orders):,} orders of {orders['user_id'].nunique():,} customers, "
        f"{orders['ordered_at'].min():%Y-%m-%d} .. {orders['ordered_at'].max():%Y-%m-%d})",
        highlight=False,
        soft_wrap=True,
    )
    for removed_path in removed:
        console.print(f"removed {escape(str(removed_path))}", highlight=False, soft_wrap=True)
