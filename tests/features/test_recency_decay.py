"""Exponentially decayed counts and spend, checked against a direct numpy computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


def test_decay_matches_half_life_formula() -> None:
    ages = np.array([0.0, 7.0, 30.0, 100.25])
    amounts = np.array([10.0, 20.0, 40.0, 80.0])
    orders = pd.DataFrame({
        "user_id": "a", "order_id": [f"o{i}" for i in range(4)],
        "ordered_at": AS_OF - pd.to_timedelta(ages, unit="D"), "amount": amounts,
        "status": ["paid", "paid", "refunded", "paid"],
    })
    events = pd.DataFrame({"user_id": "a", "occurred_at": AS_OF - pd.to_timedelta([1.0, 14.0], unit="D"),
                           "event_type": ["share", "checkin"]})
    got = build_features(Dataset(orders=orders, events=events), AS_OF, StrataConfig()).set_index("user_id")
    paid = np.array([True, True, False, True])
    sign = np.where(paid, 1.0, -1.0)
    for h in (7, 30, 90):
        w = 0.5 ** (ages / h)
        assert got.loc["a", f"orders_decay_hl{h}"] == pytest.approx(w[paid].sum(), rel=1e-12)
        assert got.loc["a", f"spend_decay_hl{h}"] == pytest.approx((sign * amounts * w).sum(), rel=1e-12)
        assert got.loc["a", f"events_decay_hl{h}"] == pytest.approx(0.5 ** (1 / h) + 0.5 ** (14 / h), rel=1e-12)
    # an order exactly one half-life old weighs one half
    assert got.loc["a", "orders_decay_hl7"] == pytest.approx(1 + 0.5 + 0.5 ** (100.25 / 7))
    assert got.loc["a", "events_share_decay_hl90"] == pytest.approx(0.5 ** (1 / 90))


def test_half_lives_come_from_configuration() -> None:
    cfg = config_from_dict({"features": {"half_lives_days": [2]}})
    orders = pd.DataFrame({"user_id": ["a"], "order_id": ["1"], "ordered_at": [AS_OF - pd.Timedelta(days=4)],
                           "amount": [8.0]})
    got = build_features(Dataset(orders=orders), AS_OF, cfg).set_index("user_id")
    assert got.loc["a", "orders_decay_hl2"] == pytest.approx(0.25)
    assert got.loc["a", "spend_decay_hl2"] == pytest.approx(2.0)
    assert "orders_decay_hl7" not in got.columns


def test_no_activity_decays_to_zero_not_nan() -> None:
    users = pd.DataFrame({"user_id": ["p"], "joined_at": [AS_OF - pd.Timedelta(days=3)]})
    orders = pd.DataFrame({"user_id": pd.Series([], dtype=object), "order_id": pd.Series([], dtype=object),
                           "ordered_at": pd.Series([], dtype="datetime64[ns, UTC]"), "amount": pd.Series([], dtype=float)})
    got = build_features(Dataset(orders=orders, users=users), AS_OF, StrataConfig()).set_index("user_id")
    for h in (7, 30, 90):
        for kind in ("orders", "spend", "events"):
            assert got.loc["p", f"{kind}_decay_hl{h}"] == 0.0
