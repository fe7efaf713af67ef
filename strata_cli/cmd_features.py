"""``strata features``: compute the point-in-time feature table, or list the feature catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

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
    load_input,
    parse_time,
    validation_summary_line,
)

#: Without room for this many columns of description, ``--list`` prints one block per feature, not a table.
MIN_DESCRIPTION_WIDTH = 40


def catalog_renderable(catalog: Any, width: int) -> Any:
    """``strata features --list`` at a terminal ``width``: a table when it fits with whole names, units and
    windows and at least :data:`MIN_DESCRIPTION_WIDTH` characters of description, otherwise (80 columns,
    pipes, CI logs) one block per feature: the name on its own line, then family, unit, window and
    description indented. Nothing is ever cut."""
    from rich import box
    from rich.console import Group
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    fixed = {col: max(len(col), *(len(str(v)) for v in catalog[col])) for col in ("name", "family", "unit", "window")}
    # the table's own width: each column's 2 cells of padding, the dividers between columns and the two edges
    if sum(fixed.values()) + MIN_DESCRIPTION_WIDTH + 3 * len(catalog.columns) + 1 <= width:
        grid = Table(title=f"{len(catalog)} features", box=box.SIMPLE_HEAD)
        for col in catalog.columns:
            if col == "description":
                grid.add_column(col, min_width=MIN_DESCRIPTION_WIDTH)
            else:
                grid.add_column(col, no_wrap=True)
        for row in catalog.itertuples(index=False):
            grid.add_row(*(escape(str(v)) for v in row))
        return grid
    blocks: list[Any] = [Text(f"{len(catalog)} features (name, then family | unit | window: description)")]
    for row in catalog.itertuples(index=False):
        body = Text(f"{row.family} | {row.unit} | {row.window}: ", style="dim")
        body.append(str(row.description), style="default")
        blocks += [Text(str(row.name), style="bold"), Padding(body, (0, 0, 0, 4), expand=False)]  # wraps indented
    return Group(*blocks)


@app.command("features")
@handle_errors
def features_cmd(
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Cutoff: features see only data at or before this time (ISO date or timestamp, "
                     "UTC). Required unless --list."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Parquet file to write the feature table to (one row per user); with "
                                   "--engine spark a directory of part files (an earlier one is replaced; a directory "
                                   "holding other files is refused). Required unless --list.")
    ] = None,
    config: ConfigOpt = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Print the feature catalog (name, family, description, unit, window) and exit.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="With --list: print the catalog as the Markdown of docs/features.md.")
    ] = False,
    engine: Annotated[
        str, typer.Option("--engine", help="duckdb (in-process, --out is a Parquet file) or spark (--out is a "
                          "directory of Parquet part files; same validation and feature SQL).")
    ] = "duckdb",
    spark_master: SparkMasterOpt = None,
) -> None:
    """Compute point-in-time features as of --as-of from validated input, or list the catalog (--list)."""
    import time

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.catalog import catalog_markdown, feature_catalog
    from features.config import load_config
    from features.errors import StrataError

    cfg = load_config(config)
    if list_:
        if markdown:
            console.print(catalog_markdown(cfg), markup=False, highlight=False, soft_wrap=True)
            return
        console.print(catalog_renderable(feature_catalog(cfg), console.width))
        return
    if as_of is None or out is None:
        raise StrataError("features: --as-of and --out are required (or use --list to print the catalog)")
    if data is None and orders is None:
        raise StrataError("features: give --data DIR or --orders FILE")
    cutoff = parse_time(as_of)
    if engine not in ("duckdb", "spark"):
        raise StrataError(f"--engine: expected duckdb or spark, got {engine!r}")
    if engine == "duckdb":
        check_output_path(out)
        if out.suffix.lower() in (".csv", ".tsv", ".txt", ".json", ".xlsx", ".html"):  # it would get Parquet bytes
            raise StrataError(f"--out {out}: the feature table is written as Parquet; use a .parquet file name")
    if engine == "spark":  # Spark glue lives in the features.spark package
        from features.spark.runs import check_features_out_local, local_path, run_features_spark

        # Spark's overwrite empties the directory: refuse one holding anything but an earlier Spark output before
        # Spark starts (another file system is checked by run_features_spark before any input is read)
        local_out = local_path(out)
        if local_out is not None:
            check_output_path(local_out, directory=True)
            check_features_out_local(out)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                      transient=True) as bar:
            task = bar.add_task("starting Spark", total=None)
            run = run_features_spark(data_dir=data, orders=orders, events=events, users=users, as_of=cutoff, out=out,
                                     config=cfg, master=spark_master,
                                     progress=lambda msg: bar.update(task, description=msg))
        console.print(validation_summary_line(run.validation), markup=False, highlight=False, soft_wrap=True)
        console.print(run.summary_line(), markup=False, highlight=False, soft_wrap=True)
        if not run.n_users:
            accepted = sum(res.n_accepted for res in run.validation.tables.values())
            _warn_empty(cutoff, accepted, run.validation.rows_in, None)
        return

    from features.pipeline import DuckDBEngine

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("reading input", total=None)
        dataset = load_input(cfg, data, orders, events, users, features_only=True, summary=True,
                             progress=lambda name: bar.update(task, description=f"reading and validating {name}"))
        t0 = time.perf_counter()
        bar.update(task, description="loading into DuckDB")
        # load_dataset rejects missing and duplicate order_id, so (user_id, order_id, status) is unique:
        # the engine's duplicate check (a pass over every order) would find nothing, and needs no order_id
        with DuckDBEngine(dataset, copy=False, orders_unique=True, config=cfg) as duck:
            bar.update(task, description=f"computing features as of {cutoff.isoformat()}")
            table = duck.features(cutoff, cfg)
        bar.update(task, description=f"writing {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(out, index=False)
    n_prospects = int(table["is_prospect"].sum()) if len(table) else 0
    console.print(
        f"wrote {out}: {len(table):,} users ({n_prospects:,} prospects) x {table.shape[1] - 2} features "
        f"as of {cutoff.isoformat()} in {time.perf_counter() - t0:.1f}s",
        markup=False, highlight=False, soft_wrap=True,
    )
    if not len(table):
        _warn_empty(cutoff, _n_rows(dataset), None, dataset.first_activity())
    else:
        from strata_cli.cutoff_checks import warn_if_stale

        warn_if_stale(cutoff, dataset.last_activity())


def _warn_empty(cutoff: Any, accepted: int, rows_in: int | None, first: Any) -> None:
    """The warning for an empty feature table: no input row was accepted (every row rejected: `strata validate
    --rejects` says why), or rows were accepted but none is at or before the cutoff (a later --as-of helps)."""
    if not accepted:
        of = f" of {rows_in:,}" if rows_in else ""
        err_console.print(f"[yellow]warning:[/] no input row was accepted (validation rejected every row{of}): the "
                          f"table is empty; `strata validate --rejects DIR` writes the rejected rows with their reasons",
                          highlight=False, soft_wrap=True)
        return
    since = f" (the data starts at {first.isoformat()})" if first is not None else ""
    err_console.print(f"[yellow]warning:[/] no user is known at --as-of {cutoff.isoformat()}{since}: the table is "
                      f"empty; choose a later --as-of", highlight=False, soft_wrap=True)


def _n_rows(dataset: Any) -> int:
    """Rows of all tables of ``dataset`` (the accepted rows, after validation)."""
    return sum(len(frame) for frame in (dataset.orders, dataset.events, dataset.users) if frame is not None)
