"""``strata models`` stays readable at any width: a table with whole metrics and folded text, or blocks."""

from __future__ import annotations

import pandas as pd
from rich.console import Console

from strata_cli.cmd_train import MODEL_COLUMNS, models_renderable, models_table, models_table_width


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "version": [12, 11],
        "aliases": ["challenger,champion", ""],
        "train_end": [pd.Timestamp("2025-12-31", tz="UTC"), pd.Timestamp("2025-11-30", tz="UTC")],
        "churn_auc": [0.955012, 0.9431],
        "bgnbd_churn_auc": [0.93221, 0.9307],
        "value_normalized_gini": [0.900219, float("nan")],
        "bgnbd_value_normalized_gini": [0.86161, 0.85],
        "promotion_decision": ["promoted", "rejected: does not beat the champion on the same rows"],
    })


def test_metrics_and_dates_are_whole_at_80_columns() -> None:
    console = Console(width=80, record=True, color_system=None)
    console.print(models_table(_frame(), "strata"))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for value in ("0.9550", "0.9322", "0.9002", "0.8616", "0.9431", "0.9307", "0.8500", "2025-12-31", "2025-11-30"):
        assert value in text, f"{value} cut in:\n{text}"
    assert "…" not in text
    # the aliases wrap between aliases inside their column, each alias whole
    lines = text.splitlines()
    header = next(line for line in lines if "aliases" in line)
    start, end = header.index("aliases"), header.index("train end")
    column = [line[start:end].strip() for line in lines[lines.index(header) + 2:]]
    assert [c for c in column if c] == ["challenger,", "champion"]


def test_columns_match_what_list_models_returns() -> None:
    assert list(MODEL_COLUMNS) == list(_frame().columns)


def _words(text: str) -> set[str]:
    return {w.strip("(),:") for w in text.split()}


def test_every_value_is_whole_at_every_width() -> None:
    frame = _frame()
    expected = {"12", "11", "challenger", "champion", "2025-12-31", "2025-11-30", "0.9550", "0.9322", "0.9002",
                "0.8616", "0.9431", "0.9307", "0.8500", "promoted", "rejected", "beat", "same", "rows"}
    layouts = set()
    for width in range(40, 121):
        console = Console(width=width, record=True, color_system=None)
        renderable = models_renderable(frame, "strata", width)
        layouts.add(type(renderable).__name__)
        console.print(renderable)
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "…" not in text
        missing = expected - _words(text)
        assert not missing, f"at {width} columns {missing} cut or lost in:\n{text}"
    # the table from its own narrowest width on; 76 columns used to drop most of the promotion column
    assert models_table_width(frame) == 77
    assert layouts == {"Table", "Group"}
