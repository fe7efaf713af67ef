"""The synthetic data generator: contract, determinism, realism, and writing (with bad rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.contract import DEFAULT_EVENT_TYPES, ORDER_STATUSES, ORDERS
from features.dataset import Dataset
from features.demo_data import (
    BAD_KINDS,
    corrupt_tables,
    generate_dataset,
    write_dataset,
    write_dataset_with_report,
)
from features.io import read_table, table_as_strings
from features.validation import UNKNOWN_USER_WARNING, load_dataset

END = pd.Timestamp("2024-12-31", tz="UTC")
NOW = pd.Timestamp("2025-01-10", tz="UTC")


@pytest.fixture(scope="module")
def small() -> Dataset:
    return generate_dataset(300, END, seed=3)


def _net_spend(orders: pd.DataFrame) -> pd.Series:
    signed = orders["amount"].where(orders["status"] == "paid", -orders["amount"])
    return signed.groupby(orders["user_id"]).sum()


def test_tables_follow_the_contract(demo_dataset: Dataset) -> None:
    o, e, u = demo_dataset.orders, demo_dataset.events, demo_dataset.users
    assert e is not None and u is not None
    assert list(o.columns) == ["user_id", "order_id", "ordered_at", "amount", "category", "channel", "status", "quantity"]
    assert str(o["ordered_at"].dtype) == "datetime64[ns, UTC]"
    assert str(e["occurred_at"].dtype) == "datetime64[ns, UTC]"
    assert str(u["joined_at"].dtype) == "datetime64[ns, UTC]"
    assert o["amount"].dtype == np.float64 and str(o["quantity"].dtype) == "Int64"
    assert o["user_id"].dtype == object and o["order_id"].dtype == object
    assert o["order_id"].is_unique and u["user_id"].is_unique
    assert u["user_id"].str.fullmatch(r"u\d{7}").all()
    assert set(o["status"]) <= set(ORDER_STATUSES)
    assert set(e["event_type"]) <= set(DEFAULT_EVENT_TYPES)
    assert (o["amount"] >= 1.0).all() and (o["quantity"] >= 1).all()
    assert set(o["user_id"]) <= set(u["user_id"]) and set(e["user_id"]) <= set(u["user_id"])
    # Everything happens at or before `end`, and after the user joined.
    assert o["ordered_at"].max() <= END and e["occurred_at"].max() <= END and u["joined_at"].max() <= END
    joined = u.set_index("user_id")["joined_at"]
    assert (o["ordered_at"].to_numpy() >= joined.reindex(o["user_id"]).to_numpy()).all()
    assert (e["occurred_at"].to_numpy() >= joined.reindex(e["user_id"]).to_numpy()).all()
    # Sorted by time, as an export would be.
    assert o["ordered_at"].is_monotonic_increasing and e["occurred_at"].is_monotonic_increasing


def test_history_spans_at_least_two_years(demo_dataset: Dataset) -> None:
    first = demo_dataset.orders["ordered_at"].min()
    assert END - first >= pd.Timedelta(days=2 * 365)
    assert END - first <= pd.Timedelta(days=2.5 * 365.25 + 1)
    # Orders in every month of the last two years: no holes in the history.
    months = demo_dataset.orders["ordered_at"].dt.tz_localize(None).dt.to_period("M")
    assert months[months >= pd.Period("2023-01", "M")].nunique() == 24


def test_same_seed_same_data_and_other_seed_other_data(small: Dataset) -> None:
    again = generate_dataset(300, END, seed=3)
    for a, b in ((small.orders, again.orders), (small.events, again.events), (small.users, again.users)):
        pd.testing.assert_frame_equal(a, b)
    other = generate_dataset(300, END, seed=4)
    assert not small.orders["amount"].equals(other.orders["amount"])


def test_naive_end_means_utc() -> None:
    a = generate_dataset(50, pd.Timestamp("2024-06-30"), seed=1)
    b = generate_dataset(50, pd.Timestamp("2024-06-30", tz="UTC"), seed=1)
    pd.testing.assert_frame_equal(a.orders, b.orders)


def test_prospects_exist_and_engage(demo_dataset: Dataset) -> None:
    u, o, e = demo_dataset.users, demo_dataset.orders, demo_dataset.events
    assert e is not None and u is not None
    buyers = set(o["user_id"])
    prospects = set(u["user_id"]) - buyers
    assert 0.2 < len(prospects) / len(u) < 0.7
    engaged_prospects = prospects & set(e["user_id"])
    assert len(engaged_prospects) > 0.5 * len(prospects)
    # Engagement predicts buying: buyers engage more per day in the pool than prospects.
    tenure = (END - u.set_index("user_id")["joined_at"]).dt.days.clip(lower=1)
    rate = e.groupby("user_id").size().reindex(u["user_id"], fill_value=0) / tenure.reindex(u["user_id"]).to_numpy()
    assert rate[rate.index.isin(buyers)].median() > 1.5 * rate[~rate.index.isin(buyers)].median()


def test_spend_is_long_tailed(demo_dataset: Dataset) -> None:
    net = _net_spend(demo_dataset.orders).clip(lower=0).sort_values(ascending=False)
    top = net.iloc[: int(np.ceil(0.2 * len(net)))].sum()
    assert top / net.sum() > 0.5
    amounts = demo_dataset.orders["amount"]
    assert amounts.mean() > 1.3 * amounts.median()  # right-skewed order values


def test_q4_spend_per_day_above_the_rest(demo_dataset: Dataset) -> None:
    o = demo_dataset.orders
    paid = o[(o["status"] == "paid") & (o["ordered_at"] > END - pd.Timedelta(days=730))]
    days = pd.date_range(END - pd.Timedelta(days=729), END, freq="D").floor("D")
    daily = paid.groupby(paid["ordered_at"].dt.floor("D"))["amount"].sum().reindex(days, fill_value=0.0)
    q4 = daily.index.quarter == 4
    assert daily[q4].mean() > 1.3 * daily[~q4].mean()
    # Also within one year (not only because the pool grows): Q4 2023 beats Q1-Q3 2023.
    y23 = daily[daily.index.year == 2023]
    assert y23[y23.index.quarter == 4].mean() > 1.2 * y23[y23.index.quarter < 4].mean()


def test_refunds_are_about_three_percent(demo_dataset: Dataset) -> None:
    share = (demo_dataset.orders["status"] == "refunded").mean()
    assert 0.015 < share < 0.05


def test_engagement_precedes_first_orders(demo_dataset: Dataset) -> None:
    o, e = demo_dataset.orders, demo_dataset.events
    assert e is not None
    first_order = o.groupby("user_id")["ordered_at"].min()
    first_event = e.groupby("user_id")["occurred_at"].min().reindex(first_order.index)
    assert (first_event < first_order).mean() > 0.8


def test_buyers_have_a_personal_rhythm(demo_dataset: Dataset) -> None:
    o = demo_dataset.orders
    counts = o.groupby("user_id").size()
    regulars = counts[counts >= 6].index
    gaps = o[o["user_id"].isin(regulars)].groupby("user_id")["ordered_at"].diff().dt.total_seconds() / 86400
    per_user = gaps.groupby(o["user_id"]).agg(["mean", "std"]).dropna()
    # Mean gaps differ between users far more than one user's gaps vary around their mean.
    assert per_user["mean"].quantile(0.9) > 2.5 * per_user["mean"].quantile(0.1)
    assert (per_user["std"] / per_user["mean"]).median() < 1.0  # gamma shape > 1: more regular than Poisson


def test_fading_engagement_precedes_buying_less(demo_dataset: Dataset) -> None:
    o, e = demo_dataset.orders, demo_dataset.events
    assert e is not None
    as_of = END - pd.Timedelta(days=180)
    paid = o[o["status"] == "paid"]
    before = paid[(paid["ordered_at"] <= as_of) & (paid["ordered_at"] > as_of - pd.Timedelta(days=365))]
    users = pd.Index(before["user_id"].unique())

    def events_between(lo_days: int, hi_days: int) -> pd.Series:
        t = e["occurred_at"]
        m = (t > as_of - pd.Timedelta(days=lo_days)) & (t <= as_of - pd.Timedelta(days=hi_days))
        return e[m].groupby("user_id").size().reindex(users, fill_value=0)

    recent, earlier = events_between(60, 0) / 60, events_between(240, 60) / 180
    known = events_between(240, 60) >= 3
    fading = known & (recent < 0.5 * earlier)
    steady = known & (recent >= 0.8 * earlier)
    assert fading.sum() >= 30 and steady.sum() >= 30
    after = paid[(paid["ordered_at"] > as_of) & (paid["ordered_at"] <= as_of + pd.Timedelta(days=180))]
    future_orders = after.groupby("user_id").size().reindex(users, fill_value=0)
    assert (future_orders[fading] > 0).mean() < (future_orders[steady] > 0).mean() - 0.3
    assert future_orders[fading].mean() < 0.5 * future_orders[steady].mean()


def test_reviews_carry_sentiment_other_events_no_value(demo_dataset: Dataset) -> None:
    e = demo_dataset.events
    assert e is not None
    reviews = e["event_type"] == "review"
    assert reviews.any() and e.loc[reviews, "value"].between(-1, 1).all()
    assert e.loc[~reviews, "value"].isna().all()


def test_csv_round_trip_is_lossless_and_clean(demo_dataset: Dataset, demo_dir: Path) -> None:
    ds, report = load_dataset(demo_dir, config=StrataConfig(), now=NOW)
    assert report.rows_rejected == 0
    assert all(not t.warnings for t in report.tables.values())
    pd.testing.assert_frame_equal(ds.orders, demo_dataset.orders)
    pd.testing.assert_frame_equal(ds.events, demo_dataset.events)
    pd.testing.assert_frame_equal(ds.users, demo_dataset.users)
    head = (demo_dir / "orders.csv").read_text().splitlines()[1]
    assert "T" in head and "Z" in head  # ISO-8601 UTC


def test_parquet_round_trip(small: Dataset, tmp_path: Path) -> None:
    paths = write_dataset(small, tmp_path, "parquet")
    assert sorted(p.name for p in paths.values()) == ["events.parquet", "orders.parquet", "users.parquet"]
    ds, report = load_dataset(tmp_path, config=StrataConfig(), now=NOW)
    assert report.rows_rejected == 0
    pd.testing.assert_frame_equal(ds.orders, small.orders)
    pd.testing.assert_frame_equal(ds.events, small.events)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_bad_rows_are_all_caught_and_good_rows_all_kept(small: Dataset, tmp_path: Path, fmt: str) -> None:
    paths, inserted = write_dataset_with_report(small, tmp_path, fmt, bad_rows=0.2, seed=5)  # type: ignore[arg-type]
    assert set(inserted["orders"]) == set(BAD_KINDS["orders"])  # every kind appears at this fraction
    ds, report = load_dataset(tmp_path, config=StrataConfig(), now=NOW)
    for name, original in (("orders", small.orders), ("events", small.events), ("users", small.users)):
        res = report.tables[name]
        assert res.rows_in == res.n_accepted + res.n_rejected
        assert res.rows_in == len(original) + sum(inserted[name].values())
        kept_unknown = inserted[name].get("unknown_user", 0)
        assert res.n_rejected == sum(inserted[name].values()) - kept_unknown
        assert res.warning_counts.get(UNKNOWN_USER_WARNING, 0) == kept_unknown
    # The good rows come through exactly (the bad ones were all rejected, duplicates after originals).
    pd.testing.assert_frame_equal(ds.orders, small.orders)
    pd.testing.assert_frame_equal(ds.users, small.users)
    assert ds.events is not None and small.events is not None
    good_events = ds.events[~ds.events["user_id"].str.startswith("x")].reset_index(drop=True)
    pd.testing.assert_frame_equal(good_events, small.events)


def test_corrupt_tables_keeps_good_rows_in_order(small: Dataset) -> None:
    strings = {"orders": table_as_strings(small.orders)}
    bad, counts = corrupt_tables(strings, 0.1, seed=1)
    n_bad = sum(counts["orders"].values())
    assert len(bad["orders"]) == len(small.orders) + n_bad
    # Rows identical to an original are the originals and their duplicates (always placed after them).
    merged = bad["orders"].merge(strings["orders"], how="inner", on=list(strings["orders"].columns))
    pd.testing.assert_frame_equal(merged.drop_duplicates().reset_index(drop=True), strings["orders"])
    assert len(merged) == len(small.orders) + counts["orders"].get("duplicate_order_id", 0)


def test_written_csv_reads_back_as_strings(demo_dir: Path) -> None:
    raw = read_table(demo_dir / "orders.csv", ORDERS)
    assert all(pd.api.types.is_object_dtype(dt) for dt in raw.dtypes)
    assert raw["ordered_at"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()


def test_rejects_nonpositive_size() -> None:
    with pytest.raises(ValueError):
        generate_dataset(0, END)
