"""The ``strata`` Typer application and the shared options every command uses.

Command modules (``cmd_*.py``) register their commands on :data:`app`; heavy libraries are imported
inside the command functions so that ``strata --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import rich.markup
import typer
from rich.console import Console

from features.errors import StrataError

if TYPE_CHECKING:
    from features.config import StrataConfig
    from features.dataset import Dataset

app = typer.Typer(
    name="strata",
    help="Strata: churn risk, future value, refined customer layers and interventions for private-domain customer pools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def hide_flag_types() -> None:
    """Typer's Rich help shows a type such as ``<bool>`` after every option, flags included, which reads as if
    ``--overwrite`` took a value; flags get no type column entry (options with a value keep theirs)."""
    from typer.core import TyperOption

    original = getattr(TyperOption, "display_type_rich", None)
    if original is None:  # another Typer: leave its help as it is
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


console = Console()
err_console = Console(stderr=True)
# Piped into a file or a log, a line is written whole instead of being broken at 80 columns (mid-sentence, and
# mid-number); a terminal still wraps at its width. Tables keep their layout either way.
console.soft_wrap = not console.is_terminal
err_console.soft_wrap = not err_console.is_terminal

F = TypeVar("F", bound=Callable[..., Any])

# Options shared by commands that read data.
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="Directory with orders.csv|parquet and optional events.*, users.*"),
]
OrdersOpt = Annotated[Path | None, typer.Option("--orders", help="Orders file (CSV or Parquet); overrides --data.")]
EventsOpt = Annotated[Path | None, typer.Option("--events", help="Events file (CSV or Parquet); overrides --data.")]
UsersOpt = Annotated[Path | None, typer.Option("--users", help="Users file (CSV or Parquet); overrides --data.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Configuration TOML file (default: ./strata.toml if present, else built-in defaults).",
        dir_okay=False,  # a directory is rejected by name; a missing file by load_config
    ),
]
SparkMasterOpt = Annotated[
    str | None,
    typer.Option("--spark-master", help="With --engine spark: Spark master URL (e.g. local[4], spark://host:7077, yarn, "
                 "k8s://...); default: spark.master in the configuration, or spark-submit's."),
]
AsOfOpt = Annotated[
    str,
    typer.Option("--as-of", help="Cutoff: features see only data at or before this time (ISO date or timestamp, UTC)."),
]


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A log handler that writes to whatever ``sys.stderr`` is when a record is logged.

    ``logging.StreamHandler`` keeps the stream it was given; while a Rich progress display is live it replaces
    ``sys.stderr`` with a proxy that prints above the display, so log lines no longer land inside the
    progress line."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # set by StreamHandler.__init__; the current sys.stderr is used instead
        pass


def reflow_help(text: str) -> str:
    """A docstring as help text: the lines of each paragraph joined into one (Typer's Rich help keeps the
    source's line breaks inside a paragraph, then wraps again, which broke sentences mid-line); list items
    (lines starting with ``-``, ``*`` or ``1.``) stay on lines of their own."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            stripped = line.strip()
            if lines and not re.match(r"^([-*]|\d+\.)\s", stripped):
                lines[-1] += " " + stripped
            else:
                lines.append(stripped)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def reflow_command_help(typer_app: typer.Typer) -> None:
    """:func:`reflow_help` on the help of every command of ``typer_app`` and of its sub-apps."""
    for command in typer_app.registered_commands:
        text = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        if text:
            command.help = reflow_help(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            reflow_command_help(group.typer_instance)


def translate_error(err: BaseException) -> StrataError | None:
    """A one-line :class:`StrataError` for an exception that is the user's input, not a bug; else None.

    * a file-system error on a path the user gave (an output whose parent is a file, a directory where a file is
      expected, a read-only location): names the path and what to do;
    * a date or duration beyond what a timestamp can hold (``--horizon-days 100000``, ``--backtest-cutoffs``
      reaching back thousands of years): names the range.
    """
    if isinstance(err, StrataError):
        return err
    if isinstance(err, OSError) and getattr(err, "filename", None) is not None:
        reason = err.strerror or type(err).__name__
        return StrataError(f"{err.filename}: {reason.lower()}; check the path (a file where a directory is needed, "
                           f"or the reverse?) and that it is writable")
    if isinstance(err, OverflowError) or type(err).__name__ in ("OutOfBoundsDatetime", "OutOfBoundsTimedelta"):
        from features.cutoffs import TIME_RANGE

        return StrataError(f"a date or duration is out of the supported range ({TIME_RANGE}): {err}; check --as-of, "
                           f"--end, --years, --horizon-days and --backtest-cutoffs")
    return None


def parse_time(value: str, option: str = "--as-of") -> Any:
    """``features.cutoffs.parse_as_of`` for a command-line option (imported when called, not at start-up):
    its errors (unparseable, or a date no timestamp can hold, such as ``2999-01-01``) name ``option``."""
    from features.cutoffs import parse_as_of

    return parse_as_of(value, option)


def check_output_path(path: Path, option: str = "--out", *, directory: bool = False,
                      suffixes: tuple[str, ...] = ()) -> None:
    """Refuse an output path that cannot work before any input is read: a directory where a file is written (or
    the reverse), a parent that is a file, or a file name whose suffix says another format than is written."""
    kind = "directory" if directory else "file"
    if path.exists() and path.is_dir() != directory:
        actual = "a directory" if path.is_dir() else "a file"
        raise StrataError(f"{option} {path}: is {actual}, expected a {kind} path; choose another {option}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StrataError(f"{option} {path}: {parent} is a file, not a directory; choose another {option}")
            break
    if suffixes and not directory and path.suffix.lower() not in suffixes:
        raise StrataError(f"{option} {path}: use a file name ending in {' or '.join(suffixes)}")


def validation_summary_line(report: Any) -> str:
    """One line: rows read, accepted and rejected in total and per table (embedded or Spark report)."""
    tables = report.tables
    per_table = ", ".join(
        f"{name} {res.n_accepted:,}/{res.rows_in:,}" + (f" ({res.n_rejected:,} rejected)" if res.n_rejected else "")
        for name, res in tables.items()
    )
    accepted = sum(res.n_accepted for res in tables.values())
    return f"validated {report.rows_in:,} rows: {accepted:,} accepted, {report.rows_rejected:,} rejected [{per_table}]"


def load_input(
    config: StrataConfig,
    data: Path | None,
    orders: Path | None,
    events: Path | None,
    users: Path | None,
    *,
    progress: Callable[[str], None] | None = None,
    features_only: bool = False,
    summary: bool = False,
) -> Dataset:
    """Read and validate a command's input tables: the accepted rows, with the rejected ones reported.

    ``summary`` prints :func:`validation_summary_line` on stdout; otherwise one warning goes to stderr,
    only when rows were rejected (``strata validate`` lists them with their reasons). ``progress`` is told
    which table is being read. ``features_only`` is for a command that only computes features from the
    data (in DuckDB): the frames keep only :data:`features.pipeline.VALIDATED_FEATURE_INPUT_COLUMNS`, with
    text as Arrow dictionaries (at 1M users, no 20M order ids as Python strings), and the engine may be
    told the orders are unique (validation rejects duplicate and missing ``order_id``).
    """
    from features.validation import load_dataset

    if features_only:
        from features.pipeline import VALIDATED_FEATURE_INPUT_COLUMNS

        dataset, report = load_dataset(data, orders=orders, events=events, users=users, config=config,
                                       progress=progress, columns=VALIDATED_FEATURE_INPUT_COLUMNS, arrow_text=True)
    else:
        dataset, report = load_dataset(data, orders=orders, events=events, users=users, config=config,
                                       progress=progress)
    if summary:
        console.print(validation_summary_line(report), markup=False, highlight=False, soft_wrap=True)
    elif report.rows_rejected:
        err_console.print(
            f"[yellow]validation rejected {report.rows_rejected:,} of {report.rows_in:,} input rows[/]; "
            "`strata validate` lists them with their reasons",
            highlight=False, soft_wrap=True,
        )
    return dataset


def handle_errors(func: F) -> F:
    """Turn :class:`StrataError` (and the user errors :func:`translate_error` knows) into one red line on stderr
    and its exit code (2)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (anything not translated is re-raised unchanged)
            err = translate_error(exc)
            if err is None:
                raise
            # the message is text, not markup: "[features] engine_memory_limit" or a value like "[1, 2]" must print as is
            err_console.print(f"[bold red]error:[/] {rich.markup.escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=err.exit_code) from None

    return wrapper  # type: ignore[return-value]


#: The libraries whose versions decide results (the model file format, the SQL engine, Spark), for ``--version``.
VERSION_PACKAGES: tuple[str, ...] = ("duckdb", "lightgbm", "scikit-learn", "pandas", "pyarrow", "mlflow", "bentoml",
                                     "pyspark")


def version_lines() -> list[str]:
    """``strata <version>`` and the installed version of each of :data:`VERSION_PACKAGES` (or "not installed")."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return [f"strata {installed('strata')} (Python {platform.python_version()})",
            *(f"  {name} {installed(name)}" for name in VERSION_PACKAGES)]


def _print_version(value: bool) -> None:
    if value:
        for line in version_lines():
            console.print(line, markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", help="Print the versions of Strata and of the libraries it runs on, and exit.",
                     callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Strata command-line interface."""
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
