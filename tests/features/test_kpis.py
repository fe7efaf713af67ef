"""Per-layer KPIs on a hand-computed population, with previous values, changes and conversion."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from features.errors import StrataError
from features.kpis import KPI_METRICS, format_change, format_metric, kpi_table, layer_kpis

COLS = [
    "user_id",
    "orders_total",
    "orders_90d",
    "active_days_30d",
    "orders_365d",
    "spend_365d",
    "spend_total",
]


def features(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLS)


# Current cutoff: a, c repeat buyers; b, f one-order buyers (f converted since the previous cutoff);
# d, e prospects; g (a prospect before) is gone.
CURR = features(
    [
        ("a", 3, 1, 5, 2, 200.0, 300.0),
        ("b", 1, 1, 0, 1, 50.0, 50.0),
        ("c", 2, 0, 0, 1, 100.0, 400.0),
        ("d", 0, 0, 2, 0, 0.0, 0.0),
        ("e", 0, 0, 0, 0, 0.0, 0.0),
        ("f", 1, 1, 1, 1, 30.0, 30.0),
    ]
)
CURR_LAYERS = pd.DataFrame(
    {
        "user_id": list("abcdef"),
        "lifecycle": ["growth", "new", "growth", "potential", "potential", "new"],
        "activity_tier": ["active", "sleeping", "sleeping", "active", "sleeping", "active"],
    }
)
PREV = features(
    [
        ("a", 2, 1, 3, 2, 200.0, 200.0),
        ("b", 1, 1, 2, 1, 50.0, 50.0),
        ("c", 2, 1, 1, 2, 400.0, 400.0),
        ("d", 0, 0, 1, 0, 0.0, 0.0),
        ("e", 0, 0, 0, 0, 0.0, 0.0),
        ("f", 0, 0, 4, 0, 0.0, 0.0),
        ("g", 0, 0, 0, 0, 0.0, 0.0),
    ]
)
PREV_LAYERS = pd.DataFrame(
    {
        "user_id": list("abcdefg"),
        "lifecycle": ["growth", "new", "growth", "potential", "potential", "potential", "potential"],
        "activity_tier": ["active", "active", "active", "active", "sleeping", "active", "sleeping"],
    }
)


def row(table: pd.DataFrame, dimension: str, layer: str) -> pd.Series:
    match = table[(table["dimension"] == dimension) & (table["layer"] == layer)]
    assert len(match) == 1
    return match.iloc[0]


def test_layer_kpis_hand_computed() -> None:
    k = layer_kpis(CURR, CURR_LAYERS)
    overall = row(k, "overall", "all")
    assert overall["size"] == 6 and overall["share"] == 1.0
    assert overall["repurchase_rate"] == pytest.approx(1 / 3)  # a, b, f ordered in 90 days; only a has 2+
    assert overall["interaction_rate"] == pytest.approx(3 / 6)
    assert overall["avg_order_value"] == pytest.approx(380 / 5)
    assert overall["spend_per_user"] == pytest.approx(380 / 6)
    assert overall["ltv_per_user"] == pytest.approx(780 / 6)
    assert math.isnan(overall["conversion_rate"])  # no previous cutoff given

    growth = row(k, "lifecycle", "growth")
    assert (growth["size"], growth["share"]) == (2, pytest.approx(1 / 3))
    assert growth["repurchase_rate"] == 1.0  # c had no order in 90 days: not in the base
    assert growth["interaction_rate"] == 0.5
    assert growth["avg_order_value"] == pytest.approx(100.0)
    assert growth["ltv_per_user"] == pytest.approx(350.0)

    new = row(k, "lifecycle", "new")
    assert new["repurchase_rate"] == 0.0 and new["avg_order_value"] == pytest.approx(40.0)

    potential = row(k, "lifecycle", "potential")
    assert math.isnan(potential["repurchase_rate"]) and math.isnan(potential["avg_order_value"])
    assert potential["spend_per_user"] == 0.0 and potential["interaction_rate"] == 0.5

    mature = row(k, "lifecycle", "mature")  # no user: size 0, rates undefined
    assert mature["size"] == 0 and mature["share"] == 0.0 and math.isnan(mature["interaction_rate"])


def test_rows_cover_every_code_in_order() -> None:
    k = layer_kpis(CURR, CURR_LAYERS)
    assert list(k["layer"]) == [
        "all",
        "potential",
        "new",
        "growth",
        "mature",
        "declining",
        "churned",
        "core",
        "active",
        "sleeping",
    ]
    assert list(k.columns) == ["dimension", "layer", *KPI_METRICS]


def test_conversion_by_previous_layer() -> None:
    k = layer_kpis(CURR, CURR_LAYERS, prev_features=PREV, prev_layers=PREV_LAYERS)
    # Previous prospects d, e, f, g: only f bought; g is gone and counts as not converted.
    assert row(k, "overall", "all")["conversion_rate"] == pytest.approx(1 / 4)
    assert row(k, "lifecycle", "potential")["conversion_rate"] == pytest.approx(1 / 4)
    assert row(k, "activity_tier", "active")["conversion_rate"] == pytest.approx(1 / 2)  # d, f
    assert row(k, "activity_tier", "sleeping")["conversion_rate"] == 0.0  # e, g
    assert math.isnan(row(k, "lifecycle", "growth")["conversion_rate"])  # no prospect there


def test_kpi_table_previous_and_change() -> None:
    t = kpi_table(CURR, CURR_LAYERS, PREV, PREV_LAYERS)
    pot = row(t, "lifecycle", "potential")
    assert (pot["size"], pot["size_prev"], pot["size_change"]) == (2, 4, -2)
    assert pot["name_zh"] == "潜在" and pot["name_en"] == "Potential"
    overall = row(t, "overall", "all")
    assert overall["interaction_rate_prev"] == pytest.approx(5 / 7)
    assert overall["interaction_rate_change"] == pytest.approx(3 / 6 - 5 / 7)
    assert overall["repurchase_rate_prev"] == pytest.approx(2 / 3)  # a, b, c recent; a, c repeat
    assert overall["conversion_rate"] == pytest.approx(1 / 4)
    assert math.isnan(overall["conversion_rate_prev"])  # needs the cutoff before the previous one
    for m in KPI_METRICS:
        assert {m, f"{m}_prev", f"{m}_change"} <= set(t.columns)


def test_kpi_table_previous_conversion_with_cutoff_before() -> None:
    before = features([(u, 0, 0, 0, 0, 0.0, 0.0) for u in "abcdefg"])
    before_layers = PREV_LAYERS.assign(lifecycle="potential")
    t = kpi_table(
        CURR, CURR_LAYERS, PREV, PREV_LAYERS, before_prev_features=before, before_prev_layers=before_layers
    )
    # Everyone was a prospect before; a, b, c bought by the previous cutoff.
    assert row(t, "overall", "all")["conversion_rate_prev"] == pytest.approx(3 / 7)


def test_kpi_table_without_previous_has_nan_changes() -> None:
    t = kpi_table(CURR, CURR_LAYERS)
    assert t["size_prev"].isna().all() and t["share_change"].isna().all()
    assert row(t, "lifecycle", "growth")["size"] == 2


def test_layer_user_missing_from_features_is_an_error() -> None:
    bad = pd.concat(
        [CURR_LAYERS, pd.DataFrame({"user_id": ["zz"], "lifecycle": ["new"], "activity_tier": ["core"]})]
    )
    with pytest.raises(StrataError, match="'zz'"):
        layer_kpis(CURR, bad)


def test_missing_feature_column_is_named() -> None:
    with pytest.raises(StrataError, match="orders_90d"):
        layer_kpis(CURR.drop(columns=["orders_90d"]), CURR_LAYERS)


def test_formatting() -> None:
    assert format_metric("size", 12345) == "12,345"
    assert format_metric("interaction_rate", 0.1234) == "12.3%"
    assert format_metric("avg_order_value", 1234.5) == "1,234.50"
    assert format_metric("share", math.nan) == "n/a"
    assert format_change("share", -0.012) == "-1.2 pp"
    assert format_change("size", 1500) == "+1,500"
    assert format_change("ltv_per_user", 12.3) == "+12.30"
