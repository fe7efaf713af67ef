"""RFM features on hand-computed tiny frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


def orders(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [r[0] for r in rows],
        "order_id": [f"o{i}" for i in range(len(rows))],
        "ordered_at": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
        "amount": [r[2] for r in rows],
        "status": [r[3] for r in rows],
    })


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    data = orders([
        ("a", "2023-01-01 00:00", 100.0, "paid"),  # 547 days before as_of: outside every window
        ("a", "2024-05-02 00:00", 50.0, "paid"),  # 60 days
        ("a", "2024-06-21 12:00", 30.0, "paid"),  # 9.5 days
        ("a", "2024-06-26 00:00", 30.0, "refunded"),  # 5 days: subtracted from spend
        ("a", "2024-07-05 00:00", 999.0, "paid"),  # after as_of: never seen
        ("b", "2024-06-30 00:00", 20.0, "paid"),
        ("b", "2024-06-30 06:00", 40.0, "paid"),  # same day as the first: first purchase day = 60
    ])
    return build_features(Dataset(orders=data), AS_OF, StrataConfig()).set_index("user_id")


def test_recency_and_tenure(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "days_since_last_order"] == 9.5
    assert feats.loc["a", "days_since_first_order"] == 547.0
    assert feats.loc["b", "days_since_last_order"] == 0.75
    assert feats.loc["b", "days_since_first_order"] == 1.0


def test_counts_and_net_spend_all_time(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "orders_total"] == 3.0  # refund rows are not orders
    assert feats.loc["a", "spend_total"] == 100 + 50 + 30 - 30
    assert feats.loc["b", "orders_total"] == 2.0 and feats.loc["b", "spend_total"] == 60.0


@pytest.mark.parametrize("window,orders_a,spend_a", [(30, 1, 0.0), (90, 2, 50.0), (180, 2, 50.0), (365, 2, 50.0)])
def test_windows(feats: pd.DataFrame, window: int, orders_a: int, spend_a: float) -> None:
    assert feats.loc["a", f"orders_{window}d"] == orders_a
    assert feats.loc["a", f"spend_{window}d"] == spend_a
    assert feats.loc["b", f"orders_{window}d"] == 2 and feats.loc["b", f"spend_{window}d"] == 60.0


def test_order_values(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "avg_order_value"] == pytest.approx(180 / 3)  # gross paid amounts
    assert feats.loc["a", "max_order_value"] == 100.0
    assert feats.loc["a", "first_order_value"] == 100.0
    assert feats.loc["b", "first_order_value"] == 60.0  # both orders of the first purchase day


def test_window_edge_is_exclusive_of_its_start() -> None:
    data = orders([("a", "2024-06-01 00:00", 1.0, "paid"), ("a", "2024-06-01 00:00:01", 2.0, "paid")])
    got = build_features(Dataset(orders=data), AS_OF, StrataConfig()).set_index("user_id")
    assert got.loc["a", "orders_30d"] == 1.0 and got.loc["a", "spend_30d"] == 2.0  # (as_of - 30d, as_of]


def test_prospect_and_refund_only_users_have_nan_order_values() -> None:
    data = orders([("r", "2024-06-01", 15.0, "refunded")])
    events = pd.DataFrame({"user_id": ["p"], "occurred_at": pd.to_datetime(["2024-06-15"], utc=True),
                           "event_type": ["page_view"]})
    got = build_features(Dataset(orders=data, events=events), AS_OF, StrataConfig()).set_index("user_id")
    for user in ("p", "r"):
        assert got.loc[user, "orders_total"] == 0.0 and got.loc[user, "is_prospect"] == 1.0
        for col in ("days_since_last_order", "days_since_first_order", "avg_order_value", "max_order_value",
                    "first_order_value"):
            assert np.isnan(got.loc[user, col])
    assert got.loc["r", "spend_total"] == -15.0 and got.loc["p", "spend_total"] == 0.0


def test_rfm_matches_an_independent_pandas_oracle(demo_dataset: Dataset) -> None:
    as_of = pd.Timestamp("2024-10-15 06:00", tz="UTC")
    got = build_features(demo_dataset, as_of, StrataConfig()).set_index("user_id")
    o = demo_dataset.orders[demo_dataset.orders["ordered_at"] <= as_of]
    o = o.assign(signed=np.where(o["status"] == "paid", o["amount"], -o["amount"]),
                 age=(as_of - o["ordered_at"]).dt.total_seconds() / 86400)
    paid = o[o["status"] == "paid"]
    g = paid.groupby("user_id")
    expected = pd.DataFrame({
        "orders_total": g.size(),
        "days_since_last_order": g["age"].min(),
        "days_since_first_order": g["age"].max(),
        "avg_order_value": g["amount"].mean(),
        "max_order_value": g["amount"].max(),
        "spend_total": o.groupby("user_id")["signed"].sum(),
    })
    for w in (30, 90, 180, 365):
        recent = o[o["age"] < w]
        expected[f"orders_{w}d"] = recent[recent["status"] == "paid"].groupby("user_id").size()
        expected[f"spend_{w}d"] = recent.groupby("user_id")["signed"].sum()
    expected = expected.reindex(got.index)
    counts = [c for c in expected.columns if c.startswith(("orders_", "spend_"))]
    expected[counts] = expected[counts].fillna(0.0)
    assert len(got) > 500 and (got["orders_total"] > 0).sum() > 200
    pd.testing.assert_frame_equal(got[expected.columns], expected.astype(float), check_exact=False, rtol=1e-9)
