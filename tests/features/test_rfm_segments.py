"""RFM segments: the eight segments by high/low R, F, M at and around fixed thresholds and medians."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.config import RfmConfig
from features.rfm_segments import SEGMENT_BY_RFM, assign_rfm_segment, explain_rfm, rfm_thresholds

FIXED = RfmConfig(mode="fixed")  # R high if days <= 90, F high if orders >= 2, M high if spend >= 500


def frame(*rows: tuple[float, float, float]) -> pd.DataFrame:
    """Rows of (days_since_last_order, orders_total, spend_total)."""
    return pd.DataFrame(
        [{"days_since_last_order": r, "orders_total": f, "spend_total": m} for r, f, m in rows]
    )


@pytest.mark.parametrize(
    ("rfm", "expected"),
    [
        ((10.0, 5.0, 900.0), "important_value"),
        ((10.0, 1.0, 900.0), "important_develop"),
        ((200.0, 5.0, 900.0), "important_keep"),
        ((200.0, 1.0, 900.0), "important_retain"),
        ((10.0, 5.0, 100.0), "general_value"),
        ((10.0, 1.0, 100.0), "general_develop"),
        ((200.0, 5.0, 100.0), "general_keep"),
        ((200.0, 1.0, 100.0), "general_retain"),
    ],
)
def test_eight_segments_fixed(rfm: tuple[float, float, float], expected: str) -> None:
    assert assign_rfm_segment(frame(rfm), FIXED).iloc[0] == expected


def test_fixed_thresholds_are_inclusive() -> None:
    got = assign_rfm_segment(
        frame(
            (90.0, 2.0, 500.0),  # exactly at every threshold: all high
            (90.5, 2.0, 500.0),  # R just past
            (90.0, 1.0, 500.0),  # F just under
            (90.0, 2.0, 499.99),  # M just under
        ),
        FIXED,
    )
    assert list(got) == ["important_value", "important_keep", "important_develop", "general_value"]


def test_prospects_get_their_own_segment_and_do_not_move_medians() -> None:
    f = frame((math.nan, 0.0, 0.0), (10.0, 1.0, 100.0), (20.0, 2.0, 200.0), (30.0, 3.0, 300.0))
    th = rfm_thresholds(f, RfmConfig())
    assert (th.recency_days, th.frequency_orders, th.monetary_spend) == (20.0, 2.0, 200.0)
    got = assign_rfm_segment(f, RfmConfig())
    assert got.iloc[0] == "prospect"
    assert "prospect" not in SEGMENT_BY_RFM.values()


def test_quantile_mode_is_strictly_better_than_median() -> None:
    # medians: days 20, orders 2, spend 200; the median user itself is low on all three.
    f = frame((10.0, 1.0, 100.0), (20.0, 2.0, 200.0), (30.0, 3.0, 300.0))
    assert list(assign_rfm_segment(f, RfmConfig())) == ["general_develop", "general_retain", "important_keep"]


def test_quantile_mode_ties_at_median_are_low() -> None:
    # Most buyers have one order (median 1): they are F low, only repeat buyers are F high.
    # Medians: days 7, orders 1, spend 70.
    f = frame((5.0, 1.0, 50.0), (6.0, 1.0, 60.0), (7.0, 1.0, 70.0), (8.0, 2.0, 80.0), (9.0, 1.0, 90.0))
    th = rfm_thresholds(f, RfmConfig())
    assert th.frequency_orders == 1.0
    got = assign_rfm_segment(f, RfmConfig())
    assert list(got) == [
        "general_develop",
        "general_develop",
        "general_retain",
        "important_keep",
        "important_retain",
    ]


def test_quantile_thresholds_can_be_passed_from_another_population() -> None:
    pop = frame((10.0, 1.0, 100.0), (20.0, 2.0, 200.0), (30.0, 3.0, 300.0))
    th = rfm_thresholds(pop, RfmConfig())
    one = frame((15.0, 3.0, 250.0))
    assert assign_rfm_segment(one, RfmConfig(), th).iloc[0] == "important_value"


def test_no_buyer_at_all() -> None:
    f = frame((math.nan, 0.0, 0.0), (math.nan, 0.0, 0.0))
    assert list(assign_rfm_segment(f, RfmConfig())) == ["prospect", "prospect"]


def test_explain_rfm() -> None:
    f = frame((90.0, 2.0, 500.0))
    lines = explain_rfm(f.iloc[0], rfm_thresholds(f, FIXED))
    assert "days since last order <= 90.0" in lines[0]
    assert lines[-1].endswith("-> important_value")
