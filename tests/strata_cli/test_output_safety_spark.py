"""The Spark writes of the CLI keep output directories safe: ``strata sample --overwrite`` leaves one data set (the
other format's files removed), ``strata features --engine spark`` replaces an earlier Spark output but never a
directory holding other files, also when the check is made through Hadoop's file system (any URI)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from strata_cli.main import app

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

runner = CliRunner()
NOW = "2025-01-01"
#: The [spark] settings of tests/spark/conftest.py (the session is shared when that module runs in this process).
SPARK_CONF = {"spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": "2",
              "spark.default.parallelism": "2", "spark.ui.enabled": "false", "spark.driver.memory": "1g"}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """The active SparkSession, or a ``local[2]`` one started (and stopped) here."""
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    from features.config import SparkConfig
    from features.spark.session import spark_session

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    active = SparkSession.getActiveSession()
    session = active or spark_session(SparkConfig(master="local[2]", conf=SPARK_CONF), app_name="strata-tests")
    yield session
    if active is None:
        session.stop()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "strata.toml"
    conf = "\n".join(f'"{k}" = "{v}"' for k, v in SPARK_CONF.items())
    path.write_text(f'[spark]\nmaster = "local[2]"\n\n[spark.conf]\n{conf}\n', encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.demo_data import generate_dataset, write_dataset

    out = tmp_path_factory.mktemp("spark_safety")
    write_dataset(generate_dataset(120, pd.Timestamp("2024-12-31", tz="UTC"), seed=13), out, "csv")
    return out


def test_sample_overwrite_in_the_other_format_leaves_one_data_set(spark: Any, data: Path, config_file: Path,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "sample"
    out.mkdir()
    for p in data.iterdir():  # an earlier CSV data set
        (out / p.name).write_bytes(p.read_bytes())
    res = runner.invoke(app, ["sample", "--data", str(data), "--now", NOW, "--config", str(config_file),
                              "--out", str(out), "--fraction", "0.5", "--format", "parquet", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["events.parquet", "orders.parquet", "users.parquet"]
    assert "removed" in res.output
    res = runner.invoke(app, ["validate", "--data", str(out), "--now", NOW, "--json"])
    assert res.exit_code == 0, res.output  # not "several orders files"
    assert json.loads(res.stdout)["rows_rejected"] == 0


def test_spark_features_replace_an_earlier_spark_output(spark: Any, data: Path, config_file: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "features"
    base = ["features", "--data", str(data), "--as-of", "2024-12-31", "--config", str(config_file),
            "--engine", "spark", "--out", str(out)]
    for _ in range(2):
        res = runner.invoke(app, base)
        assert res.exit_code == 0, res.output
    assert any(p.name.startswith("part-") for p in out.iterdir()) and (out / "_SUCCESS").exists()


def test_run_features_spark_checks_the_output_through_hadoop(spark: Any, data: Path, tmp_path: Path) -> None:
    """The check for outputs on other file systems (made after Spark starts, before any input is read)."""
    from features.config import SparkConfig, StrataConfig
    from features.errors import StrataError
    from features.spark.runs import run_features_spark

    out = tmp_path / "mixed"
    out.mkdir()
    (out / "orders.csv").write_text("mine")
    with pytest.raises(StrataError, match="not an earlier Spark feature output"):
        run_features_spark(data_dir=data, orders=None, events=None, users=None, as_of="2024-12-31",
                           out=f"file://{out}", config=StrataConfig(spark=SparkConfig(master="local[2]",
                                                                                       conf=SPARK_CONF)))
    assert (out / "orders.csv").read_text() == "mine"
