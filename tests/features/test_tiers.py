"""Value and activity tiers at and around their thresholds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.config import ActivityTierConfig, ValueTierConfig
from features.tiers import assign_activity_tier, assign_value_tier, explain_activity_tier, explain_value_tier


@pytest.mark.parametrize(
    ("spend", "expected"),
    [
        (5000.01, "high_value"),
        (5000.0, "potential_value"),
        (1000.0, "potential_value"),
        (999.99, "low_value"),
        (0.0, "low_value"),
        (-20.0, "low_value"),  # net of refunds
        (math.nan, "low_value"),  # prospects
    ],
)
def test_value_tier_thresholds(spend: float, expected: str) -> None:
    got = assign_value_tier(pd.DataFrame({"spend_365d": [spend]}), ValueTierConfig())
    assert got.iloc[0] == expected


def test_value_tier_configurable() -> None:
    cfg = ValueTierConfig(high_annual_spend=300.0, low_annual_spend=100.0)
    got = assign_value_tier(pd.DataFrame({"spend_365d": [301.0, 150.0, 99.0]}), cfg)
    assert list(got) == ["high_value", "potential_value", "low_value"]


def activity(silent: float, active_days: float, cfg: ActivityTierConfig | None = None) -> str:
    frame = pd.DataFrame({"days_since_last_interaction": [silent], "active_days_30d": [active_days]})
    return str(assign_activity_tier(frame, cfg or ActivityTierConfig()).iloc[0])


@pytest.mark.parametrize(
    ("silent", "active_days", "expected"),
    [
        (0.5, 20.0, "core"),
        (0.5, 30.0, "core"),
        (0.5, 19.0, "active"),
        (29.9, 1.0, "active"),
        (30.0, 0.0, "sleeping"),
        (45.0, 0.0, "sleeping"),
        (math.nan, 0.0, "sleeping"),  # never any interaction
    ],
)
def test_activity_tier_thresholds(silent: float, active_days: float, expected: str) -> None:
    assert activity(silent, active_days) == expected


def test_sleeping_beats_core_when_configured_short() -> None:
    cfg = ActivityTierConfig(sleeping_days=7)
    assert activity(8.0, 22.0, cfg) == "sleeping"
    assert activity(6.0, 22.0, cfg) == "core"


def test_explanations_name_thresholds() -> None:
    row = pd.Series(
        {"spend_365d": 5000.0, "days_since_last_interaction": math.nan, "active_days_30d": math.nan}
    )
    assert explain_value_tier(row, ValueTierConfig())[0].endswith(
        "high if > 5,000.00, low if < 1,000.00 -> potential_value"
    )
    assert "last interaction never" in explain_activity_tier(row, ActivityTierConfig())[0]
    assert explain_activity_tier(row, ActivityTierConfig())[0].endswith("-> sleeping")
