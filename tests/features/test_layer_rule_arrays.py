"""The array-level rule functions (the one definition of each rule layer) against per-user scalar readings
of the documented rules, on random inputs with NaN and values exactly at the thresholds; and the pandas
wrappers give what the array functions give."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.lifecycle import LIFECYCLE_COLUMNS, assign_lifecycle, lifecycle_rules, lifecycle_stages
from features.rfm_segments import (
    SEGMENT_BY_RFM,
    RfmThresholds,
    assign_rfm_segment,
    rfm_flags,
    rfm_segment_codes,
)
from features.tiers import activity_tier_codes, assign_activity_tier, assign_value_tier, value_tier_codes
from serving.refinement import refine_layers, refined_layer_codes

CFG = StrataConfig()
N = 4000


def _draw(rng: np.random.Generator, choices: list[float], n: int = N) -> np.ndarray:
    """Values from ``choices`` (thresholds and neighbours) or a gamma draw, 15 % NaN."""
    v = np.where(rng.random(n) < 0.5, rng.choice(np.asarray(choices, dtype=float), n), rng.gamma(1.0, 60.0, n))
    v[rng.random(n) < 0.15] = np.nan
    return v


def _columns(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lc = CFG.layers.lifecycle
    orders = _draw(rng, [0, 1, 2, 3, lc.growth_max_repeat_orders + 1, lc.growth_max_repeat_orders + 2])
    return {
        "orders_total": np.floor(orders / 20.0) if seed % 2 else orders,
        "orders_365d": _draw(rng, [0, 1, lc.mature_orders_per_30d * 365 / 30, 12, 13]),
        "avg_order_value": _draw(rng, [lc.mature_avg_order_value, lc.mature_avg_order_value - 0.01]),
        "days_since_last_order": _draw(rng, [lc.churn_min_days_since_order, lc.churn_min_days_since_order + 1, 0]),
        "days_since_last_interaction": _draw(rng, [lc.churn_no_interaction_days, lc.churn_no_interaction_days + 1,
                                                   CFG.layers.activity.sleeping_days]),
        "gap_mean_days": _draw(rng, [30.0, 60.0, lc.churn_min_days_since_order / lc.churn_gap_multiplier]),
        "trend_orders_ratio": _draw(rng, [lc.declining_trend_ratio, 0.0, 1.0]),
        "trend_spend_ratio": _draw(rng, [lc.declining_trend_ratio, 0.0, 1.0]),
        "spend_total": _draw(rng, [0.0, 100.0, 250.0]),
        "spend_365d": _draw(rng, [CFG.layers.value_tier.high_annual_spend, CFG.layers.value_tier.high_annual_spend + 1,
                                   CFG.layers.value_tier.low_annual_spend]),
        "active_days_30d": np.floor(_draw(rng, [CFG.layers.activity.core_active_days, 0.0]) / 10.0),
    }


def _nz(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _stage(r: dict[str, float]) -> str:
    """The lifecycle rules of the module docstring, for one user, in plain Python."""
    lc = CFG.layers.lifecycle
    orders = _nz(r["orders_total"])
    if orders < 1:
        return "potential"
    since = r["days_since_last_order"]
    silent = since if math.isnan(r["days_since_last_interaction"]) else r["days_since_last_interaction"]
    gap = r["gap_mean_days"]
    limit = lc.churn_min_days_since_order if math.isnan(gap) else max(lc.churn_gap_multiplier * gap,
                                                                        lc.churn_min_days_since_order)
    if silent > lc.churn_no_interaction_days and since > limit:
        return "churned"
    if orders < 2:
        return "new"
    if r["trend_orders_ratio"] <= lc.declining_trend_ratio or r["trend_spend_ratio"] <= lc.declining_trend_ratio:
        return "declining"
    if (_nz(r["orders_365d"]) * 30.0 / 365 >= lc.mature_orders_per_30d
            or r["avg_order_value"] >= lc.mature_avg_order_value or orders - 1 > lc.growth_max_repeat_orders):
        return "mature"
    return "growth"


def _rows(cols: dict[str, np.ndarray]) -> list[dict[str, float]]:
    return [{k: float(v[i]) for k, v in cols.items()} for i in range(N)]


def test_lifecycle_rules_follow_the_documented_rules() -> None:
    for seed in (0, 1):
        cols = _columns(seed)
        got = lifecycle_stages(lifecycle_rules({c: cols[c] for c in LIFECYCLE_COLUMNS}, CFG.layers.lifecycle))
        assert got.dtype == object and got.shape == (N,)
        expected = [_stage(r) for r in _rows(cols)]
        assert got.tolist() == expected
        assert len(set(expected)) == 6  # every stage is exercised


def test_tiers_follow_the_documented_rules() -> None:
    cols = _columns(2)
    vt, act = CFG.layers.value_tier, CFG.layers.activity
    value = value_tier_codes(cols["spend_365d"], vt)
    activity = activity_tier_codes(cols["active_days_30d"], cols["days_since_last_interaction"], act)
    exp_v, exp_a = [], []
    for r in _rows(cols):
        s = _nz(r["spend_365d"])
        exp_v.append("high_value" if s > vt.high_annual_spend else "low_value" if s < vt.low_annual_spend
                     else "potential_value")
        silent = r["days_since_last_interaction"]
        exp_a.append("sleeping" if math.isnan(silent) or silent >= act.sleeping_days
                     else "core" if _nz(r["active_days_30d"]) >= act.core_active_days else "active")
    assert value.tolist() == exp_v and activity.tolist() == exp_a
    assert set(exp_v) == {"high_value", "low_value", "potential_value"}
    assert set(exp_a) == {"sleeping", "core", "active"}


def test_rfm_arrays_follow_the_documented_rules() -> None:
    cols = _columns(3)
    for th in (RfmThresholds("fixed", 60.0, 2.0, 100.0, strict=False),
               RfmThresholds("quantile", 60.0, 2.0, 100.0, strict=True)):
        f = rfm_flags(cols["orders_total"], cols["days_since_last_order"], cols["spend_total"], th)
        got = rfm_segment_codes(f["buyer"], f["r_high"], f["f_high"], f["m_high"]).tolist()
        expected = []
        for r in _rows(cols):
            o, d, s = _nz(r["orders_total"]), r["days_since_last_order"], _nz(r["spend_total"])
            if o < 1:
                expected.append("prospect")
                continue
            hi = (d < 60.0, o > 2.0, s > 100.0) if th.strict else (d <= 60.0, o >= 2.0, s >= 100.0)
            expected.append(SEGMENT_BY_RFM[hi])
        assert got == expected
        assert len(set(expected)) == 9


def test_refined_layer_codes_follow_the_documented_rules() -> None:
    rng = np.random.default_rng(4)
    rc = CFG.refinement
    life = rng.choice(np.array(["potential", "new", "growth", "mature", "declining", "churned"], dtype=object), N)
    risk = _draw(rng, [rc.at_risk_churn_risk, 1.0 - rc.recoverable_return_prob, 0.0, 1.0]) % 1.0
    conv = _draw(rng, [rc.hot_prospect_conversion_prob, 0.0]) % 1.0
    value = _draw(rng, [150.0, 149.99])
    got = refined_layer_codes(life, risk, conv, value, rc, 150.0)
    expected = []
    for i in range(N):
        stage, r, c, v = life[i], float(risk[i]), float(conv[i]), float(value[i])
        if stage in ("mature", "growth", "new") and r >= rc.at_risk_churn_risk:
            expected.append("at_risk")
        elif stage == "new" and v >= 150.0:
            expected.append("high_potential_new")
        elif stage == "churned" and 1.0 - r >= rc.recoverable_return_prob:
            expected.append("recoverable")
        elif stage == "potential" and c >= rc.hot_prospect_conversion_prob:
            expected.append("hot_prospect")
        else:
            expected.append(stage)
    assert got.tolist() == expected
    assert got.dtype == object and len(set(expected)) == 10
    before = life.copy()
    refined_layer_codes(life, risk, conv, value, rc, 150.0)
    assert life.tolist() == before.tolist()  # pure: the lifecycle input is not modified


def test_pandas_wrappers_give_the_array_results() -> None:
    cols = _columns(5)
    index = pd.RangeIndex(10, 10 + N)
    frame = pd.DataFrame(cols, index=index)
    cfg = CFG.layers
    th = RfmThresholds("fixed", 60.0, 2.0, 100.0, strict=False)
    life = assign_lifecycle(frame, cfg.lifecycle)
    assert life.dtype == object and life.index.equals(index)
    assert life.tolist() == lifecycle_stages(lifecycle_rules(cols, cfg.lifecycle)).tolist()
    f = rfm_flags(cols["orders_total"], cols["days_since_last_order"], cols["spend_total"], th)
    assert (assign_rfm_segment(frame, cfg.rfm, th).tolist()
            == rfm_segment_codes(f["buyer"], f["r_high"], f["f_high"], f["m_high"]).tolist())
    assert assign_value_tier(frame, cfg.value_tier).tolist() == value_tier_codes(cols["spend_365d"], cfg.value_tier).tolist()
    assert (assign_activity_tier(frame, cfg.activity).tolist()
            == activity_tier_codes(cols["active_days_30d"], cols["days_since_last_interaction"], cfg.activity).tolist())
    risk = pd.Series(np.linspace(0, 1, N), index=index)
    refined = refine_layers(life, risk, 1.0 - risk, risk * 300.0, CFG.refinement, 150.0)
    assert refined.index.equals(index) and refined.name == "refined_layer"
    assert refined.tolist() == refined_layer_codes(life.to_numpy(), risk.to_numpy(), 1.0 - risk.to_numpy(),
                                                   risk.to_numpy() * 300.0, CFG.refinement, 150.0).tolist()
