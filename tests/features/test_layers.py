"""assign_layers / explain_layers: every user gets one value per dimension; the trace agrees with it."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.config import StrataConfig, config_from_dict
from features.errors import StrataError
from features.layers import (
    LAYER_COLUMNS,
    LAYER_DIMENSIONS,
    LAYER_NAMES,
    assign_layers,
    display_name,
    explain_layers,
    rfm_thresholds,
)
from features.layers import explain_user as explain_user_lines

CONFIG = StrataConfig()


def random_features(n: int, seed: int = 42) -> pd.DataFrame:
    """A seeded population with the feature-table column names: ~30% prospects, long-tailed spend."""
    rng = np.random.default_rng(seed)
    orders = np.where(rng.random(n) < 0.3, 0, rng.geometric(0.35, n)).astype(float)
    buyer = orders > 0
    since_order = np.where(buyer, rng.uniform(0, 500, n), np.nan)
    aov = np.where(buyer, rng.lognormal(5, 1, n), np.nan)
    spend_total = np.where(buyer, orders * aov, 0.0)
    share_365 = rng.uniform(0, 1, n)
    return pd.DataFrame(
        {
            "user_id": [f"u{i:04d}" for i in range(n)],
            "as_of": pd.Timestamp("2024-06-30", tz="UTC"),
            "orders_total": orders,
            "orders_90d": np.floor(orders * share_365 * 0.4),
            "orders_365d": np.floor(orders * share_365),
            "spend_total": spend_total,
            "spend_365d": spend_total * share_365,
            "avg_order_value": aov,
            "days_since_last_order": since_order,
            "days_since_last_interaction": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 200, n)),
            "gap_mean_days": np.where(orders >= 2, rng.uniform(5, 120, n), np.nan),
            "trend_orders_ratio": rng.choice([0.25, 0.5, 1.0, 2.0], n),
            "trend_spend_ratio": rng.uniform(0.1, 3, n),
            "active_days_30d": rng.integers(0, 31, n).astype(float),
        }
    )


def test_every_user_gets_exactly_one_known_value_per_dimension() -> None:
    f = random_features(500)
    layers = assign_layers(f, CONFIG)
    assert list(layers.columns) == ["user_id", *LAYER_COLUMNS]
    assert list(layers["user_id"]) == list(f["user_id"])
    for dim, codes in LAYER_DIMENSIONS.items():
        assert layers[dim].notna().all()
        assert set(layers[dim]) <= set(codes), dim
    # prospects are potential and prospect, never general_retain
    prospects = f["orders_total"] == 0
    assert (layers.loc[prospects, "lifecycle"] == "potential").all()
    assert (layers.loc[prospects, "rfm_segment"] == "prospect").all()
    assert not (layers.loc[~prospects, "rfm_segment"] == "prospect").any()


def test_input_index_does_not_matter() -> None:
    f = random_features(50)
    shuffled = f.sample(frac=1.0, random_state=1)
    a = assign_layers(f, CONFIG).set_index("user_id").sort_index()
    b = assign_layers(shuffled, CONFIG).set_index("user_id").sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_every_code_has_chinese_and_english_names() -> None:
    for codes in LAYER_DIMENSIONS.values():
        for code in codes:
            zh, en = LAYER_NAMES[code]
            assert re.search(r"[\u4e00-\u9fff]", zh) and re.fullmatch(r"[A-Za-z ()]+", en), code
    assert display_name("important_value") == "重要价值 Important value"
    assert display_name("churned") == "流失 Churned"
    assert display_name("custom_layer") == "custom_layer"
    all_codes = [c for codes in LAYER_DIMENSIONS.values() for c in codes]
    assert len(all_codes) == len(set(all_codes)), "codes must be unique across dimensions"


def test_thresholds_come_from_configuration() -> None:
    f = random_features(300)
    default = assign_layers(f, CONFIG)
    cfg = config_from_dict({"layers": {"value_tier": {"high_annual_spend": 100.0, "low_annual_spend": 10.0}}})
    changed = assign_layers(f, cfg)
    assert (changed["value_tier"] == "high_value").sum() > (default["value_tier"] == "high_value").sum()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), fixed=st.booleans())
def test_explanation_agrees_with_assignment(seed: int, fixed: bool) -> None:
    cfg = config_from_dict({"layers": {"rfm": {"mode": "fixed"}}}) if fixed else CONFIG
    f = random_features(30, seed=seed)
    layers = assign_layers(f, cfg).set_index("user_id")
    th = rfm_thresholds(f, cfg.layers.rfm)
    prefix = {
        "lifecycle": "lifecycle:",
        "rfm_segment": "rfm:",
        "value_tier": "value tier:",
        "activity_tier": "activity tier:",
    }
    for i in range(0, 30, 4):
        row = f.iloc[i]
        lines = explain_layers(row, cfg, thresholds=th)
        got = layers.loc[row["user_id"]]
        for dim in LAYER_COLUMNS:
            last = [line for line in lines if line.startswith(prefix[dim])][-1]
            assert last.endswith(f"-> {got[dim]}"), (dim, got[dim], lines)


def test_explain_user_ends_with_result_and_rejects_unknown_user() -> None:
    f = random_features(40)
    lines = explain_user_lines(f, "u0003", CONFIG)
    layers = assign_layers(f, CONFIG).set_index("user_id").loc["u0003"]
    assert lines[0] == "user u0003"
    assert lines[-1].startswith("result: ") and f"lifecycle = {layers['lifecycle']}" in lines[-1]
    with pytest.raises(StrataError, match="'nobody' is not in the feature table"):
        explain_user_lines(f, "nobody", CONFIG)


def test_quantile_mode_without_thresholds_says_so() -> None:
    row = random_features(5).iloc[0]
    text = "\n".join(explain_layers(row, CONFIG))
    assert "quantile mode needs the medians" in text
