"""Cutoffs outside the data for ``strata layers`` and ``strata report`` (``strata score``: tests/serving/
test_score_cutoffs.py), and the options of ``strata report`` that name something missing.

No user known at --as-of: exit 2 and nothing written. No user at the previous cutoff: exit 2 with --previous or
--fail-on-alert (a comparison with nobody is a false all-clear), else a warning. An --as-of long after the last
order or event: a warning on stderr naming the last data date. None of these tests needs a trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from strata_cli.cutoff_checks import STALE_AFTER_DAYS, stale_message
from strata_cli.main import app

runner = CliRunner()
#: The demo data (tests/conftest.py) starts with a join on 2022-07-05 and ends with an event on 2024-12-30.
DATA_START = "the data starts at 2022-07-05"
LAST_EVENT = "2024-12-30T23:57:59+00:00"
STALE_AS_OF = "2025-03-31"  # 90 days after the last event


@pytest.fixture()
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration whose (absent) MLflow store has no model; the working directory is ``tmp_path``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "strata.toml"
    path.write_text(f"[tracking]\ntracking_uri = 'sqlite:///{tmp_path / 'mlflow.db'}'\n", encoding="utf-8")
    return path


def _invoke(args: list[str], cfg: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--config", str(cfg)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout, result.stderr


def _empty_scoring_output(root: Path) -> Path:
    root.mkdir(parents=True)
    summary = {"out": str(root), "as_of": "2024-12-31T00:00:00+00:00", "model_name": "strata", "model_version": "1",
               "n_users": 0, "n_chunks": 0, "parts": []}
    (root / "_manifest.json").write_text(json.dumps({"key": "x", "args": {}, "summary": summary}), encoding="utf-8")
    return root


def test_stale_margin(demo_dataset: object) -> None:
    last = demo_dataset.last_activity()  # type: ignore[attr-defined]
    assert last is not None and last.isoformat() == LAST_EVENT
    assert stale_message(last + pd.Timedelta(days=STALE_AFTER_DAYS), last) is None
    message = stale_message(last + pd.Timedelta(days=STALE_AFTER_DAYS, seconds=1), last)
    assert message is not None and LAST_EVENT in message and "more than 30 days" in message
    assert stale_message(last - pd.Timedelta(days=400), last) is None  # a cutoff inside the data
    assert stale_message(pd.Timestamp("2030-01-01", tz="UTC"), None) is None  # no activity to judge by


def test_layers_refuses_an_as_of_before_the_data(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "layers.parquet"
    code, stdout, stderr = _invoke(["layers", "--data", str(demo_dir), "--as-of", "2000-01-01", "--out", str(out)], cfg)
    assert code == 2
    assert "no user is known at or before --as-of 2000-01-01T00:00:00+00:00" in stderr
    assert DATA_START in stderr and "the layers would be empty; check --as-of" in stderr
    assert not out.exists() and "wrote" not in stdout


def test_layers_warns_when_the_data_ended_long_before_as_of(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "layers.parquet"
    code, stdout, stderr = _invoke(["layers", "--data", str(demo_dir), "--as-of", STALE_AS_OF, "--out", str(out)], cfg)
    assert code == 0, stderr
    assert "warning:" in stderr and f"is 90 days after the last order or event in the data ({LAST_EVENT}" in stderr
    assert "warning" not in stdout and out.exists()
    code, _, stderr = _invoke(["layers", "--data", str(demo_dir), "--as-of", "2024-12-31"], cfg)
    assert code == 0 and "warning" not in stderr  # the data's own end: no warning


@pytest.mark.parametrize("extra", [["--fail-on-alert"], []])
def test_layers_refuses_a_previous_cutoff_without_users(demo_dir: Path, cfg: Path, extra: list[str]) -> None:
    code, stdout, stderr = _invoke(
        ["layers", "--data", str(demo_dir), "--as-of", "2024-12-31", "--previous", "1990-01-01", *extra], cfg
    )
    assert code == 2
    assert "no user is known at or before --previous 1990-01-01T00:00:00+00:00" in stderr and DATA_START in stderr
    assert "choose a later --previous" in stderr and "no alert fired" not in stdout


def test_layers_fail_on_alert_refuses_a_default_previous_without_users(demo_dir: Path, cfg: Path) -> None:
    code, stdout, stderr = _invoke(["layers", "--data", str(demo_dir), "--as-of", "2022-07-20", "--fail-on-alert"], cfg)
    assert code == 2
    assert "no user is known at or before the previous cutoff 2022-06-20T00:00:00+00:00 (--as-of minus 30 days)" in stderr
    assert "no alert fired" not in stdout


def test_report_refuses_an_as_of_before_the_data(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "report.html"
    code, _, stderr = _invoke(["report", "--data", str(demo_dir), "--as-of", "2000-01-01", "--out", str(out),
                               "--no-monitor"], cfg)
    assert code == 2
    assert "no user is known at or before --as-of 2000-01-01T00:00:00+00:00" in stderr
    assert "the report would be empty" in stderr and not out.exists()


def test_report_refuses_a_previous_cutoff_without_users(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "report.html"
    code, stdout, stderr = _invoke(["report", "--data", str(demo_dir), "--as-of", "2024-12-31", "--previous",
                                    "1990-01-01", "--out", str(out), "--no-monitor"], cfg)
    assert code == 2 and "no user is known at or before --previous 1990-01-01" in stderr
    assert not out.exists() and "no alert fired" not in stdout


def test_report_default_previous_without_users(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "report.html"
    args = ["report", "--data", str(demo_dir), "--as-of", "2022-07-20", "--out", str(out), "--no-monitor"]
    code, _, stderr = _invoke(args, cfg)
    assert code == 0, stderr
    assert "warning:" in stderr and "previous cutoff 2022-06-20T00:00:00+00:00" in stderr and out.exists()
    out.unlink()
    code, _, stderr = _invoke([*args, "--fail-on-alert"], cfg)
    assert code == 2 and "false all-clear" in stderr and not out.exists()


def test_report_warns_when_the_data_ended_long_before_as_of(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    # An ./outcomes.parquet that is no outcomes store: the default is read only with --scores.
    pd.DataFrame({"user_id": ["u1"]}).to_parquet(tmp_path / "outcomes.parquet")
    out = tmp_path / "report.html"
    code, _, stderr = _invoke(["report", "--data", str(demo_dir), "--as-of", STALE_AS_OF, "--out", str(out),
                               "--no-monitor"], cfg)
    assert code == 0, stderr
    assert f"is 90 days after the last order or event in the data ({LAST_EVENT}" in stderr and out.exists()
    # The default alias with no model registered yet: the report goes without model sections, as before.
    assert "no model with alias 'champion' registered: report has no model sections" in stderr


def test_report_outcomes_option(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "report.html"
    base = ["report", "--data", str(demo_dir), "--as-of", "2024-12-31", "--out", str(out), "--no-monitor"]
    orders = tmp_path / "some_orders.parquet"
    pd.DataFrame({"user_id": ["u1"], "order_id": ["o1"], "amount": [3.0]}).to_parquet(orders)
    code, _, stderr = _invoke([*base, "--outcomes", str(orders)], cfg)
    assert code == 2 and f"--outcomes {orders}: needs --scores" in stderr
    scores = _empty_scoring_output(tmp_path / "scores")
    code, _, stderr = _invoke([*base, "--scores", str(scores), "--outcomes", str(tmp_path / "missing.parquet")], cfg)
    assert code == 2 and "missing.parquet: not found" in stderr
    code, _, stderr = _invoke([*base, "--scores", str(scores), "--outcomes", str(orders)], cfg)
    assert code == 2 and "KeyError" not in stderr
    assert f"{orders}: not an outcomes store" in stderr and "missing column(s) action_id, contacted" in stderr
    assert not out.exists()


def test_report_refuses_an_explicit_model_alias_that_does_not_exist(demo_dir: Path, tmp_path: Path, cfg: Path) -> None:
    out = tmp_path / "report.html"
    code, _, stderr = _invoke(["report", "--data", str(demo_dir), "--as-of", "2024-12-31", "--out", str(out),
                               "--model-alias", "nope"], cfg)
    assert code == 2 and "no model with alias 'nope' registered" in stderr and not out.exists()
