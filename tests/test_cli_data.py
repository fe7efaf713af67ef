"""CLI smoke tests of ``strata generate``, ``strata validate`` and ``strata import cdnow``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from strata_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen")
    res = runner.invoke(app, ["generate", "--users", "300", "--out", str(out), "--seed", "3", "--end", "2024-12-31",
                              "--bad-rows", "0.05"])
    assert res.exit_code == 0, res.output
    assert "orders.csv" in res.output and "bad rows" in res.output
    return out


def test_generate_writes_three_tables(generated: Path) -> None:
    assert sorted(p.name for p in generated.iterdir()) == ["events.csv", "orders.csv", "users.csv"]
    orders = pd.read_csv(generated / "orders.csv", dtype=str, keep_default_na=False)
    assert {"user_id", "order_id", "ordered_at", "amount"} <= set(orders.columns)


def test_generate_is_deterministic(generated: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--users", "300", "--out", str(tmp_path), "--seed", "3", "--end", "2024-12-31",
                              "--bad-rows", "0.05"])
    assert res.exit_code == 0, res.output
    for name in ("orders.csv", "events.csv", "users.csv"):
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes()


def test_generate_parquet_defaults_end_to_today(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--users", "50", "--out", str(tmp_path), "--format", "parquet"])
    assert res.exit_code == 0, res.output
    orders = pd.read_parquet(tmp_path / "orders.parquet")
    assert orders["ordered_at"].max() <= pd.Timestamp.now(tz="UTC")
    assert str(orders["ordered_at"].dtype).startswith("datetime64")


def test_generate_rejects_unknown_format(tmp_path: Path) -> None:
    res = runner.invoke(app, ["generate", "--users", "5", "--out", str(tmp_path), "--format", "xlsx"])
    assert res.exit_code == 2 and "--format" in res.output


def test_validate_reports_rejections_with_exit_0(generated: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["validate", "--data", str(generated), "--now", "2025-01-10", "--rejects", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "rows in" in res.output and "rejected rows by reason" in res.output
    assert "not in the users table" in res.output  # warning about events of unknown users
    rej = pd.read_csv(tmp_path / "orders_rejected.csv", dtype=str, keep_default_na=False)
    assert len(rej) > 0 and rej["reason"].astype(bool).all() and rej["row"].astype(int).min() >= 1


def test_validate_summary_keeps_long_paths_and_counts_whole(generated: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns a long path folds over lines instead of being cut, and the counts stay whole."""
    import shutil

    deep = tmp_path / ("a_rather_long_directory_name_for_exports_" * 2) / "2025"
    shutil.copytree(generated, deep)
    monkeypatch.setenv("COLUMNS", "80")
    res = runner.invoke(app, ["validate", "--data", str(deep), "--now", "2025-01-10"])
    assert res.exit_code == 0, res.output
    summary = res.output.split("rejected rows by reason")[0]
    assert "…" not in summary
    assert str(deep / "orders.csv") in "".join(line.split("│")[2].strip() for line in summary.splitlines()
                                               if line.count("│") == 6)
    orders = pd.read_csv(generated / "orders.csv", dtype=str, keep_default_na=False)
    assert f"{len(orders):,}" in summary  # rows in, whole


def test_validate_json_is_one_object(generated: Path) -> None:
    res = runner.invoke(app, ["validate", "--data", str(generated), "--now", "2025-01-10", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    for table in payload["tables"].values():
        assert table["rows_in"] == table["accepted"] + table["rejected"]
        assert sum(table["reasons"].values()) == table["rejected"]
    assert payload["tables"]["orders"]["rejected"] > 0


def test_validate_file_problem_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("user_id;order_id;ordered_at;amount\nu1;o1;2024-01-01;3\n")
    res = runner.invoke(app, ["validate", "--data", str(tmp_path)])
    assert res.exit_code == 2
    assert "wrong delimiter" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["validate", "--data", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "data directory not found" in res.output


def test_validate_explicit_orders_file(tmp_path: Path) -> None:
    p = tmp_path / "my.csv"
    p.write_text("user_id,order_id,ordered_at,amount\nu1,o1,2024-01-01,3\n")
    res = runner.invoke(app, ["validate", "--orders", str(p), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tables"]["orders"]["accepted"] == 1


def test_import_cdnow_sample(cdnow_sample_path: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(cdnow_sample_path), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "6,919 orders of 2,357 customers" in res.output
    res = runner.invoke(app, ["validate", "--data", str(tmp_path), "--json"])
    assert json.loads(res.stdout)["rows_rejected"] == 0


def test_import_cdnow_missing_file(tmp_path: Path) -> None:
    res = runner.invoke(app, ["import", "cdnow", str(tmp_path / "nope.txt"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "file not found" in res.output


def test_help_texts() -> None:
    for args, text in ((["generate", "--help"], "Number of users"), (["validate", "--help"], "Check input files"),
                       (["import", "cdnow", "--help"], "CDNOW_master.txt")):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and text in res.output


def test_features_out_of_engine_memory_exits_2_naming_the_setting(generated: Path, tmp_path: Path) -> None:
    config = tmp_path / "strata.toml"
    config.write_text('[features]\nengine_memory_limit = "1MB"\n')
    res = runner.invoke(app, ["features", "--data", str(generated), "--as-of", "2024-06-30", "--out",
                              str(tmp_path / "f.parquet"), "--config", str(config)])
    assert res.exit_code == 2, res.output
    # the message is printed as text: the section name in brackets is not taken for console markup
    assert "[features] engine_memory_limit = '1MB'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "f.parquet").exists()
