"""``strata config show``: print the effective configuration."""

from __future__ import annotations

import json

import typer

from features.config import load_config
from strata_cli.app import ConfigOpt, app, console, handle_errors

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@handle_errors
def show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file values over built-in defaults) as JSON."""
    cfg = load_config(config)
    console.print_json(json.dumps(cfg.model_dump(mode="json")))
