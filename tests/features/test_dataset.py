"""Where a data set's activity starts and ends: what cutoffs are checked against."""

from __future__ import annotations

import pandas as pd

from features.dataset import Dataset


def _ts(*days: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(days), utc=True))


def test_first_counts_joins_and_last_counts_only_orders_and_events() -> None:
    orders = pd.DataFrame({"user_id": ["a", "b"], "ordered_at": _ts("2024-03-01", "2024-05-01")})
    events = pd.DataFrame({"user_id": ["a"], "occurred_at": _ts("2024-06-01")})
    users = pd.DataFrame({"user_id": ["a", "c"], "joined_at": _ts("2024-01-15", "2024-09-01")})
    data = Dataset(orders=orders, events=events, users=users)
    assert data.first_activity() == pd.Timestamp("2024-01-15", tz="UTC")
    assert data.last_activity() == pd.Timestamp("2024-06-01", tz="UTC")  # a later join is no activity


def test_missing_times_and_empty_tables() -> None:
    orders = pd.DataFrame({"user_id": ["a", "b"], "ordered_at": _ts("2024-03-01", "NaT")})
    users = pd.DataFrame({"user_id": ["a"], "joined_at": _ts("NaT")})
    data = Dataset(orders=orders, events=orders.iloc[:0].rename(columns={"ordered_at": "occurred_at"}), users=users)
    assert data.first_activity() == data.last_activity() == pd.Timestamp("2024-03-01", tz="UTC")
    empty = Dataset(orders=orders.iloc[:0])
    assert empty.first_activity() is None and empty.last_activity() is None
