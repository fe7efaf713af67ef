"""The leakage audit catches a feature that peeks one day past the cutoff; the real pipeline passes."""

from __future__ import annotations

import pandas as pd

from features.config import StrataConfig
from features.dataset import Dataset
from features.leakage import append_future_copies, audit_leakage, truncate_dataset
from features.pipeline import build_features

AS_OF = pd.Timestamp("2024-09-30", tz="UTC")


def peeking_features(dataset: Dataset, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
    """The real features plus one planted leak: orders counted up to one day after the cutoff."""
    feats = build_features(dataset, as_of, config)
    o = dataset.orders
    seen = o[o["ordered_at"] <= as_of + pd.Timedelta(days=1)].groupby("user_id").size()
    feats["orders_peek"] = feats["user_id"].map(seen).fillna(0.0).astype(float)
    return feats


def test_real_pipeline_passes_the_audit(demo_dataset: Dataset) -> None:
    assert audit_leakage(demo_dataset, build_features, AS_OF, StrataConfig()) == []


def test_audit_catches_a_one_day_peek(demo_dataset: Dataset) -> None:
    problems = audit_leakage(demo_dataset, peeking_features, AS_OF, StrataConfig())
    assert problems, "the planted leak was not detected"
    assert all(p.startswith("orders_peek:") for p in problems)
    assert any("data after as_of was removed" in p for p in problems)
    assert any("future copies were appended" in p for p in problems)


def test_audit_catches_users_known_only_from_the_future(demo_dataset: Dataset) -> None:
    def everyone(dataset: Dataset, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
        return build_features(dataset, as_of + pd.Timedelta(days=365), config).assign(as_of=as_of)

    problems = audit_leakage(demo_dataset, everyone, AS_OF, StrataConfig())
    assert any(p.startswith("users known at as_of changed") for p in problems)


def test_truncate_and_future_copies() -> None:
    orders = pd.DataFrame({"user_id": ["a", "a"], "order_id": ["1", "2"], "amount": [1.0, 2.0],
                           "ordered_at": pd.to_datetime(["2024-09-29", "2024-10-02"], utc=True)})
    users = pd.DataFrame({"user_id": ["a", "b", "c"],
                          "joined_at": pd.to_datetime(["2024-01-01", "2024-12-01", None], utc=True)})
    ds = Dataset(orders=orders, users=users)
    cut = truncate_dataset(ds, AS_OF)
    assert cut.orders["order_id"].tolist() == ["1"] and cut.users["user_id"].tolist() == ["a", "c"]
    aug = append_future_copies(ds, AS_OF)
    new = aug.orders.iloc[len(orders):]
    assert (new["ordered_at"] > AS_OF).all() and new["order_id"].is_unique
    assert new["ordered_at"].min() == AS_OF + pd.Timedelta(days=1, seconds=1)  # the mirror of 09-29
    assert len(aug.users) == 6 and (aug.users.iloc[3:]["joined_at"].dropna() > AS_OF).all()
