"""Labels over (as_of, as_of + H]: churn, net value floored at 0, conversion of prospects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import StrataConfig
from features.dataset import Dataset
from features.errors import StrataError
from features.labels import build_labels
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-03-01", tz="UTC")


def dataset() -> Dataset:
    rows = [
        ("buyer_returns", "2024-01-10", 10.0, "paid"), ("buyer_returns", "2024-03-15", 25.0, "paid"),
        ("buyer_returns", "2024-04-01", 5.0, "refunded"),
        ("buyer_churns", "2024-02-01", 30.0, "paid"), ("buyer_churns", "2024-06-01", 99.0, "paid"),  # after H
        ("refund_only", "2024-02-10", 40.0, "paid"), ("refund_only", "2024-03-10", 40.0, "refunded"),
        ("at_cutoff", "2024-03-01", 7.0, "paid"),  # at as_of: a feature, not a label
        ("edge", "2024-02-01", 1.0, "paid"), ("edge", "2024-05-30", 3.0, "paid"),  # exactly as_of + 90 days
        ("later_user", "2024-04-01", 8.0, "paid"),  # first seen after as_of: not in the labels
        ("prospect_converts", "2024-04-20", 12.0, "paid"),
    ]
    orders = pd.DataFrame({
        "user_id": [r[0] for r in rows], "order_id": [f"o{i}" for i in range(len(rows))],
        "ordered_at": pd.to_datetime([r[1] for r in rows], utc=True), "amount": [r[2] for r in rows],
        "status": [r[3] for r in rows],
    })
    users = pd.DataFrame({"user_id": ["prospect_converts", "prospect_stays"],
                          "joined_at": pd.to_datetime(["2024-02-01", "2024-02-02"], utc=True)})
    return Dataset(orders=orders, users=users)


def test_labels_hand_computed() -> None:
    got = build_labels(dataset(), AS_OF, 90).set_index("user_id")
    assert list(got.columns) == ["label_churn", "label_value", "label_convert"]
    assert (got.dtypes == "float64").all()
    assert "later_user" not in got.index
    expected = {  # churn, value, convert
        "buyer_returns": (0.0, 20.0, np.nan),
        "buyer_churns": (1.0, 0.0, np.nan),
        "refund_only": (1.0, 0.0, np.nan),  # net -40 floored at 0
        "at_cutoff": (1.0, 0.0, np.nan),
        "edge": (0.0, 3.0, np.nan),  # the window end is inclusive
        "prospect_converts": (0.0, 12.0, 1.0),
        "prospect_stays": (1.0, 0.0, 0.0),
    }
    assert set(got.index) == set(expected)
    for user, values in expected.items():
        np.testing.assert_array_equal(got.loc[user].to_numpy(), np.array(values), err_msg=user)


def test_labels_cover_exactly_the_feature_users() -> None:
    ds = dataset()
    for day in ("2024-01-15", "2024-03-01", "2024-05-01"):
        as_of = pd.Timestamp(day, tz="UTC")
        feats = build_features(ds, as_of, StrataConfig())
        labels = build_labels(ds, as_of, 30)
        assert feats["user_id"].tolist() == labels["user_id"].tolist()
        # prospects are exactly the users with a conversion label
        assert (labels["label_convert"].notna().to_numpy() == (feats["is_prospect"] == 1).to_numpy()).all()


def test_horizon_must_be_positive() -> None:
    with pytest.raises(StrataError, match="horizon"):
        build_labels(dataset(), AS_OF, 0)


def test_labels_run_under_the_configured_engine_memory_limit() -> None:
    from features.config import config_from_dict
    from features.errors import EngineMemoryError

    cfg = config_from_dict({"features": {"engine_memory_limit": "4MB"}})
    with pytest.raises(EngineMemoryError, match=r"engine_memory_limit = '4MB'"):
        build_labels(dataset(), AS_OF, 90, cfg)
    pd.testing.assert_frame_equal(build_labels(dataset(), AS_OF, 90, StrataConfig()), build_labels(dataset(), AS_OF, 90))
