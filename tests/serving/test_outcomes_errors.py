"""Outcomes and scoring outputs that cannot be used: a reason per row or one clear line, never a traceback.

A future ``contacted_at`` is rejected per row; an outcomes store without the outcome columns, a scoring output
of no user and a scoring output that does not exist are named with what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.config import StrataConfig
from features.errors import InputFileError, StrataError
from serving.batch import MANIFEST, BatchError, read_scores, read_summary
from serving.outcomes import load_store, outcome_summary, read_outcomes
from serving.scorer import OUTPUT_COLUMNS
from strata_cli.main import app

AS_OF = pd.Timestamp("2024-06-30", tz="UTC")
NOW = pd.Timestamp("2024-08-01T12:00:00", tz="UTC")
CONFIG = StrataConfig()
runner = CliRunner()


def _scores(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [f"u{i:05d}" for i in range(n)],
            "as_of": AS_OF,
            "model_version": "4",
            "lifecycle": "mature",
            "refined_layer": "at_risk",
            "action_id": "retention_offer",
            "control": [i % 4 == 0 for i in range(n)],
            "interventions": "[]",
        }
    )


def _outcomes_csv(tmp_path: Path, contacted_at: list[str]) -> Path:
    n = len(contacted_at)
    frame = pd.DataFrame({"user_id": [f"u{i:05d}" for i in range(n)], "action_id": "retention_offer",
                          "contacted": "true", "bought": "false", "spend": "0", "contacted_at": contacted_at})
    path = tmp_path / "outcomes.csv"
    frame.to_csv(path, index=False)
    return path


def _empty_scoring_output(root: Path) -> Path:
    """A finished scoring output of no user, as an older `strata score` could write it."""
    root.mkdir(parents=True)
    summary = {"out": str(root), "as_of": "2000-01-01T00:00:00+00:00", "model_name": "strata", "model_version": "1",
               "n_users": 0, "n_chunks": 0, "parts": []}
    (root / MANIFEST).write_text(json.dumps({"key": "x", "args": {}, "summary": summary}), encoding="utf-8")
    return root


def test_future_contacted_at_is_rejected_per_row(tmp_path: Path) -> None:
    path = _outcomes_csv(tmp_path, ["2024-07-15", "2040-01-01", "", "2024-08-02T06:00:00Z", "2024-08-03"])
    result = read_outcomes(path, _scores(5), CONFIG, now=NOW)
    assert result.rows_in == 5 and len(result.accepted) == 3
    assert result.rejected["row"].tolist() == [2, 5]
    for reason, value in zip(result.rejected["reason"], ["'2040-01-01'", "'2024-08-03'"], strict=True):
        assert reason.startswith(f"contacted_at: {value} is in the future")
        assert "2024-08-02T12:00:00+00:00" in reason  # now + data.future_tolerance_hours (24)
    assert result.accepted["contacted_at"].max() <= NOW + pd.Timedelta(hours=24)


def test_future_contacted_at_is_judged_by_the_clock_by_default(tmp_path: Path) -> None:
    path = _outcomes_csv(tmp_path, ["2040-01-01", "2020-01-01"])
    result = read_outcomes(path, _scores(2), CONFIG)
    assert result.rejected["row"].tolist() == [1]
    assert "is in the future" in result.rejected["reason"].iloc[0]


def test_outcomes_against_a_scoring_of_no_user_are_rejected_not_a_crash(tmp_path: Path) -> None:
    path = _outcomes_csv(tmp_path, ["", ""])
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
    result = read_outcomes(path, empty, CONFIG)
    assert len(result.accepted) == 0 and result.rejected["row"].tolist() == [1, 2]
    assert result.rejected["reason"].str.contains("was not recommended by the scoring output").all()


def test_cli_outcomes_import_refuses_a_scoring_output_of_no_user(tmp_path: Path) -> None:
    scores = _empty_scoring_output(tmp_path / "s9")
    path = _outcomes_csv(tmp_path, ["", ""])
    store = tmp_path / "store.parquet"
    result = runner.invoke(app, ["outcomes", "import", str(path), "--scores", str(scores), "--store", str(store)])
    assert result.exit_code == 2, result.output
    assert f"--scores {scores}: the scoring output holds no user" in result.output
    assert "Traceback" not in result.output and not store.exists()


def test_a_missing_scoring_output_is_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nonexist"
    for read in (read_scores, read_summary):
        with pytest.raises(BatchError, match=rf"{missing}: scoring output not found"):
            read(missing)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(BatchError, match="is a file, not a scoring output"):
        read_scores(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    with pytest.raises(BatchError, match=r"not a finished scoring output \(no _manifest.json\)"):
        read_scores(tmp_path / "dir")  # an existing directory keeps its message
    path = _outcomes_csv(tmp_path, [""])
    result = runner.invoke(app, ["outcomes", "import", str(path), "--scores", str(missing)])
    assert result.exit_code == 2 and f"{missing}: scoring output not found" in result.output
    assert "no _manifest.json" not in result.output


def test_monitor_names_a_missing_scoring_output_before_loading_a_model(tmp_path: Path) -> None:
    cfg = tmp_path / "strata.toml"
    cfg.write_text(f"[tracking]\ntracking_uri = 'sqlite:///{tmp_path / 'mlflow.db'}'\n", encoding="utf-8")
    missing = tmp_path / "nonexist"
    result = runner.invoke(app, ["monitor", "--data", str(tmp_path), "--as-of", "2024-12-31", "--scores", str(missing),
                                 "--config", str(cfg)])
    assert result.exit_code == 2, result.output
    assert f"{missing}: scoring output not found" in result.output and "no _manifest.json" not in result.output


def test_a_parquet_file_without_outcome_columns_is_not_an_outcomes_store(tmp_path: Path) -> None:
    path = tmp_path / "some_orders.parquet"
    pd.DataFrame({"user_id": ["u1"], "order_id": ["o1"], "amount": [3.0]}).to_parquet(path)
    with pytest.raises(InputFileError) as err:
        load_store(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not an outcomes store")
    assert "action_id" in message and "control" in message and "user_id" not in message.split("missing")[1]
    assert "\n" not in message


def test_outcome_summary_names_missing_columns() -> None:
    with pytest.raises(StrataError, match="lack column.*action_id"):
        outcome_summary(pd.DataFrame({"user_id": ["u1"], "amount": [1.0]}))
