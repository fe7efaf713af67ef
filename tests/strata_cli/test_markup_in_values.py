"""Text from configuration or data is printed as it is, never read as Rich markup (``[/b]`` used to crash)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from strata_cli.main import app


def test_a_model_name_with_brackets_prints_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_path / "strata.toml"
    cfg.write_text(f'[training]\nmodel_name = "[/b]shop"\n[tracking]\ntracking_uri = "sqlite:///{tmp_path}/m.db"\n'
                   f'artifact_dir = "{tmp_path}/art"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["models", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "no versions of '[/b]shop' registered yet" in result.output
