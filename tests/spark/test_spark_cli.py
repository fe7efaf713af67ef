"""The Spark flags of the CLI: ``strata validate --engine spark`` and ``strata sample`` behave as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from strata_cli.main import app

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

runner = CliRunner()
NOW = "2025-01-01"


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, spark_test_config: Any) -> Path:
    """A strata.toml whose [spark] section is the test session's (the CLI reuses the running session)."""
    spark_cfg = spark_test_config.spark
    path = tmp_path_factory.mktemp("cfg") / "strata.toml"
    conf = "\n".join(f'"{k}" = "{v}"' for k, v in spark_cfg.conf.items())
    path.write_text(f'[spark]\nmaster = "{spark_cfg.master}"\n\n[spark.conf]\n{conf}\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 users as CSV with about 5% bad rows in every table."""
    from features.demo_data import generate_dataset, write_dataset_with_report

    out = tmp_path_factory.mktemp("bad")
    data = generate_dataset(200, pd.Timestamp("2024-12-31", tz="UTC"), seed=11)
    write_dataset_with_report(data, out, "csv", bad_rows=0.05, seed=4)  # type: ignore[arg-type]
    return out


def test_validate_engine_spark_same_report_and_rejects(spark: Any, bad_dir: Path, config_file: Path, tmp_path: Path) -> None:
    base = ["validate", "--data", str(bad_dir), "--now", NOW, "--config", str(config_file), "--json"]
    emb = runner.invoke(app, [*base, "--rejects", str(tmp_path / "e")])
    spk = runner.invoke(app, [*base, "--rejects", str(tmp_path / "s"), "--engine", "spark"])
    assert emb.exit_code == 0, emb.output
    assert spk.exit_code == 0, spk.output
    e, s = json.loads(emb.output), json.loads(spk.output)
    assert s["rows_rejected"] > 0 and s["rows_in"] == s["rows_accepted"] + s["rows_rejected"]
    for report in (e, s):
        for table in report["tables"].values():
            table.pop("path")
        report.pop("rejects")
    assert s == e
    for name in ("orders", "events", "users"):
        assert (tmp_path / "s" / f"{name}_rejected.csv").read_bytes() == (tmp_path / "e" / f"{name}_rejected.csv").read_bytes()

    text = runner.invoke(app, ["validate", "--data", str(bad_dir), "--now", NOW, "--config", str(config_file),
                               "--engine", "spark"])
    assert text.exit_code == 0, text.output
    assert "rejected rows by reason" in text.output and "duplicate order_id" in text.output


def test_validate_engine_spark_bad_file_is_one_line(spark: Any, config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("user_id,order_id,ordered_at\nu1,o1,2024-01-01\n", encoding="utf-8")
    res = runner.invoke(app, ["validate", "--data", str(tmp_path), "--config", str(config_file), "--engine", "spark"])
    assert res.exit_code == 2
    assert "orders.csv: missing required column 'amount'" in res.output


def test_sample_whole_users_deterministic_and_nested(spark: Any, bad_dir: Path, config_file: Path, tmp_path: Path) -> None:
    """`strata sample`: validated rows of about a fraction of the users, all of their rows; same seed, same users."""
    from features.config import StrataConfig
    from features.validation import load_dataset

    def sample(out: str, *opts: str) -> Any:
        res = runner.invoke(app, ["sample", "--data", str(bad_dir), "--now", NOW, "--config", str(config_file),
                                  "--out", str(tmp_path / out), *opts])
        assert res.exit_code == 0, res.output
        assert "validated" in res.output and "rejected" in res.output  # the validation summary line of `features`
        data, report = load_dataset(tmp_path / out, config=StrataConfig(), now=pd.Timestamp(NOW, tz="UTC"))
        assert report.rows_rejected == 0  # only validated rows were sampled
        return data, res.output

    full, _ = load_dataset(bad_dir, config=StrataConfig(), now=pd.Timestamp(NOW, tz="UTC"))
    half, out_half = sample("half", "--fraction", "0.5", "--seed", "3")
    again, _ = sample("again", "--fraction", "0.5", "--seed", "3", "--format", "csv")
    tenth, _ = sample("tenth", "--fraction", "0.1", "--seed", "3")
    users_half = set(half.orders["user_id"]) | set(half.events["user_id"]) | set(half.users["user_id"])
    n_all = len(set(full.orders["user_id"]) | set(full.events["user_id"]) | set(full.users["user_id"]))
    assert 0.35 * n_all < len(users_half) < 0.65 * n_all
    assert f"{len(users_half):,} of {n_all:,} users" in out_half
    for name in ("orders", "events", "users"):
        table = getattr(full, name)
        kept = table[table["user_id"].isin(users_half)]
        assert len(getattr(half, name)) == len(kept), name  # every row of a sampled user
        assert set(getattr(again, name)["user_id"]) == set(getattr(half, name)["user_id"])  # deterministic
        assert set(getattr(tenth, name)["user_id"]) <= users_half  # nested: 10% is inside 50% (same seed)

    by_count, out = sample("count", "--n-users", "40", "--seed", "3")
    n = len(set(by_count.users["user_id"]) | set(by_count.orders["user_id"]) | set(by_count.events["user_id"]))
    assert 15 < n < 70, out

    bad = runner.invoke(app, ["sample", "--data", str(bad_dir), "--config", str(config_file), "--out",
                              str(tmp_path / "x"), "--fraction", "1.5"])
    assert bad.exit_code == 2 and "--fraction" in bad.output
