"""``strata sample``: draw whole users on Spark into a data directory that ``strata train --data`` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    parse_time,
    validation_summary_line,
)


@app.command("sample")
@handle_errors
def sample_cmd(
    out: Annotated[Path, typer.Option("--out", help="Local directory to write orders/events/users of the sampled "
                                      "users into (then: strata train --data OUT); not the input directory.")],
    data: DataOpt = None,
    orders: OrdersOpt = None,
    events: EventsOpt = None,
    users: UsersOpt = None,
    fraction: Annotated[
        float | None, typer.Option("--fraction", help="Share of users to keep, in (0, 1]; every row of a kept user is kept.")
    ] = None,
    n_users: Annotated[
        int | None, typer.Option("--n-users", help="Keep about this many users instead of --fraction (give exactly "
                                     "one of the two).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Hash seed; the same seed draws the same users (default: training.seed).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="Output file format: parquet or csv.")] = "parquet",
    rejects: Annotated[
        Path | None, typer.Option("--rejects", help="Directory to write <table>_rejected.csv files (row, reason, values).")
    ] = None,
    now: Annotated[
        str | None,
        typer.Option("--now", help="Validation time for rejecting future timestamps (ISO, UTC); default: the current time."),
    ] = None,
    spark_master: Annotated[
        str | None, typer.Option("--spark-master", help="Spark master URL (e.g. local[4], spark://host:7077, yarn, "
                                 "k8s://...); default: spark.master in the configuration, or spark-submit's.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace orders.*, events.* and users.* files already in --out (those "
                           "of the other format, and tables the sample has not, are removed).")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Sample whole users on Spark (validated input, deterministic by user_id hash) for training on one machine."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.config import load_config
    from features.errors import StrataError
    from features.spark.runs import run_sample_spark
    from strata_cli.cmd_data import check_tables_output, remove_other_tables

    cfg = load_config(config)
    if data is None and orders is None:
        raise StrataError("sample: give --data DIR or --orders FILE")
    # checked before Spark starts (which takes seconds), with the option's name
    if fraction is not None and not 0 < fraction <= 1:
        raise StrataError(f"--fraction: the share of users to sample must be in (0, 1], got {fraction}")
    if n_users is not None and n_users < 1:
        raise StrataError(f"--n-users: must be at least 1, got {n_users}")
    now_ts = parse_time(now, "--now") if now is not None else None
    _check_not_input(out, data, {"--orders": orders, "--events": events, "--users": users})
    check_tables_output(out, overwrite)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("starting Spark", total=None)
        run = run_sample_spark(data_dir=data, orders=orders, events=events, users=users, out=out, config=cfg,
                               fraction=fraction, n_users=n_users, seed=seed, fmt=fmt, master=spark_master, now=now_ts,
                               rejects_dir=rejects, progress=lambda msg: bar.update(task, description=msg))
    console.print(validation_summary_line(run.validation), markup=False, highlight=False, soft_wrap=True)
    if rejects is not None:
        console.print(f"rejected rows written to {rejects}", markup=False, highlight=False, soft_wrap=True)
    console.print(run.summary_line(), markup=False, highlight=False, soft_wrap=True)
    if overwrite:
        for path in remove_other_tables(out, run.files.values()):
            console.print(f"removed {path}", markup=False, highlight=False, soft_wrap=True)


def _check_not_input(out: Path, data: Path | None, files: dict[str, Path | None]) -> None:
    """Refuse an ``--out`` that is the input directory or holds an input table (compared as resolved local paths;
    inputs on another file system cannot be there): the sample would replace the data it is drawn from."""
    from features.errors import StrataError
    from features.io import TABLE_FILE_SUFFIXES
    from features.spark.runs import local_path
    from strata_cli.cmd_data import TABLE_NAMES

    target = local_path(out)
    if target is None:
        return
    target = target.resolve()
    inputs = [(option, local_path(path)) for option, path in files.items() if path is not None]
    data_dir = local_path(data) if data is not None else None
    if data_dir is not None:
        if data_dir.resolve() == target:
            raise StrataError(f"--out {out}: is the input directory (--data {data}); the sample would replace the "
                              f"data it is drawn from: choose another --out")
        for name in TABLE_NAMES:  # the tables read from --data (not given by their own option)
            if files.get(f"--{name}") is None:
                inputs += [("--data", data_dir / f"{name}{suffix}") for suffix in ("", *TABLE_FILE_SUFFIXES)]
    for option, path in inputs:
        if path is None or not path.exists():
            continue
        resolved = path.resolve()
        if resolved == target or resolved.parent == target:
            raise StrataError(f"--out {out}: holds the input {resolved} ({option}); the sample would replace the data "
                              f"it is drawn from: choose another --out")
