"""Engagement features: per-type windows and decay, interaction recency, active days, influence, coupons, reviews."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


def days_ago(*days: float) -> list[pd.Timestamp]:
    return [AS_OF - pd.Timedelta(days=d) for d in days]


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    events = pd.DataFrame({
        "user_id": ["a"] * 9 + ["b"] * 4,
        "occurred_at": days_ago(0.5, 2, 2.5, 40, 40.5, 100, 3, 4, 5) + days_ago(1, 1.5, 60, -1),
        "event_type": ["share", "share", "referral", "share", "article_read", "share", "coupon_claim",
                       "coupon_claim", "coupon_redeem",
                       "review", "review", "review", "review"],
        "value": [np.nan] * 9 + [0.9, np.nan, 0.3, -1.0],  # b's last review is after as_of
    })
    orders = pd.DataFrame({"user_id": ["a", "c"], "order_id": ["1", "2"], "ordered_at": days_ago(2.25, 45.5),
                           "amount": [10.0, 5.0], "status": ["paid", "refunded"]})
    return build_features(Dataset(orders=orders, events=events), AS_OF, StrataConfig()).set_index("user_id")


def test_per_type_windows_and_totals(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "events_share_30d"] == 2 and feats.loc["a", "events_share_90d"] == 3
    assert feats.loc["a", "shares_total"] == 4 and feats.loc["a", "referrals_total"] == 1
    assert feats.loc["a", "events_article_read_30d"] == 0 and feats.loc["a", "events_article_read_90d"] == 1
    assert feats.loc["a", "events_total"] == 9 and feats.loc["b", "events_total"] == 3
    assert feats.loc["a", "events_share_decay_hl90"] == pytest.approx(sum(0.5 ** (d / 90) for d in (0.5, 2, 40, 100)))


def test_coupons_and_reviews(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "coupon_claims_total"] == 2 and feats.loc["a", "coupon_redeems_total"] == 1
    assert feats.loc["a", "coupon_redeem_ratio"] == 0.5
    assert np.isnan(feats.loc["b", "coupon_redeem_ratio"])  # no claims
    assert feats.loc["b", "review_sentiment_mean"] == pytest.approx(0.6)  # unscored and future reviews ignored
    assert np.isnan(feats.loc["a", "review_sentiment_mean"])


def test_interaction_recency_and_active_days(feats: pd.DataFrame) -> None:
    assert feats.loc["a", "days_since_last_event"] == 0.5
    assert feats.loc["a", "days_since_last_interaction"] == 0.5
    assert feats.loc["c", "days_since_last_interaction"] == 45.5  # a refund is an interaction too
    assert np.isnan(feats.loc["c", "days_since_last_event"])
    # a: events 0.5, 2, 2.5, 3, 4, 5 days ago and an order 2.25 days ago -> whole days 0, 2, 3, 4, 5
    assert feats.loc["a", "active_days_30d"] == 5
    assert feats.loc["b", "active_days_30d"] == 1 and feats.loc["c", "active_days_30d"] == 0


def test_unknown_event_types_count_in_totals_only() -> None:
    events = pd.DataFrame({"user_id": ["a", "a"], "occurred_at": days_ago(1, 2), "event_type": ["livestream_like", "share"]})
    orders = pd.DataFrame({"user_id": pd.Series([], dtype=object), "order_id": pd.Series([], dtype=object),
                           "ordered_at": pd.Series([], dtype="datetime64[ns, UTC]"), "amount": pd.Series([], dtype=float)})
    got = build_features(Dataset(orders=orders, events=events), AS_OF, StrataConfig()).set_index("user_id")
    assert got.loc["a", "events_total"] == 2 and got.loc["a", "events_share_30d"] == 1
    assert not any("livestream" in c for c in got.columns)


def test_packed_window_counts_unpack_exactly_up_to_their_bound() -> None:
    """A type's 30- and 90-day counts share one integer SUM; derived definitions read them back, and give
    NULL (NaN) rather than a wrong count once the bound (events_total) reaches 2**30."""
    import duckdb

    from features.definitions import PACKED_COUNT_BITS, packed_window_counts, unpack_window_count

    con = duckdb.connect()
    rows = pd.DataFrame({"age_days": [0.5, 29.9, 30.0, 89.9, 90.0, 400.0], "kind": ["x", "x", "x", "x", "x", "y"]})
    con.register("r", rows)
    agg = packed_window_counts("kind = 'x'", 30, 90)
    packed = con.execute(f"SELECT {agg} FROM r").fetchone()
    assert packed is not None and packed[0] == 2 * 2**PACKED_COUNT_BITS + 4  # 2 rows under 30 days, 4 under 90
    limit = 2**PACKED_COUNT_BITS
    big = (limit - 1) * limit + (limit - 1)  # the largest exact pair: both counts 2**30 - 1
    for p, bound, short, long in ((packed[0], 6, 2, 4), (big, limit - 1, limit - 1, limit - 1), (big, limit, None, None)):
        got = con.execute(f"SELECT {unpack_window_count('p', 'short', 'b')}, {unpack_window_count('p', 'long', 'b')} "
                          f"FROM (SELECT CAST({p} AS HUGEINT) AS p, CAST({bound} AS BIGINT) AS b)").fetchone()
        assert got == (short, long)
    with pytest.raises(ValueError):
        packed_window_counts("TRUE", 90, 30)
