"""``strata --version``: Strata's version and those of the libraries that decide results."""

from __future__ import annotations

from importlib.metadata import version

from typer.testing import CliRunner

from strata_cli.app import VERSION_PACKAGES
from strata_cli.main import app


def test_version_prints_strata_and_library_versions_and_exits_0() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"strata {version('strata')} (Python 3.")
    assert [line.split()[0] for line in lines[1:]] == list(VERSION_PACKAGES)
    assert f"lightgbm {version('lightgbm')}" in result.output and f"duckdb {version('duckdb')}" in result.output


def test_version_wins_over_a_command_and_runs_nothing() -> None:
    result = CliRunner().invoke(app, ["--version", "features", "--data", "/no/such/dir"])
    assert result.exit_code == 0, result.output
    assert "error" not in result.output and result.output.startswith("strata ")
