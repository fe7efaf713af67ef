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
