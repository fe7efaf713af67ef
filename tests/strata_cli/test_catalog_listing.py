"""``strata features --list`` shows every feature name whole, at 80 columns as on a wide terminal."""

from __future__ import annotations

import pytest
from rich.console import Console
from typer.testing import CliRunner

from features.catalog import feature_catalog
from features.config import StrataConfig
from strata_cli.cmd_features import catalog_renderable
from strata_cli.main import app


def _render(width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(catalog_renderable(feature_catalog(StrataConfig()), width))
    return console.export_text()


@pytest.mark.parametrize("width", [60, 80, 100])
def test_narrow_terminals_get_one_block_per_feature(width: int) -> None:
    catalog = feature_catalog(StrataConfig())
    text = _render(width)
    assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
    heads = [line.rstrip() for line in text.splitlines() if line and not line.startswith(" ")][1:]
    assert heads == list(catalog["name"])
    body = " ".join(" ".join(line.split()) for line in text.splitlines() if line.startswith("    "))
    for r in catalog.itertuples(index=False):
        assert " ".join(f"{r.family} | {r.unit} | {r.window}: {r.description}".split()) in body


def test_wide_terminals_get_the_table_with_whole_names() -> None:
    catalog = feature_catalog(StrataConfig())
    text = _render(220)
    assert "description" in text.splitlines()[2] and "…" not in text
    for name in catalog["name"]:
        assert f" {name} " in text


def test_no_width_cuts_a_name_unit_or_window() -> None:
    """Every width from 60 to 200 columns, across the switch from blocks to the table."""
    catalog = feature_catalog(StrataConfig())
    cells = {str(v) for col in ("name", "unit", "window") for v in catalog[col]}
    kinds = set()
    for width in range(60, 201):
        text = _render(width)
        kinds.add(text.lstrip().startswith(f"{len(catalog)} features ("))
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width, width
        missing = [c for c in cells if c not in text]
        assert not missing, (width, missing)
    assert kinds == {True, False}  # both forms were checked


def test_the_command_lists_at_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, ["features", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("events_coupon_redeem_decay_hl90")
    assert lines[at + 1].startswith("    engagement | events | half-life 90d: ")
