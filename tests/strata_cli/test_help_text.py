"""Help texts read as paragraphs: the docstrings' line breaks do not break sentences in ``--help``."""

from __future__ import annotations

from typer.testing import CliRunner

from strata_cli.app import reflow_help
from strata_cli.main import app


def test_paragraph_lines_are_joined_and_list_items_kept() -> None:
    doc = """First line
    goes on.

    Second paragraph,
    still the second.
    - an item
      that wraps
    - another item
    1. numbered
    """
    assert reflow_help(doc) == ("First line goes on.\n\nSecond paragraph, still the second.\n"
                                "- an item that wraps\n- another item\n1. numbered")


def test_command_help_is_not_broken_mid_sentence() -> None:
    out = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"}).output
    # the docstring breaks its lines after "atomic and" and "nothing is"
    assert "The run is atomic and resumable: chunks go to" in out
    assert "is an error: nothing is written and the online store keeps its users" in out


def test_flags_show_no_value_type_and_options_keep_theirs() -> None:
    out = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}).output
    rows = [line for line in out.splitlines() if line.startswith("│")]  # the options table
    assert "<bool>" not in out  # a flag takes no value
    assert any("--overwrite" in row for row in rows)
    assert "<str>" in next(row for row in rows if "--as-of " in row)
    assert "<float>" in next(row for row in rows if "--budget " in row)
