"""Spark features (features/spark/feature_sql.py) equal the DuckDB features for every user, from the same SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.config import SparkConfig, StrataConfig
from features.dataset import Dataset
from features.pipeline import build_features

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

# A cutoff with a fractional second: ages in days must agree to the microsecond between engines.
AS_OF = pd.Timestamp("2024-09-30 12:34:56.789", tz="UTC")


def _spark_features(spark: Any, dataset: Dataset, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
    from features.spark.feature_sql import build_features_spark, collect_features
    from features.spark.frames import dataset_to_spark

    return collect_features(build_features_spark(spark, dataset_to_spark(spark, dataset), as_of, config), as_of, config)


def test_spark_features_equal_duckdb_for_every_user(
    spark_demo_features: tuple[pd.Timestamp, Any], demo_dataset: Dataset, frames_match: Any
) -> None:
    from features.spark.feature_sql import collect_features

    as_of, frame = spark_demo_features
    config = StrataConfig()
    expected = build_features(demo_dataset, as_of, config)
    actual = collect_features(frame, as_of, config)

    frames_match(expected, actual)
    assert str(actual["as_of"].dtype) == "datetime64[ns, UTC]"
    assert (actual["as_of"] == as_of).all()
    # The comparison covers every kind of user: prospects, buyers, users without events.
    assert (actual["is_prospect"] == 1.0).sum() > 50
    assert (actual["is_prospect"] == 0.0).sum() > 50
    assert (actual["events_total"] > 0).sum() > 50
    assert actual["gap_mean_days"].notna().sum() > 50


def test_orders_only_real_cdnow_equal_duckdb(spark: Any, cdnow_sample_path: Path, frames_match: Any) -> None:
    """CDNOW: orders only (no events, no users table, no status column); every customer, same features."""
    from features.cdnow import cdnow_orders

    orders = cdnow_orders(cdnow_sample_path).drop(columns="status")  # absent status means paid
    dataset = Dataset(orders=orders)
    as_of = pd.Timestamp("1997-09-30", tz="UTC")
    config = StrataConfig()
    expected = build_features(dataset, as_of, config)
    actual = _spark_features(spark, dataset, as_of, config)

    frames_match(expected, actual)
    assert len(actual) == 2357  # the whole cohort bought in Q1 1997, before the cutoff
    assert (actual["source_channel"] == "unknown").all()
    assert (actual["events_total"] == 0).all()
    assert (actual["orders_total"] >= 1).all()


def test_hand_computed_features_subsecond(spark: Any, frames_match: Any) -> None:
    """Exact values on a tiny data set; an order half a second before as_of is 0.5/86400 days old."""
    as_of = pd.Timestamp("2024-06-30 00:00:00", tz="UTC")
    orders = pd.DataFrame({
        "user_id": ["a", "a", "a", "b", "a"],
        "order_id": ["o1", "o2", "o3", "o4", "o2"],  # o2 twice: counted once (de-duplication step)
        "ordered_at": pd.to_datetime(["2024-06-29 23:59:59.5", "2024-06-20", "2024-07-02", "2024-01-01", "2024-06-20"],
                                     utc=True, format="ISO8601"),
        "amount": [10.0, 30.0, 99.0, 5.0, 30.0],
        "status": ["paid", "paid", "paid", "refunded", "paid"],
    })
    users = pd.DataFrame({"user_id": ["a", "c"], "joined_at": pd.to_datetime(["2024-01-01", "2024-06-29"], utc=True),
                          "source_channel": ["ad", None]})
    config = StrataConfig()
    dataset = Dataset(orders=orders, users=users)
    raw = _spark_features(spark, dataset, as_of, config)
    frames_match(build_features(dataset, as_of, config), raw)
    got = raw.set_index("user_id")

    assert list(got.index) == ["a", "b", "c"]  # c: joined, no orders (a prospect)
    assert got.loc["a", "days_since_last_order"] == pytest.approx(0.5 / 86400, rel=1e-9)
    assert got.loc["a", "days_since_first_order"] == pytest.approx(10.0, rel=1e-12)
    assert got.loc["a", "orders_total"] == 2.0  # the order after as_of is not seen
    assert got.loc["a", "spend_total"] == 40.0
    assert got.loc["a", "gap_mean_days"] == 9.0  # order days 06-20 and 06-29 (UTC)
    assert got.loc["a", "source_channel"] == "ad"
    assert got.loc["b", "spend_total"] == -5.0 and got.loc["b", "is_prospect"] == 1.0
    assert np.isnan(got.loc["b", "days_since_last_order"])
    assert got.loc["c", "is_prospect"] == 1.0 and got.loc["c", "source_channel"] == "unknown"
    assert got.loc["c", "days_since_joined"] == pytest.approx(1.0, rel=1e-12)


def test_rows_stamped_exactly_at_a_microsecond_as_of(spark: Any, frames_match: Any) -> None:
    """A row at ``as_of`` is 0 days old in both engines. With ages from seconds in DOUBLE it came out about
    -3e-12 days in DuckDB for this instant (DuckDB's EPOCH and Python round differently), and the activity
    bitmap's ``1 << FLOOR(age)`` failed; an order exactly 30 days old is outside the 30-day window."""
    as_of = pd.Timestamp("2024-12-31T17:30:28.502869", tz="UTC")
    orders = pd.DataFrame({"user_id": ["a", "a"], "order_id": ["o1", "o2"], "ordered_at": [as_of, as_of - pd.Timedelta(days=30)],
                           "amount": [10.0, 20.0]})
    events = pd.DataFrame({"user_id": ["a", "b"], "occurred_at": [as_of, as_of], "event_type": ["checkin", "share"]})
    config = StrataConfig()
    dataset = Dataset(orders=orders, events=events)
    expected = build_features(dataset, as_of, config)
    frames_match(expected, _spark_features(spark, dataset, as_of, config))
    got = expected.set_index("user_id")
    assert got.loc["a", "days_since_last_order"] == 0.0 and got.loc["a", "days_since_last_event"] == 0.0
    assert got.loc["b", "days_since_last_event"] == 0.0
    assert got.loc["a", "orders_30d"] == 1.0 and got.loc["a", "orders_90d"] == 2.0
    assert got.loc["a", "days_since_first_order"] == 30.0


def test_transpile_keeps_microseconds() -> None:
    from features.spark.feature_sql import transpile_for_spark

    sql = transpile_for_spark("SELECT (CAST(1.0 AS DOUBLE) - EPOCH(ordered_at)) / 86400 AS age FROM orders")
    assert "UNIX_TIMESTAMP" not in sql.upper()
    assert "UNIX_MICROS(ordered_at)" in sql
    ages = transpile_for_spark("SELECT CAST(CAST(5 AS BIGINT) - EPOCH_US(ordered_at) AS DOUBLE) AS age FROM orders")
    assert "UNIX_MICROS(ordered_at)" in ages and "EPOCH_US" not in ages.upper()


def test_non_utc_session_time_zone_is_refused() -> None:
    from features.spark.session import SparkEngineError, spark_session

    with pytest.raises(SparkEngineError, match="timeZone"):
        spark_session(SparkConfig(conf={"spark.sql.session.timeZone": "Asia/Shanghai"}))


def test_sample_users_keeps_whole_users(spark: Any, demo_dataset: Dataset, tmp_path: Path) -> None:
    from features.spark.frames import collect_dataset, dataset_to_spark
    from features.spark.runs import export_user_sample, sample_users_spark
    from features.validation import load_dataset

    sds = dataset_to_spark(spark, demo_dataset)
    sample = collect_dataset(sample_users_spark(sds, 0.2, seed=1))
    again = collect_dataset(sample_users_spark(sds, 0.2, seed=1))
    assert sample.users is not None and sample.events is not None
    chosen = set(sample.users["user_id"])
    n = len(demo_dataset.users)  # type: ignore[arg-type]
    assert 0.14 * n < len(chosen) < 0.26 * n
    assert set(again.users["user_id"]) == chosen  # type: ignore[index]
    # Every row of a chosen user, and no row of the others.
    for name in ("orders", "events"):
        full = getattr(demo_dataset, name)
        expected = full[full["user_id"].isin(chosen)]
        assert len(getattr(sample, name)) == len(expected), name
        assert set(getattr(sample, name)["user_id"]) <= chosen
    assert str(sample.orders["ordered_at"].dtype) == "datetime64[ns, UTC]"
    # Exported for `strata train --data`: the embedded reader accepts every row of the sample.
    export_user_sample(sds, tmp_path, 0.2, seed=1)
    exported, report = load_dataset(tmp_path, config=StrataConfig(), now=pd.Timestamp("2025-01-01", tz="UTC"))
    assert report.rows_rejected == 0
    assert len(exported.orders) == len(sample.orders) and set(exported.users["user_id"]) == chosen  # type: ignore[index]


def test_run_features_spark_from_csv_files(spark: Any, small_dataset: Dataset, tmp_path: Path,
                                           frames_match: Any, spark_test_config: StrataConfig) -> None:
    """End to end: CSV files -> Spark validation -> Spark features -> Parquet, equal to the embedded path."""
    from features.demo_data import write_dataset
    from features.spark.runs import run_features_spark
    from features.validation import load_dataset

    config = spark_test_config
    now = pd.Timestamp("2025-01-01", tz="UTC")
    data_dir = tmp_path / "data"
    write_dataset(small_dataset, data_dir, "csv")
    run = run_features_spark(data_dir=data_dir, orders=None, events=None, users=None, as_of=AS_OF,
                             out=tmp_path / "features", config=config, now=now)
    dataset, report = load_dataset(data_dir, config=config, now=now)
    expected = build_features(dataset, AS_OF, config)

    written = pd.read_parquet(tmp_path / "features")
    written = written.sort_values("user_id").reset_index(drop=True)
    written["as_of"] = written["as_of"].dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    frames_match(expected, written)
    assert run.n_users == len(expected)
    assert run.validation.rows_in == report.rows_in and run.validation.rows_rejected == 0
    assert run.n_prospects == int(expected["is_prospect"].sum())
    assert "Parquet part files" in run.summary_line()


@pytest.mark.parametrize(("given", "expected"), [
    ("s3a://bucket/data", "s3a://bucket/data"),
    ("abfss://c@acct.dfs.core.windows.net/p", "abfss://c@acct.dfs.core.windows.net/p"),
    ("hdfs://namenode:8020/data", "hdfs://namenode:8020/data"),
    ("hdfs:///data", "hdfs:/data"),  # default file system: same meaning
    ("/tmp/data", "/tmp/data"),
])
def test_hadoop_path_survives_pathlib(given: str, expected: str) -> None:
    """CLI options are pathlib.Path, which collapses 's3a://' into 's3a:/'; the Spark path restores it."""
    from features.spark.reading import hadoop_path

    assert hadoop_path(Path(given)) == expected


@pytest.mark.parametrize(("master", "cores"), [
    ("local", 1), ("local[1]", 1), ("local[3]", 3), ("local[4,2]", 4), ("yarn", None), ("spark://h:7077", None),
    ("local-cluster[2,1,1024]", None),
])
def test_local_cores_of_master(master: str, cores: int | None) -> None:
    """Local masters get 2 shuffle partitions per core by default; cluster masters are left alone."""
    from features.spark.session import local_cores

    assert local_cores(master) == cores


def test_local_star_uses_every_core() -> None:
    import os

    from features.spark.session import local_cores

    assert local_cores("local[*]") == (os.cpu_count() or 1)
    assert "spark.sql.shuffle.partitions" not in SparkConfig().conf  # left to the master (see spark_session)
