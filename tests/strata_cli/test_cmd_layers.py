"""``strata layers`` and ``strata report`` end to end on the demo CSV files (real pipeline, no mocks)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from strata_cli.main import app

AS_OF = "2024-12-31"
runner = CliRunner()

# The pool grows between cutoffs (users keep joining), so "the base grew" fires at threshold 0.
LOUD = """
[[alerts]]
name = "base grew"
metric = "size"
layer = "all"
change = "absolute_rise"
threshold = 0
"""
QUIET = LOUD.replace("threshold = 0", "threshold = 1e9")


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "strata.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_layers_writes_every_user_once(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "layers.parquet"
    result = runner.invoke(app, ["layers", "--data", str(demo_dir), "--as-of", AS_OF, "--out", str(out)])
    assert result.exit_code == 0, result.output
    layers = pd.read_parquet(out)
    assert list(layers.columns) == [
        "user_id",
        "as_of",
        "lifecycle",
        "rfm_segment",
        "value_tier",
        "activity_tier",
    ]
    assert layers["user_id"].is_unique and len(layers) > 1000
    assert (layers["as_of"] == pd.Timestamp(AS_OF, tz="UTC")).all()
    assert layers[["lifecycle", "rfm_segment", "value_tier", "activity_tier"]].notna().all().all()
    assert "重要价值 Important value" in result.output


def test_layers_explain(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "layers.csv"
    runner.invoke(app, ["layers", "--data", str(demo_dir), "--as-of", AS_OF, "--out", str(out)])
    layers = pd.read_csv(out, dtype={"user_id": str})
    user = layers.loc[layers["lifecycle"] != "potential", "user_id"].iloc[0]
    stage = layers.loc[layers["user_id"] == user, "lifecycle"].iloc[0]
    result = runner.invoke(app, ["layers", "--data", str(demo_dir), "--as-of", AS_OF, "--explain", user])
    assert result.exit_code == 0, result.output
    assert "lifecycle: churned?" in result.output
    assert f"lifecycle = {stage}" in result.output
    missing = runner.invoke(app, ["layers", "--data", str(demo_dir), "--as-of", AS_OF, "--explain", "nobody"])
    assert missing.exit_code == 2 and "'nobody' is not in the feature table" in missing.output


@pytest.mark.parametrize(("config", "code"), [(LOUD, 1), (QUIET, 0)])
def test_layers_fail_on_alert(demo_dir: Path, tmp_path: Path, config: str, code: int) -> None:
    cfg = write_config(tmp_path, config)
    args = ["layers", "--data", str(demo_dir), "--as-of", AS_OF, "--fail-on-alert", "--config", str(cfg)]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert ("base grew: users of all users rose" in result.output) is (code == 1)


def test_report_writes_offline_html_and_fails_on_alert(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    cfg = write_config(tmp_path, LOUD)
    args = ["report", "--data", str(demo_dir), "--as-of", AS_OF, "--out", str(out), "--config", str(cfg)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # alerts alone do not fail without --fail-on-alert
    page = out.read_text(encoding="utf-8")
    for section in ("overview", "alerts", "layer-sizes", "migration", "kpis", "distributions"):
        assert f'<section id="{section}">' in page
    assert "2024-12-01" in page  # default previous cutoff: as_of - 30 days
    assert "base grew" in page
    # outside inline script bodies (plotly.js mentions URLs in its code) nothing points to the network
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", markup, re.IGNORECASE)
    assert "<script src" not in markup and '<script type="text/javascript" src' not in markup
    failing = runner.invoke(app, [*args, "--fail-on-alert"])
    assert failing.exit_code == 1


def test_report_rejects_previous_after_as_of(demo_dir: Path, tmp_path: Path) -> None:
    args = [
        "report",
        "--data",
        str(demo_dir),
        "--as-of",
        AS_OF,
        "--previous",
        "2025-01-31",
        "--out",
        str(tmp_path / "r.html"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "must be before --as-of" in result.output
