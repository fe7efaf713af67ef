"""Validation on Spark behaves as the embedded path: same counts per reason, same rejected rows, same data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

NOW = pd.Timestamp("2025-01-01", tz="UTC")


@pytest.fixture
def small_batches(spark: Any) -> Iterator[None]:
    """Many small partitions and Arrow batches, so that batch-local validation needs the global steps."""
    keys = {"spark.sql.files.maxPartitionBytes": "65536", "spark.sql.files.openCostInBytes": "1024",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "700"}
    old = {k: spark.conf.get(k, None) for k in keys}
    for k, v in keys.items():
        spark.conf.set(k, v)
    yield
    for k, v in old.items():
        if v is None:
            spark.conf.unset(k)
        else:
            spark.conf.set(k, v)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns), kind="stable", na_position="last").reset_index(drop=True)


def _without_paths(report: dict[str, Any]) -> dict[str, Any]:
    out = dict(report)
    out["tables"] = {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in report["tables"].items()}
    return out


def _validated_both_ways(spark: Any, data: Path) -> tuple[Dataset, Any, Dataset, Any]:
    """``data`` validated embedded and on Spark, with the same report and the same rejected rows and reasons:
    (embedded data set, embedded report, Spark's data set collected, Spark's report)."""
    from features.spark.frames import collect_dataset
    from features.spark.validation import load_dataset_spark
    from features.validation import load_dataset

    config = StrataConfig()
    expected_ds, expected = load_dataset(data, config=config, now=NOW)
    actual_ds, actual = load_dataset_spark(spark, data, config=config, now=NOW)
    assert _without_paths(actual.to_dict()) == _without_paths(expected.to_dict())
    for name, res in actual.tables.items():
        exp = expected.tables[name].rejected
        got = res.rejected_pandas()
        assert list(zip(got["row"], got["reason"], strict=True)) == list(zip(exp["row"], exp["reason"], strict=True))
    return expected_ds, expected, collect_dataset(actual_ds), actual


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_rows_same_as_embedded(spark: Any, small_batches: None, tmp_path: Path, fmt: str, frames_match: Any) -> None:
    from features.demo_data import generate_dataset, write_dataset_with_report
    from features.spark.frames import collect_dataset
    from features.spark.validation import load_dataset_spark
    from features.validation import load_dataset

    data = generate_dataset(300, pd.Timestamp("2024-12-31", tz="UTC"), seed=3)
    _, inserted = write_dataset_with_report(data, tmp_path, fmt, bad_rows=0.05, seed=1)  # type: ignore[arg-type]
    config = StrataConfig()
    expected_ds, expected = load_dataset(tmp_path, config=config, now=NOW)
    actual_ds, actual = load_dataset_spark(spark, tmp_path, config=config, now=NOW)

    assert _without_paths(actual.to_dict()) == _without_paths(expected.to_dict())
    for name, res in actual.tables.items():
        assert res.rows_in == res.n_accepted + res.n_rejected
        assert res.rows_in == len(getattr(data, name)) + sum(inserted[name].values())
        exp = expected.tables[name].rejected
        got = res.rejected_pandas()
        assert got["row"].tolist() == exp["row"].tolist(), name
        assert got["reason"].tolist() == exp["reason"].tolist(), name
        assert got[list(exp.columns[2:])].fillna("").equals(exp[list(exp.columns[2:])].fillna("").reset_index(drop=True))
    assert actual.tables["orders"].reasons.get("duplicate order_id", 0) == inserted["orders"]["duplicate_order_id"]
    got_ds = collect_dataset(actual_ds)
    for name in ("orders", "events", "users"):
        frames_match(_sorted(getattr(expected_ds, name)), _sorted(getattr(got_ds, name)), rtol=0, atol=0)
    actual.unpersist()


def test_typed_parquet_clean(spark: Any, small_dataset: Dataset, tmp_path: Path, frames_match: Any) -> None:
    """Typed Parquet (nanosecond UTC timestamps, floats, Int64) is read as text and validated back to the same data."""
    from features.demo_data import write_dataset
    from features.spark.frames import collect_dataset
    from features.spark.validation import load_dataset_spark

    data = Dataset(orders=small_dataset.orders.copy(), events=small_dataset.events, users=small_dataset.users)
    # Sub-second timestamps survive the trip (Spark reads pandas' nanosecond Parquet timestamps as INT64).
    data.orders["ordered_at"] = data.orders["ordered_at"] + pd.to_timedelta(
        (pd.RangeIndex(len(data.orders)) % 1000) * 1000 + 7, unit="us")
    write_dataset(data, tmp_path, "parquet")
    dataset, report = load_dataset_spark(spark, tmp_path, config=StrataConfig(), now=NOW)
    assert report.rows_rejected == 0
    got = collect_dataset(dataset)
    for name in ("orders", "events", "users"):
        exp = getattr(data, name)
        frames_match(_sorted(exp), _sorted(getattr(got, name)[list(exp.columns)]), rtol=0, atol=0)
    report.unpersist()


HEADER = "user_id,order_id,ordered_at,amount\n"


def test_malformed_rows_and_row_numbers(spark: Any, small_batches: None, tmp_path: Path) -> None:
    """Wrong field counts are rejected with their line; row numbers are exact per file in a directory."""
    from features.spark.validation import load_dataset_spark
    from features.validation import load_dataset

    single = tmp_path / "single"
    single.mkdir()
    lines = [f"u{i},o{i},2024-01-{1 + i % 28:02d}T10:00:00Z,{i}.5\n" for i in range(3000)]
    lines[10] = "u10,o10,2024-01-02T10:00:00Z\n"  # too few fields
    lines[2000] = "u2000,o2000,2024-01-02T10:00:00Z,1,extra\n"  # too many
    lines[2500] = "u2500,o5,2024-01-02T10:00:00Z,-3\n"  # negative amount
    lines[2999] = "u1,o1,2024-01-02T10:00:00Z,4\n"  # duplicate of data row 2, far away (another partition)
    (single / "orders.csv").write_text(HEADER + "".join(lines), encoding="utf-8")
    config = StrataConfig()
    _, expected = load_dataset(single, config=config, now=NOW)
    _, actual = load_dataset_spark(spark, single, config=config, now=NOW)
    got = actual.tables["orders"].rejected_pandas()
    exp = expected.tables["orders"].rejected
    assert list(zip(got["row"], got["reason"], strict=True)) == list(zip(exp["row"], exp["reason"], strict=True))
    assert list(zip(got["row"], got["reason"], strict=True)) == [
        (11, "wrong number of fields"), (2001, "wrong number of fields"), (2501, "negative amount"),
        (3000, "duplicate order_id")]
    assert got.loc[0, "line"] == "u10,o10,2024-01-02T10:00:00Z"
    assert actual.tables["orders"].rows_in == 3000 == actual.tables["orders"].n_accepted + 4

    many = tmp_path / "many" / "orders"
    many.mkdir(parents=True)
    (many / "part-0.csv").write_text(HEADER + "a,x1,2024-01-01T00:00:00Z,1\nb,x2,2024-01-01T00:00:00Z,abc\n", encoding="utf-8")
    (many / "part-1.csv").write_text(HEADER + "c,x3,2024-01-01T00:00:00Z,2\nc,x1,2024-01-01T00:00:00Z,3\n"
                                     "d,x4,2024-01-01T00:00:00Z\n", encoding="utf-8")
    _, report = load_dataset_spark(spark, orders=str(many), config=config, now=NOW)
    rej = report.tables["orders"].rejected_pandas()
    assert [(Path(f).name, r, why) for f, r, why in zip(rej["file"], rej["row"], rej["reason"], strict=True)] == [
        ("part-0.csv", 2, "non-numeric amount"), ("part-1.csv", 2, "duplicate order_id"),
        ("part-1.csv", 3, "wrong number of fields")]
    assert report.tables["orders"].n_accepted == 2
    actual.unpersist()
    report.unpersist()


def test_missing_required_column_names_file_and_column(spark: Any, tmp_path: Path) -> None:
    from features.errors import InputFileError
    from features.spark.validation import load_dataset_spark

    (tmp_path / "orders.csv").write_text("user_id,order_id,ordered_at,price\nu1,o1,2024-01-01,3\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"orders\.csv: missing required column 'amount'"):
        load_dataset_spark(spark, tmp_path, config=StrataConfig(), now=NOW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError, match="no orders file"):
        load_dataset_spark(spark, empty, config=StrataConfig(), now=NOW)


ODD_ORDERS = [
    # (user_id, order_id, ordered_at, amount, status, quantity): valid rows in plain and unusual forms, and bad rows
    ("u1", "o1", "2024-03-05T12:34:56Z", "10.5", "paid", "1"),
    ("u1", "o2", "2024-03-05", "007.50", "PAID", "007"),
    ("u2", "o3", "2024-03-05 12:34:56", "1e3", "Paid ", "1.0"),
    ("u2", "o4", "2024-03-05T12:34:56+08:00", "1234567890123456", "refunded", ""),
    ("u3", "o5", "2024-03-05T12:34:56-03:30", "0.30000000000000004", "", "2"),
    ("u3", "o6", "2024-03-05T12:34:56.5Z", "-0", "NULL", "0"),
    ("u4", "o7", "2024-03-05T12:34:56.123456Z", " 5", "unknownx", "10001"),
    ("u4", "o8", "2024-03-05T12:34:56.123456000Z", "5 ", "paid", "3"),
    ("u5", "o9", "2024-03-05T12:34:56.1234567Z", "Infinity", "paid", "1"),
    ("u5", "o10", "2024-02-30T00:00:00Z", "12", "paid", "1"),
    ("u6", "o11", "2024-3-5", "12", "paid", "1"),
    ("u6", "o12", " 2024-03-05T12:34:56Z", "nan", "paid", "1"),
    (" u7", "o13", "2024-03-05 12:34:56Z", "1,5", "paid", "1"),
    ("u7\u00a0", "o14", "2030-01-01T00:00:00Z", "3", "paid", "1"),
    ("NA", "o15", "1980-01-01T00:00:00Z", "3", "paid", "1"),
    ("u8", "o1", "2024-03-05T12:34:56Z", "4", "paid", "1"),  # duplicate of a plain row
    ("u8", "o16", "2024-03-05 00:00:00", "4", "paid", "1"),
    ("u8", "o16", "2024-03-05T00:00:00Z", "4", "paid", "1"),  # duplicate of an unusual-form row
    ("u9", "o17", "2024-03-05T00:00:00Z", "2000000", "paid", "1"),
    ("u9", "o18", "2024-03-05T00:00:00Z", "999999.99", "\u0130", "1"),
]
ODD_EVENTS = [
    ("u1", "2024-03-05T12:34:56Z", "Add_WeCom", "-1.5"),
    ("u1", "2024-03-05T12:34:56Z", "ADD_WECOM ", "1e-3"),
    ("u2", "2024-03-05T12:34:56Z", "unknown_type", ""),
    ("u2", "2024-03-05T12:34:56Z", "review", "0.8"),
    ("u3", "2024-03-05T12:34:56Z", "NA", "1"),
    ("u3", "", "review", "1"),
]


def test_unusual_forms_same_as_embedded(spark: Any, tmp_path: Path, frames_match: Any) -> None:
    """Cells the SQL fast path must leave to validate_table: same accepted values, rejected rows and reasons."""
    import csv

    with (tmp_path / "orders.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "order_id", "ordered_at", "amount", "status", "quantity"])
        writer.writerows(ODD_ORDERS * 3)  # repeats: duplicates of plain and of unusual rows, far apart
    with (tmp_path / "events.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["user_id", "occurred_at", "event_type", "value"])
        writer.writerows(ODD_EVENTS)
    expected_ds, expected, got_ds, actual = _validated_both_ways(spark, tmp_path)
    for name in ("orders", "events"):
        frames_match(_sorted(getattr(expected_ds, name)), _sorted(getattr(got_ds, name)), rtol=0, atol=0)
    # Both paths were used: rows accepted in plain form (SQL) and in unusual forms only pandas reads (o2, o3, o11).
    assert sorted(got_ds.orders["order_id"]) == ["o1", "o11", "o16", "o2", "o3", "o5", "o8"]
    assert actual.tables["orders"].rows_in == 3 * len(ODD_ORDERS)
    actual.unpersist()


def test_write_rejects_same_files_as_embedded(spark: Any, tmp_path: Path) -> None:
    """``<table>_rejected.csv``: the embedded file names, columns and bytes; one file per table, no side files."""
    from features.demo_data import generate_dataset, write_dataset_with_report
    from features.spark.validation import load_dataset_spark
    from features.validation import load_dataset

    data = generate_dataset(120, pd.Timestamp("2024-12-31", tz="UTC"), seed=5)
    write_dataset_with_report(data, tmp_path / "in", "csv", bad_rows=0.05, seed=2)  # type: ignore[arg-type]
    (tmp_path / "in" / "orders.csv").write_text(
        (tmp_path / "in" / "orders.csv").read_text(encoding="utf-8") + "u1,o1,2024-01-02T10:00:00Z\n", encoding="utf-8")
    _, expected = load_dataset(tmp_path / "in", config=StrataConfig(), now=NOW)
    _, actual = load_dataset_spark(spark, tmp_path / "in", config=StrataConfig(), now=NOW)
    exp_paths = expected.write_rejects(tmp_path / "embedded")
    got_paths = actual.write_rejects(tmp_path / "spark")
    assert sorted(p.name for p in (tmp_path / "spark").iterdir()) == sorted(p.name for p in exp_paths.values())
    for name, path in exp_paths.items():
        assert Path(got_paths[name]).read_bytes() == path.read_bytes(), name
    assert "line" in pd.read_csv(exp_paths["orders"], dtype=str).columns  # the malformed row's text
    actual.unpersist()


def test_typed_parquet_cells_are_checked_as_values_same_as_embedded(spark: Any, tmp_path: Path, frames_match: Any) -> None:
    """Typed Parquet timestamps (micro-, milli- and nanosecond, with and without a zone), doubles and integers
    are checked by the SQL fast path as their values, the way the embedded path checks them: the same
    accepted data, rejected rows and reasons, and the plain rows never reach pandas."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.contract import ORDERS
    from features.spark.reading import read_raw_table
    from features.spark.validation import _fast_path

    day = 86_400_000_000
    base = pd.Timestamp("2024-06-01", tz="UTC").value // 1000  # microseconds
    n = 12
    ordered_us = [base + i * day + 123_456 for i in range(n)]
    ordered_us[3] = pd.Timestamp("2030-01-01", tz="UTC").value // 1000  # future
    ordered_us[4] = pd.Timestamp("1980-01-01", tz="UTC").value // 1000  # too old
    ordered: list[int | None] = list(ordered_us)
    ordered[5] = None  # missing
    amount = [10.5, float("nan"), float("inf"), 3.0, 4.0, 5.0, -1.0, 2e6, 7.25, 0.0, 1e-300, 99.99]
    quantity = [1, 0, 5, None, 10, 2, 3, 4, 10_001, 2, 1, 10_000]
    pq.write_table(pa.table({
        "user_id": [f"u{i % 4}" for i in range(n)], "order_id": [f"o{i}" for i in range(n)],
        "ordered_at": pa.array(ordered, pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount, pa.float64()), "quantity": pa.array(quantity, pa.int64()),
    }), tmp_path / "orders.parquet")
    occurred_ns = [base * 1000 + i * day * 1000 for i in range(n)]
    occurred_ns[2] += 1  # a nanosecond past a whole microsecond: pandas keeps it
    occurred_ns[9] += 999  # floored exactly (a double division would round it up to the next microsecond)
    occurred_ns[6] = pd.Timestamp("2031-01-01").value  # future
    pq.write_table(pa.table({
        "user_id": [f"u{i % 5}" for i in range(n)],
        "occurred_at": pa.array(occurred_ns, pa.timestamp("ns")),  # no zone: UTC
        "event_type": ["share", "consult", "checkin", "review", "share", "share",
                       "consult", "checkin", "review", "share", "consult", "checkin"],
        "value": pa.array([float("nan"), 1.5, 2.0, None, -2.5, 0.0, 3.0, 1e308, -float("inf"), 5.0, 6.0, 7.0]),
    }), tmp_path / "events.parquet")
    pq.write_table(pa.table({
        "user_id": [f"u{i}" for i in range(4)],
        "joined_at": pa.array([base // 1000 - 5 * day // 1000 * i for i in range(4)], pa.timestamp("ms", tz="UTC")),
    }), tmp_path / "users.parquet")

    expected_ds, expected, got_ds, actual = _validated_both_ways(spark, tmp_path)
    for name in ("orders", "events", "users"):
        want = getattr(expected_ds, name).copy()
        for col in want.columns:  # Spark holds microseconds: a nanosecond part is floored
            if isinstance(want[col].dtype, pd.DatetimeTZDtype):
                want[col] = want[col].dt.floor("us")
        frames_match(_sorted(want), _sorted(getattr(got_ds, name)), rtol=0, atol=0)
    assert sorted(expected_ds.events["occurred_at"].dt.nanosecond)[-2:] == [1, 999]
    assert expected.tables["events"].reasons == {"future occurred_at": 1, "non-numeric value": 1}
    assert expected.tables["orders"].reasons == {"missing ordered_at": 1, "future ordered_at": 1, "too old ordered_at": 1,
                                                 "missing amount": 1, "non-numeric amount": 1, "negative amount": 1,
                                                 "implausible amount": 1, "bad quantity": 1}
    actual.unpersist()

    # the typed orders are checked as values: every accepted order took the SQL fast path
    raw, header, typed = read_raw_table(spark, str(tmp_path / "orders.parquet"), ORDERS)
    assert {c: form for c, (_, form) in typed.items()} == {"ordered_at": "ts", "amount": "double", "quantity": "int"}
    ok, _, _ = _fast_path(ORDERS, header, StrataConfig(), NOW, typed)
    fast = raw.where(ok).count()
    assert fast == expected.tables["orders"].n_accepted == n - int(np.sum(list(expected.tables["orders"].reasons.values())))


def test_nanosecond_text_timestamps_are_floored_to_spark_microseconds(spark: Any, tmp_path: Path) -> None:
    """A timestamp text with nanoseconds (left to pandas by the fast path) is accepted, floored to the
    microsecond Spark holds, instead of failing the batch's conversion back to Spark."""
    from features.spark.frames import collect_dataset
    from features.spark.validation import load_dataset_spark
    from features.validation import load_dataset

    (tmp_path / "orders.csv").write_text(
        "user_id,order_id,ordered_at,amount\n"
        "u1,o1,2024-06-03T00:00:00.000000999Z,5\n"
        "u2,o2,2024-06-03T00:00:01Z,6\n"
        "u3,o3,1999-12-31T23:59:59.123456789Z,7\n"
    )
    expected_ds, expected = load_dataset(tmp_path, config=StrataConfig(), now=NOW)
    actual_ds, actual = load_dataset_spark(spark, tmp_path, config=StrataConfig(), now=NOW)
    assert actual.rows_rejected == expected.rows_rejected == 0
    got = collect_dataset(actual_ds).orders.sort_values("order_id")["ordered_at"].tolist()
    assert got == expected_ds.orders.sort_values("order_id")["ordered_at"].dt.floor("us").tolist()
    assert got[0] == pd.Timestamp("2024-06-03", tz="UTC") and got[2].nanosecond == 0 and got[2].microsecond == 123456
    actual.unpersist()
