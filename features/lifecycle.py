"""Lifecycle stage (生命周期) of every user, from point-in-time features and ``[layers.lifecycle]``.

Stages and their rules (thresholds are :class:`features.config.LifecycleConfig` fields):

- ``potential`` (潜在): no paid order yet (``orders_total`` is 0 or NaN). Prospects are always
  ``potential``, however long they have been quiet (their activity tier says ``sleeping``).
- ``churned`` (流失): a buyer with no interaction (order or event) for more than
  ``churn_no_interaction_days`` days AND no order for more than
  ``max(churn_gap_multiplier x gap_mean_days, churn_min_days_since_order)`` days. A buyer with a single
  order day has no usual gap; only ``churn_min_days_since_order`` applies then.
- ``declining`` (衰退): a repeat buyer (>= 2 orders) whose order count or net spend over the last trend
  window fell to ``declining_trend_ratio`` or less of the window before (``trend_orders_ratio`` or
  ``trend_spend_ratio`` <= the ratio). Single-order buyers have no own past to fall from.
- ``mature`` (成熟): a repeat buyer who buys often (``orders_365d`` x 30 / 365 >=
  ``mature_orders_per_30d``), or spends a lot per order (``avg_order_value`` >= ``mature_avg_order_value``),
  or has repurchased more than ``growth_max_repeat_orders`` times (past the growth stage).
- ``growth`` (成长): a repeat buyer with 1..``growth_max_repeat_orders`` repeat orders, not mature.
- ``new`` (新客): exactly one paid order.

Precedence when several rules hold: churned > declining > mature > growth > new (``potential`` is
exclusive: it only holds for non-buyers, and the other rules only for buyers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import LifecycleConfig
from features.layer_names import require_columns

#: Order frequency for ``mature`` is measured over this window (``orders_365d``), in days.
FREQUENCY_WINDOW_DAYS = 365

LIFECYCLE_COLUMNS: tuple[str, ...] = (
    "orders_total",
    f"orders_{FREQUENCY_WINDOW_DAYS}d",
    "avg_order_value",
    "days_since_last_order",
    "days_since_last_interaction",
    "gap_mean_days",
    "trend_orders_ratio",
    "trend_spend_ratio",
)


def _num(features: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(features[column], errors="coerce").astype("float64")


def lifecycle_checks(features: pd.DataFrame, cfg: LifecycleConfig) -> pd.DataFrame:
    """Every intermediate quantity and rule outcome of the lifecycle rules, one row per user.

    Returns
    -------
    DataFrame indexed like ``features`` with float columns ``orders``, ``silent_days`` (days since the
    last order or event), ``churn_order_days`` (the days-since-order threshold of ``churned``),
    ``orders_per_30d`` and boolean columns ``buyer``, ``repeat_buyer``, ``churn_silent``,
    ``churn_overdue``, ``churned``, ``declining_orders``, ``declining_spend``, ``declining``,
    ``mature_frequency``, ``mature_value``, ``mature_repeats``, ``mature``, ``growth``.
    """
    require_columns(features, LIFECYCLE_COLUMNS, "the lifecycle rules")
    orders = _num(features, "orders_total").fillna(0.0)
    since_order = _num(features, "days_since_last_order")
    # Orders are interactions too: a buyer without a recorded interaction time is as silent as their last order.
    silent = _num(features, "days_since_last_interaction").fillna(since_order)
    gap = _num(features, "gap_mean_days")
    out = pd.DataFrame(index=features.index)
    out["orders"] = orders
    out["buyer"] = orders >= 1
    out["repeat_buyer"] = orders >= 2
    out["silent_days"] = silent
    out["churn_silent"] = out["buyer"] & (silent > cfg.churn_no_interaction_days)
    # np.fmax ignores NaN: with no usual gap (one order day) only the minimum applies.
    out["churn_order_days"] = np.fmax(cfg.churn_gap_multiplier * gap, float(cfg.churn_min_days_since_order))
    out["churn_overdue"] = out["buyer"] & (since_order > out["churn_order_days"])
    out["churned"] = out["churn_silent"] & out["churn_overdue"]
    ratio = cfg.declining_trend_ratio
    out["declining_orders"] = out["repeat_buyer"] & (_num(features, "trend_orders_ratio") <= ratio)
    out["declining_spend"] = out["repeat_buyer"] & (_num(features, "trend_spend_ratio") <= ratio)
    out["declining"] = out["declining_orders"] | out["declining_spend"]
    out["orders_per_30d"] = (
        _num(features, f"orders_{FREQUENCY_WINDOW_DAYS}d").fillna(0.0) * 30.0 / FREQUENCY_WINDOW_DAYS
    )
    out["mature_frequency"] = out["repeat_buyer"] & (out["orders_per_30d"] >= cfg.mature_orders_per_30d)
    out["mature_value"] = out["repeat_buyer"] & (
        _num(features, "avg_order_value") >= cfg.mature_avg_order_value
    )
    out["mature_repeats"] = out["repeat_buyer"] & (orders - 1 > cfg.growth_max_repeat_orders)
    out["mature"] = out["mature_frequency"] | out["mature_value"] | out["mature_repeats"]
    out["growth"] = out["repeat_buyer"]
    return out


def lifecycle_from_checks(checks: pd.DataFrame) -> pd.Series:
    """Apply the precedence (churned > declining > mature > growth > new) to :func:`lifecycle_checks`."""
    stage = np.select(
        [~checks["buyer"], checks["churned"], checks["declining"], checks["mature"], checks["growth"]],
        ["potential", "churned", "declining", "mature", "growth"],
        default="new",
    )
    return pd.Series(stage, index=checks.index, name="lifecycle", dtype="object")


def assign_lifecycle(features: pd.DataFrame, cfg: LifecycleConfig) -> pd.Series:
    """Lifecycle stage code of every user (``potential``, ``new``, ``growth``, ``mature``, ``declining``,
    ``churned``), indexed like ``features``."""
    return lifecycle_from_checks(lifecycle_checks(features, cfg))


def _fmt(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:,.2f}".rstrip("0").rstrip(".")


def explain_lifecycle(row: pd.Series, cfg: LifecycleConfig) -> list[str]:
    """Human-readable trace of the lifecycle rules for one user (a row of the feature table)."""
    frame = row.to_frame().T
    checks = lifecycle_checks(frame, cfg)
    c = checks.iloc[0]
    stage = lifecycle_from_checks(checks).iloc[0]
    lines: list[str] = []
    if not c["buyer"]:
        lines.append("lifecycle: no paid order (orders_total = 0) -> potential")
        return lines
    lines.append(
        f"lifecycle: churned? no interaction for {_fmt(c['silent_days'])} days "
        f"({'>' if c['churn_silent'] else '<='} {cfg.churn_no_interaction_days}) and no order for "
        f"{_fmt(row['days_since_last_order'])} days "
        f"({'>' if c['churn_overdue'] else '<='} max({_fmt(cfg.churn_gap_multiplier)} x usual gap "
        f"{_fmt(row['gap_mean_days'])}, {cfg.churn_min_days_since_order}) = {_fmt(c['churn_order_days'])})"
        f" -> {'yes' if c['churned'] else 'no'}"
    )
    if not c["repeat_buyer"]:
        lines.append("lifecycle: declining? / mature? / growth? need >= 2 orders; this user has 1")
    else:
        r = _fmt(cfg.declining_trend_ratio)
        lines.append(
            f"lifecycle: declining? trend_orders_ratio {_fmt(row['trend_orders_ratio'])}"
            f" {'<=' if c['declining_orders'] else '>'} {r} or trend_spend_ratio {_fmt(row['trend_spend_ratio'])}"
            f" {'<=' if c['declining_spend'] else '>'} {r} -> {'yes' if c['declining'] else 'no'}"
        )
        lines.append(
            f"lifecycle: mature? orders per 30 days over {FREQUENCY_WINDOW_DAYS} days {_fmt(c['orders_per_30d'])}"
            f" {'>=' if c['mature_frequency'] else '<'} {_fmt(cfg.mature_orders_per_30d)}, or average order value"
            f" {_fmt(row['avg_order_value'])} {'>=' if c['mature_value'] else '<'} {_fmt(cfg.mature_avg_order_value)},"
            f" or repeat orders {int(c['orders']) - 1} {'>' if c['mature_repeats'] else '<='}"
            f" {cfg.growth_max_repeat_orders} -> {'yes' if c['mature'] else 'no'}"
        )
    lines.append(
        f"lifecycle: {int(c['orders'])} paid order(s); precedence churned > declining > mature > growth > new"
        f" -> {stage}"
    )
    return lines
