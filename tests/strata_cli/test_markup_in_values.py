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


def test_paths_and_user_ids_with_brackets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "m[/x]"  # "m[" / "x]"
    data.mkdir(parents=True)
    (data / "orders.csv").write_text("user_id,order_id,ordered_at,amount\n[/b]x,o1,2024-01-01,10\n[b]y,o2,2024-01-02,5\n",
                                     encoding="utf-8")
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", "--data", str(data)])
    assert validated.exit_code == 0, validated.output
    assert "m[/x]" in validated.output.replace("\n", "")
    explained = runner.invoke(app, ["layers", "--data", str(data), "--as-of", "2024-02-01", "--explain", "[/b]x",
                                    "--out", str(tmp_path / "l.parquet")])
    assert explained.exit_code == 0, explained.output
    assert "rule trace of [/b]x" in explained.output
    assert runner.invoke(app, ["layers", "--data", str(data), "--as-of", "2024-02-01", "--explain", "[b]y",
                               "--out", str(tmp_path / "l.parquet")]).output.count("rule trace of [b]y") == 1
