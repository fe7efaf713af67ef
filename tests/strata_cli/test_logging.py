"""Log lines follow ``sys.stderr`` as it is when they are logged (a live progress display replaces it)."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from strata_cli.app import CurrentStderrHandler


def test_log_lines_go_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("strata.test_logging")
    log.addHandler(handler)
    log.propagate = False
    try:
        first, later = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        log.warning("one")
        monkeypatch.setattr(sys, "stderr", later)  # what Rich's live display does while a progress bar runs
        log.warning("two")
    finally:
        log.removeHandler(handler)
    assert first.getvalue() == "WARNING one\n"
    assert later.getvalue() == "WARNING two\n"
