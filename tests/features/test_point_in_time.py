"""Point-in-time invariants: data after as_of never changes features; edge-case users stay sane."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import StrataConfig
from features.dataset import Dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-06-30 12:00", tz="UTC")
CFG = StrataConfig()
USERS = ["u1", "u2", "u3", "u4", "new"]
EVENT_TYPES = ["share", "review", "coupon_claim", "coupon_redeem", "page_view", "unlisted"]


def base_dataset() -> Dataset:
    rng = np.random.default_rng(42)
    n = 40
    orders = pd.DataFrame({
        "user_id": rng.choice(USERS[:4], n),
        "order_id": [f"o{i}" for i in range(n)],
        "ordered_at": AS_OF - pd.to_timedelta(rng.uniform(0, 400, n), unit="D"),
        "amount": rng.gamma(2.0, 30.0, n).round(2),
        "status": rng.choice(["paid", "paid", "paid", "refunded"], n),
        "category": rng.choice(["a", "b", "c"], n),
    })
    m = 60
    events = pd.DataFrame({
        "user_id": rng.choice(USERS[:4], m),
        "occurred_at": AS_OF - pd.to_timedelta(rng.uniform(0, 200, m), unit="D"),
        "event_type": rng.choice(EVENT_TYPES, m),
        "value": rng.uniform(-1, 1, m),
    })
    users = pd.DataFrame({"user_id": USERS[:4], "source_channel": ["ad", "qr", None, "referral"],
                          "joined_at": AS_OF - pd.to_timedelta([500, 30, 2, 0], unit="D")})
    return Dataset(orders=orders, events=events, users=users)


BASE = base_dataset()
EXPECTED = build_features(BASE, AS_OF, CFG)

# offsets after as_of: from one microsecond to two years
after = st.floats(min_value=1e-6, max_value=730.0, allow_nan=False).map(lambda d: AS_OF + pd.Timedelta(days=d))
future_orders = st.lists(
    st.tuples(st.sampled_from(USERS), after, st.floats(0, 5000, allow_nan=False), st.sampled_from(["paid", "refunded"]),
              st.sampled_from(["a", "b", "z"])),
    max_size=8,
)
future_events = st.lists(
    st.tuples(st.sampled_from(USERS), after, st.sampled_from(EVENT_TYPES), st.floats(-1, 1, allow_nan=False)),
    max_size=8,
)
future_joins = st.lists(st.tuples(st.sampled_from(["late1", "late2"]), after), max_size=2, unique_by=lambda t: t[0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders=future_orders, events=future_events, joins=future_joins)
def test_appending_data_after_as_of_changes_nothing(orders: list, events: list, joins: list) -> None:
    o = pd.DataFrame(orders, columns=["user_id", "ordered_at", "amount", "status", "category"])
    o["order_id"] = [f"f{i}" for i in range(len(o))]
    e = pd.DataFrame(events, columns=["user_id", "occurred_at", "event_type", "value"])
    u = pd.DataFrame(joins, columns=["user_id", "joined_at"]).assign(source_channel="ad")
    def grow(base: pd.DataFrame, extra: pd.DataFrame, ts_col: str) -> pd.DataFrame:
        if extra.empty:
            return base
        return pd.concat([base, extra.astype({ts_col: "datetime64[ns, UTC]"})], ignore_index=True)

    grown = Dataset(orders=grow(BASE.orders, o, "ordered_at"), events=grow(BASE.events, e, "occurred_at"),
                    users=grow(BASE.users, u, "joined_at"))
    got = build_features(grown, AS_OF, CFG)
    pd.testing.assert_frame_equal(got, EXPECTED, check_exact=False, rtol=1e-12)
    # ...and removing them again (the base data) is what EXPECTED already is: both directions hold


def test_removing_data_after_as_of_changes_nothing() -> None:
    shifted = Dataset(
        orders=pd.concat([BASE.orders, BASE.orders.assign(ordered_at=BASE.orders["ordered_at"] + pd.Timedelta(days=401),
                                                          order_id=BASE.orders["order_id"] + "x")], ignore_index=True),
        events=pd.concat([BASE.events, BASE.events.assign(occurred_at=BASE.events["occurred_at"] + pd.Timedelta(days=201))],
                         ignore_index=True),
        users=BASE.users,
    )
    pd.testing.assert_frame_equal(build_features(shifted, AS_OF, CFG), EXPECTED, check_exact=False, rtol=1e-12)


def test_edge_case_users_get_sane_features() -> None:
    t = AS_OF - pd.Timedelta(days=10)
    orders = pd.DataFrame({
        "user_id": ["one", "same_day", "same_day", "same_day", "refunds", "refunds", "zero"],
        "order_id": [f"o{i}" for i in range(7)],
        "ordered_at": [t, t, t, t + pd.Timedelta(hours=3), t, t, t],
        "amount": [10.0, 5.0, 5.0, 0.0, 20.0, 20.0, 0.0],
        "status": ["paid", "paid", "paid", "paid", "refunded", "refunded", "paid"],
    })
    users = pd.DataFrame({"user_id": ["prospect"], "joined_at": [t]})
    got = build_features(Dataset(orders=orders, users=users), AS_OF, CFG).set_index("user_id")
    assert sorted(got.index) == ["one", "prospect", "refunds", "same_day", "zero"]
    numeric = got.drop(columns=["as_of", "source_channel"])
    assert not np.isinf(numeric.to_numpy()).any()
    assert got.loc["same_day", "orders_total"] == 3 and got.loc["same_day", "order_days_total"] == 1
    assert np.isnan(got.loc["same_day", "gap_mean_days"]) and got.loc["same_day", "first_order_value"] == 10.0
    assert got.loc["refunds", "is_prospect"] == 1 and got.loc["refunds", "spend_total"] == -40.0
    assert np.isnan(got.loc["refunds", "refund_rate"])  # no paid orders to relate refunds to
    assert got.loc["zero", "avg_order_value"] == 0.0 and np.isnan(got.loc["zero", "q4_spend_share"])
    assert got.loc["prospect", "days_since_joined"] == 10.0 and got.loc["prospect", "orders_total"] == 0
    assert got.loc["one", "overdue_ratio"] != got.loc["one", "overdue_ratio"]  # NaN: one order day, no rhythm
