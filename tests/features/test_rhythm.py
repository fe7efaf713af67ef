"""Purchase rhythm: gaps between order days, overdue ratio, trend of the last window vs the previous."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


def build(rows: list[tuple[str, float, float, str]], config: StrataConfig | None = None) -> pd.DataFrame:
    """rows: (user, days before as_of, amount, status)."""
    orders = pd.DataFrame({
        "user_id": [r[0] for r in rows], "order_id": [f"o{i}" for i in range(len(rows))],
        "ordered_at": [AS_OF - pd.Timedelta(days=r[1]) for r in rows], "amount": [r[2] for r in rows],
        "status": [r[3] for r in rows],
    })
    return build_features(Dataset(orders=orders), AS_OF, config or StrataConfig()).set_index("user_id")


def test_gap_mean_std_and_overdue() -> None:
    # order days 100, 90, 70, 40 days before as_of (UTC midnights): gaps 10, 20, 30
    got = build([("a", 100, 1, "paid"), ("a", 90, 1, "paid"), ("a", 70, 1, "paid"), ("a", 40, 1, "paid"),
                 ("a", 40 - 0.25, 5, "paid"),  # same day as the previous: not a new order day
                 ("a", 10, 9, "refunded")])  # refunds are not order days
    assert got.loc["a", "order_days_total"] == 4.0
    assert got.loc["a", "gap_mean_days"] == 20.0
    assert got.loc["a", "gap_std_days"] == pytest.approx(np.std([10, 20, 30]))
    assert got.loc["a", "overdue_ratio"] == pytest.approx(39.75 / 20.0)


def test_rhythm_undefined_below_two_order_days() -> None:
    got = build([("one", 5, 1, "paid"), ("same_day", 3.5, 1, "paid"), ("same_day", 3.25, 1, "paid"),
                 ("two", 30, 1, "paid"), ("two", 2, 1, "paid")])
    for user in ("one", "same_day"):
        assert np.isnan(got.loc[user, "gap_mean_days"]) and np.isnan(got.loc[user, "gap_std_days"])
        assert np.isnan(got.loc[user, "overdue_ratio"])
    assert got.loc["two", "gap_mean_days"] == 28.0 and got.loc["two", "gap_std_days"] == 0.0


def test_trend_ratios_smoothed() -> None:
    # default trend window 90 days: last = (as_of-90d, as_of], previous = (as_of-180d, as_of-90d]
    got = build([("down", 150, 100, "paid"), ("down", 120, 100, "paid"), ("down", 100, 100, "paid"),
                 ("down", 10, 50, "paid"),
                 ("new", 5, 20, "paid"),
                 ("refunds", 150, 10, "paid"), ("refunds", 20, 30, "refunded")])
    # orders are smoothed by one order, spend by one average paid order (down: 350 / 4 = 87.5)
    assert got.loc["down", "trend_orders_ratio"] == pytest.approx((1 + 1) / (3 + 1))
    assert got.loc["down", "trend_spend_ratio"] == pytest.approx((50 + 87.5) / (300 + 87.5))
    assert got.loc["new", "trend_orders_ratio"] == 2.0 and got.loc["new", "trend_spend_ratio"] == 2.0
    # negative net spend in a window is floored at 0 before smoothing (average paid order 10)
    assert got.loc["refunds", "trend_spend_ratio"] == pytest.approx((0 + 10) / (10 + 10))


def test_trend_spend_ratio_is_scale_free() -> None:
    rows = [("a", 150, 40, "paid"), ("a", 100, 60, "paid"), ("a", 10, 25, "paid"), ("b", 20, 5, "paid"),
            ("c", 130, 8, "paid"), ("c", 30, 8, "refunded")]
    base = build(rows)
    scaled = build([(u, d, amount * 1000, status) for u, d, amount, status in rows])
    np.testing.assert_allclose(scaled["trend_spend_ratio"], base["trend_spend_ratio"], rtol=1e-12)
    # users without paid spend are neutral
    only_refund = build([("r", 10, 30, "refunded")])
    assert only_refund.loc["r", "trend_spend_ratio"] == 1.0


def test_tenure_free_rhythm() -> None:
    # a: order days 100, 40, 10 days before as_of; b: one order 30 days ago; c: one order 2 hours ago
    got = build([("a", 100, 1, "paid"), ("a", 40, 1, "paid"), ("a", 40 - 0.25, 1, "paid"), ("a", 10, 1, "paid"),
                 ("b", 30, 5, "paid"), ("c", 2 / 24, 5, "paid"), ("p", 5, 9, "refunded")])
    assert got.loc["a", "active_span_share"] == pytest.approx((100 - 10) / 100)
    assert got.loc["a", "repeat_rate_30d"] == pytest.approx(2 * 30 / 100)
    assert got.loc["b", "active_span_share"] == 0.0 and got.loc["b", "repeat_rate_30d"] == 0.0
    assert got.loc["c", "repeat_rate_30d"] == 0.0  # tenure floored at 1 day
    assert np.isnan(got.loc["p", "active_span_share"]) and np.isnan(got.loc["p", "repeat_rate_30d"])
    # doubling every gap (a customer twice as old, buying half as often) halves the rate, keeps the share
    slow = build([("a", 200, 1, "paid"), ("a", 80, 1, "paid"), ("a", 20, 1, "paid")])
    assert slow.loc["a", "repeat_rate_30d"] == pytest.approx(got.loc["a", "repeat_rate_30d"] / 2)
    assert slow.loc["a", "active_span_share"] == pytest.approx(got.loc["a", "active_span_share"])


def test_trend_window_from_configuration() -> None:
    cfg = config_from_dict({"features": {"trend_window_days": 10}})
    got = build([("a", 15, 1, "paid"), ("a", 12, 1, "paid"), ("a", 5, 1, "paid")], cfg)
    assert got.loc["a", "trend_orders_ratio"] == pytest.approx(2 / 3)
