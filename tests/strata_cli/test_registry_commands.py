"""Registry commands where nothing was trained: a clear message, and no empty registry left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from strata_cli.main import app


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_models_says_nothing_is_registered_and_creates_nothing(empty_dir: Path) -> None:
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert "no versions of 'strata' registered yet (no tracking store at" in result.output
    assert list(empty_dir.iterdir()) == []  # it used to create mlflow.db and an experiment


@pytest.mark.parametrize("command", [["promote"], ["rollback"], ["promote", "--force", "--reason", "x"]])
def test_promote_and_rollback_refuse_without_a_registry(empty_dir: Path, command: list[str]) -> None:
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "no model registry at" in result.output and "run `strata train` first" in result.output
    assert list(empty_dir.iterdir()) == []
