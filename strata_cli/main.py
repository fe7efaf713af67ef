"""Entry point of the ``strata`` CLI: imports every command module so that it registers itself."""

from __future__ import annotations

from strata_cli import (  # noqa: F401  (imported for their command registrations)
    cmd_config,
    cmd_data,
    cmd_features,
    cmd_layers,
    cmd_monitor,
    cmd_sample,
    cmd_score,
    cmd_serve,
    cmd_train,
)
from strata_cli.app import app, hide_flag_types, reflow_command_help

# the entry point's help set-up (nothing else imports this module)
reflow_command_help(app)
hide_flag_types()

__all__ = ["app"]

if __name__ == "__main__":
    app()
