"""The ``strata`` Typer application and the shared options every command uses.

Command modules (``cmd_*.py``) register their commands on :data:`app`; heavy libraries are imported
inside the command functions so that ``strata --help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import rich.markup
import typer
from rich.console import Console

from features.errors import StrataError

app = typer.Typer(
    name="strata",
    help="Strata: churn risk, future value, refined customer layers and interventions for private-domain customer pools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

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
    typer.Option("--config", help="Configuration TOML file (default: ./strata.toml if present, else built-in defaults)."),
]
AsOfOpt = Annotated[
    str,
    typer.Option("--as-of", help="Cutoff: features see only data at or before this time (ISO date or timestamp, UTC)."),
]


def handle_errors(func: F) -> F:
    """Turn :class:`StrataError` into one red line on stderr and its exit code (2)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StrataError as err:
            # the message is text, not markup: "[features] engine_memory_limit" or a value like "[1, 2]" must print as is
            err_console.print(f"[bold red]error:[/] {rich.markup.escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=err.exit_code) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Strata command-line interface."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
