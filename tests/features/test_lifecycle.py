"""Lifecycle rules: hand-built users exactly at and around every threshold land in the documented stage."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.config import LifecycleConfig
from features.layer_names import FeatureColumnsError
from features.lifecycle import assign_lifecycle, explain_lifecycle

NAN = math.nan
# A recent, quiet-trend one-order buyer; each case overrides what it tests.
BASE = {
    "orders_total": 1.0,
    "orders_365d": 1.0,
    "avg_order_value": 100.0,
    "days_since_last_order": 10.0,
    "days_since_last_interaction": 2.0,
    "gap_mean_days": NAN,
    "trend_orders_ratio": 1.0,
    "trend_spend_ratio": 1.0,
}
CFG = LifecycleConfig()  # defaults: mature 1/30d or AOV 500, growth <= 2 repeats, declining <= 0.5,
# churn: silent > 30 days and no order for > max(3 x gap, 90) days


def stage(cfg: LifecycleConfig = CFG, **overrides: float) -> str:
    return str(assign_lifecycle(pd.DataFrame([{**BASE, **overrides}]), cfg).iloc[0])


@pytest.mark.parametrize("orders", [0.0, NAN])
def test_no_order_is_potential_even_when_long_silent(orders: float) -> None:
    assert (
        stage(orders_total=orders, days_since_last_order=NAN, days_since_last_interaction=NAN) == "potential"
    )
    assert (
        stage(orders_total=orders, days_since_last_order=NAN, days_since_last_interaction=400.0)
        == "potential"
    )


def test_one_order_is_new_even_with_high_value_or_falling_trend() -> None:
    assert stage() == "new"
    # AOV and trend rules are for repeat buyers only.
    assert stage(avg_order_value=900.0) == "new"
    assert stage(trend_orders_ratio=0.5, trend_spend_ratio=0.01) == "new"


@pytest.mark.parametrize(("orders", "expected"), [(2.0, "growth"), (3.0, "growth"), (4.0, "mature")])
def test_growth_covers_one_to_max_repeat_orders(orders: float, expected: str) -> None:
    assert stage(orders_total=orders, orders_365d=orders, gap_mean_days=30.0) == expected


def test_growth_max_repeat_orders_is_configurable() -> None:
    cfg = LifecycleConfig(growth_max_repeat_orders=5)
    assert stage(cfg, orders_total=6.0, orders_365d=6.0) == "growth"
    assert stage(cfg, orders_total=7.0, orders_365d=7.0) == "mature"


@pytest.mark.parametrize(("aov", "expected"), [(499.99, "growth"), (500.0, "mature"), (500.01, "mature")])
def test_mature_by_average_order_value_at_threshold(aov: float, expected: str) -> None:
    assert stage(orders_total=2.0, orders_365d=2.0, avg_order_value=aov) == expected


@pytest.mark.parametrize(("orders_365d", "expected"), [(72.0, "growth"), (73.0, "mature"), (74.0, "mature")])
def test_mature_by_frequency_at_threshold(orders_365d: float, expected: str) -> None:
    # 73 orders in 365 days is exactly 6.0 per 30 days; growth_max_repeat_orders is raised to isolate the rule.
    cfg = LifecycleConfig(mature_orders_per_30d=6.0, growth_max_repeat_orders=1000)
    assert stage(cfg, orders_total=80.0, orders_365d=orders_365d) == expected


def test_default_frequency_rule_is_one_order_a_month() -> None:
    cfg = LifecycleConfig(growth_max_repeat_orders=1000)
    assert stage(cfg, orders_total=20.0, orders_365d=12.0) == "growth"  # 0.99 per 30 days
    assert stage(cfg, orders_total=20.0, orders_365d=13.0) == "mature"  # 1.07 per 30 days


@pytest.mark.parametrize(
    ("orders_ratio", "spend_ratio", "expected"),
    [
        (0.5, 1.0, "declining"),
        (0.51, 1.0, "growth"),
        (1.0, 0.5, "declining"),
        (1.0, 0.51, "growth"),
        (0.2, 0.2, "declining"),
    ],
)
def test_declining_at_trend_threshold(orders_ratio: float, spend_ratio: float, expected: str) -> None:
    got = stage(
        orders_total=3.0, orders_365d=3.0, trend_orders_ratio=orders_ratio, trend_spend_ratio=spend_ratio
    )
    assert got == expected


def test_declining_beats_mature() -> None:
    assert (
        stage(orders_total=30.0, orders_365d=30.0, avg_order_value=900.0, trend_orders_ratio=0.3)
        == "declining"
    )


@pytest.mark.parametrize(
    ("silent", "since_order", "gap", "expected"),
    [
        # gap 40: order threshold max(120, 90) = 120; silence threshold 30
        (31.0, 121.0, 40.0, "churned"),
        (30.0, 121.0, 40.0, "growth"),  # silent exactly 30 days: not more than 30
        (30.01, 121.0, 40.0, "churned"),
        (31.0, 120.0, 40.0, "growth"),  # exactly 3 x gap
        (31.0, 120.5, 40.0, "churned"),
        # gap 20: 3 x gap = 60 < 90, the minimum applies
        (95.0, 90.0, 20.0, "growth"),
        (95.0, 90.5, 20.0, "churned"),
        # no usual gap (one order day): only the minimum applies
        (95.0, 90.0, NAN, "growth"),
        (95.0, 91.0, NAN, "churned"),
    ],
)
def test_churned_at_thresholds(silent: float, since_order: float, gap: float, expected: str) -> None:
    got = stage(
        orders_total=2.0,
        orders_365d=2.0,
        days_since_last_interaction=silent,
        days_since_last_order=since_order,
        gap_mean_days=gap,
    )
    assert got == expected


def test_single_order_buyer_churns_on_minimum_days() -> None:
    assert stage(days_since_last_order=91.0, days_since_last_interaction=91.0) == "churned"
    assert stage(days_since_last_order=90.0, days_since_last_interaction=90.0) == "new"


def test_recent_interaction_prevents_churn() -> None:
    assert stage(days_since_last_order=300.0, days_since_last_interaction=5.0) == "new"


def test_missing_interaction_time_falls_back_to_last_order() -> None:
    assert stage(days_since_last_order=200.0, days_since_last_interaction=NAN) == "churned"


def test_churned_beats_declining_and_mature() -> None:
    got = stage(
        orders_total=30.0,
        orders_365d=20.0,
        avg_order_value=900.0,
        trend_orders_ratio=0.1,
        days_since_last_order=200.0,
        days_since_last_interaction=200.0,
        gap_mean_days=10.0,
    )
    assert got == "churned"


def test_missing_column_is_named() -> None:
    frame = pd.DataFrame([BASE]).drop(columns=["gap_mean_days", "orders_365d"])
    with pytest.raises(FeatureColumnsError, match="orders_365d, gap_mean_days"):
        assign_lifecycle(frame, CFG)


def test_explanation_states_values_thresholds_and_result() -> None:
    row = pd.Series(
        {
            **BASE,
            "orders_total": 2.0,
            "days_since_last_order": 121.0,
            "days_since_last_interaction": 31.0,
            "gap_mean_days": 40.0,
        }
    )
    lines = explain_lifecycle(row, CFG)
    text = "\n".join(lines)
    assert "max(3 x usual gap 40, 90) = 120" in text
    assert lines[0].endswith("-> yes")
    assert lines[-1].endswith("-> churned")
    assert explain_lifecycle(pd.Series({**BASE, "orders_total": 0.0}), CFG)[-1].endswith("-> potential")
