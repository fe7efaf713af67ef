"""The generator's volume knobs (``order_rate``, ``event_rate``): defaults unchanged, volumes scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.demo_data import generate_dataset

END = pd.Timestamp("2024-06-30", tz="UTC")
N = 3000


@pytest.fixture(scope="module")
def base() -> tuple:
    ds = generate_dataset(N, END, seed=11)
    return ds.orders, ds.events, ds.users


def test_rates_of_one_give_exactly_the_demo_data(base: tuple) -> None:
    ds = generate_dataset(N, END, seed=11, order_rate=1.0, event_rate=1.0)
    for got, want in zip((ds.orders, ds.events, ds.users), base, strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_order_rate_scales_orders_of_the_same_buyers(base: tuple) -> None:
    orders, events, users = base
    ds = generate_dataset(N, END, seed=11, order_rate=5.0)
    # same users, same buyers (first purchases do not depend on the rate), about 5x the repeat orders
    pd.testing.assert_frame_equal(ds.users, users, check_exact=True)
    assert set(ds.orders["user_id"]) == set(orders["user_id"])
    buyers = orders["user_id"].nunique()
    repeat_base = len(orders) - buyers
    repeat_fast = len(ds.orders) - buyers
    assert 4.0 < repeat_fast / repeat_base < 6.0
    # events tied to orders (carts, coupons, reviews) grow with them; organic ones do not change
    assert len(ds.events) > len(events)
    tied = ["cart_add", "coupon_claim", "coupon_redeem", "review"]
    assert ds.events["event_type"].isin(tied).sum() > 2 * events["event_type"].isin(tied).sum()
    organic = ["page_view", "article_read", "link_click", "checkin", "group_message"]
    ratio = ds.events["event_type"].isin(organic).sum() / events["event_type"].isin(organic).sum()
    assert 0.97 < ratio < 1.03  # the same organic rate (the random draws differ a little)
    assert ds.orders["order_id"].is_unique and ds.orders["ordered_at"].max() <= END


def test_event_rate_scales_organic_events_only(base: tuple) -> None:
    orders, events, _ = base
    ds = generate_dataset(N, END, seed=11, event_rate=2.0)
    pd.testing.assert_frame_equal(ds.orders, orders, check_exact=True)
    organic = ["page_view", "article_read", "link_click", "checkin", "group_message"]
    ratio = ds.events["event_type"].isin(organic).sum() / events["event_type"].isin(organic).sum()
    assert 1.8 < ratio < 2.2
    joins = ("add_wecom", "join_group")
    assert (ds.events["event_type"].isin(joins).sum()) == events["event_type"].isin(joins).sum()


def test_benchmark_rates_reach_the_issue_volume() -> None:
    ds = generate_dataset(20_000, END, seed=42, order_rate=5.4, event_rate=1.55)
    assert ds.events is not None
    per_user_orders = len(ds.orders) / 20_000
    per_user_events = len(ds.events) / 20_000
    assert 17 < per_user_orders < 23 and 52 < per_user_events < 68
    assert np.isfinite(ds.orders["amount"]).all()


@pytest.mark.parametrize("kwargs", [{"order_rate": 0.0}, {"event_rate": -1.0}, {"order_rate": float("nan")}])
def test_rates_must_be_positive(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        generate_dataset(10, END, **kwargs)
