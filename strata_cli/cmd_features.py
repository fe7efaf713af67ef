"""Commands of this module are registered on :data:`strata_cli.app.app` (not yet implemented)."""
