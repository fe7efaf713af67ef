"""Alert rules fire past their thresholds and stay quiet at or under them."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.alerts import AlertRuleError, evaluate_alerts
from features.config import AlertRule, StrataConfig
from features.kpis import kpi_table


def kpis(
    metric: str, rows: list[tuple[str, float, float]], size: int = 100, dimension: str = "lifecycle"
) -> pd.DataFrame:
    """A minimal KPI change table: rows of (layer, previous, current) for ``metric``."""
    return pd.DataFrame(
        {
            "dimension": [dimension] * len(rows),
            "layer": [r[0] for r in rows],
            "size": [size] * len(rows),
            "size_prev": [float(size)] * len(rows),
            metric: [r[2] for r in rows],
            f"{metric}_prev": [r[1] for r in rows],
        }
    )


def fired(rule: AlertRule, table: pd.DataFrame) -> list[str]:
    return [a.layer for a in evaluate_alerts(table, [rule])]


REL_DROP = AlertRule(name="activity drop", metric="interaction_rate", change="relative_drop", threshold=0.05)


def test_relative_drop_fires_only_beyond_threshold() -> None:
    table = kpis(
        "interaction_rate",
        [
            ("new", 0.40, 0.38),  # exactly -5%: quiet
            ("growth", 0.40, 0.3790),  # -5.25%: fires
            ("mature", 0.40, 0.45),  # rise: quiet
            ("declining", 0.40, 0.39),  # -2.5%: quiet
            ("churned", 0.0, 0.0),  # no previous level: relative change undefined
            ("potential", math.nan, 0.3),  # no previous value
        ],
    )
    assert fired(REL_DROP, table) == ["growth"]


def test_alert_fields_and_message() -> None:
    table = kpis("interaction_rate", [("mature", 0.50, 0.40)])
    (alert,) = evaluate_alerts(table, [REL_DROP])
    assert (alert.name, alert.layer, alert.metric, alert.dimension) == (
        "activity drop",
        "mature",
        "interaction_rate",
        "lifecycle",
    )
    assert (alert.previous, alert.current, alert.threshold) == (0.5, 0.4, 0.05)
    assert alert.change == pytest.approx(-0.2)
    assert "成熟 Mature" in alert.message and "50.0%" in alert.message and "40.0%" in alert.message
    assert "-20.00% relative" in alert.message


def test_absolute_rise_on_one_layer() -> None:
    rule = AlertRule(name="churn up", metric="share", layer="churned", change="absolute_rise", threshold=0.02)
    table = kpis("share", [("churned", 0.10, 0.12), ("declining", 0.10, 0.20)])
    assert fired(rule, table) == []  # +2 points exactly: quiet; declining is not watched
    table = kpis("share", [("churned", 0.10, 0.1201), ("declining", 0.10, 0.20)])
    assert fired(rule, table) == ["churned"]
    # From zero: absolute rules still work
    assert fired(rule, kpis("share", [("churned", 0.0, 0.05)])) == ["churned"]


@pytest.mark.parametrize(
    ("change", "prev", "curr", "fires"),
    [
        ("relative_rise", 100.0, 110.0, False),
        ("relative_rise", 100.0, 110.5, True),
        ("absolute_drop", 100.0, 90.0, False),
        ("absolute_drop", 100.0, 89.0, True),
        ("relative_drop", 100.0, 89.0, True),
    ],
)
def test_each_kind_of_change(change: str, prev: float, curr: float, fires: bool) -> None:
    threshold = 0.10 if change.startswith("relative") else 10.0
    rule = AlertRule(name="x", metric="avg_order_value", change=change, threshold=threshold)  # type: ignore[arg-type]
    assert bool(fired(rule, kpis("avg_order_value", [("mature", prev, curr)]))) is fires


def test_small_layers_are_skipped_for_rates_not_for_share() -> None:
    table = kpis("interaction_rate", [("mature", 0.5, 0.1)], size=29)
    assert fired(REL_DROP, table) == []
    assert fired(REL_DROP.model_copy(update={"min_size": 29}), table) == ["mature"]
    share_rule = AlertRule(name="s", metric="share", change="absolute_rise", threshold=0.01)
    assert fired(share_rule, kpis("share", [("churned", 0.0, 0.02)], size=1)) == ["churned"]


def test_unknown_metric_or_layer_is_an_error_naming_the_rule() -> None:
    table = kpis("interaction_rate", [("mature", 0.5, 0.4)])
    with pytest.raises(AlertRuleError, match="'typo rule': metric 'interaction'"):
        evaluate_alerts(table, [AlertRule(name="typo rule", metric="interaction")])
    with pytest.raises(AlertRuleError, match="layer 'matur'"):
        evaluate_alerts(table, [AlertRule(name="r", metric="interaction_rate", layer="matur")])


def _population(n_active: int, n: int = 100) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"u{i}" for i in range(n)]
    features = pd.DataFrame(
        {
            "user_id": ids,
            "orders_total": 3.0,
            "orders_90d": 1.0,
            "active_days_30d": [1.0] * n_active + [0.0] * (n - n_active),
            "orders_365d": 3.0,
            "spend_365d": 300.0,
            "spend_total": 300.0,
        }
    )
    return features, pd.DataFrame({"user_id": ids, "lifecycle": "mature"})


def test_default_rules_end_to_end_on_kpi_table() -> None:
    config = StrataConfig()
    prev_f, prev_l = _population(60)
    quiet_f, quiet_l = _population(57)  # -5% exactly
    loud_f, loud_l = _population(56)  # -6.7%
    assert evaluate_alerts(kpi_table(quiet_f, quiet_l, prev_f, prev_l), config.alerts) == []
    alerts = evaluate_alerts(kpi_table(loud_f, loud_l, prev_f, prev_l), config.alerts)
    assert {(a.name, a.layer) for a in alerts} == {
        ("activity rate drop", "all"),
        ("activity rate drop", "mature"),
    }
