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

from collections.abc import Mapping, Sequence
from typing import Any

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


#: The boolean and float outcomes of :func:`lifecycle_rules`, in the column order of :func:`lifecycle_checks`.
LIFECYCLE_CHECK_NAMES: tuple[str, ...] = (
    "orders", "buyer", "repeat_buyer", "silent_days", "churn_silent", "churn_order_days", "churn_overdue",
    "churned", "declining_orders", "declining_spend", "declining", "orders_per_30d", "mature_frequency",
    "mature_value", "mature_repeats", "mature", "growth",
)
LIFECYCLE_STAGE_ORDER: tuple[str, ...] = ("potential", "churned", "declining", "mature", "growth")


def select_first(conditions: Sequence[np.ndarray], choices: Sequence[str], default: str) -> np.ndarray:
    """``np.select(conditions, choices, default)`` as an object array of str (the first true condition
    wins), without ``np.select``'s fixed cost on a few rows."""
    out = np.full(len(conditions[0]), default, dtype=object)
    for cond, choice in zip(reversed(conditions), reversed(choices), strict=True):
        out[cond] = choice
    return out


def _nan_to_zero(values: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(values), 0.0, values)


def lifecycle_rules(columns: Mapping[str, np.ndarray], cfg: LifecycleConfig) -> dict[str, np.ndarray]:
    """THE definition of the lifecycle rules, on arrays: every intermediate quantity and rule outcome.

    Parameters
    ----------
    columns
        One float64 array per name of :data:`LIFECYCLE_COLUMNS` (days, order counts, shop currency,
        ratios; NaN for missing), all of one length.
    cfg
        The thresholds (``[layers.lifecycle]``).

    Returns
    -------
    One array per name of :data:`LIFECYCLE_CHECK_NAMES` (float for ``orders``, ``silent_days``,
    ``churn_order_days``, ``orders_per_30d``; bool otherwise); see :func:`lifecycle_checks`.
    """
    orders = _nan_to_zero(np.asarray(columns["orders_total"], dtype=np.float64))
    since_order = np.asarray(columns["days_since_last_order"], dtype=np.float64)
    silent_raw = np.asarray(columns["days_since_last_interaction"], dtype=np.float64)
    # Orders are interactions too: a buyer without a recorded interaction time is as silent as their last order.
    silent = np.where(np.isnan(silent_raw), since_order, silent_raw)
    gap = np.asarray(columns["gap_mean_days"], dtype=np.float64)
    buyer = orders >= 1
    repeat = orders >= 2
    ratio = cfg.declining_trend_ratio
    churn_silent = buyer & (silent > cfg.churn_no_interaction_days)
    # np.fmax ignores NaN: with no usual gap (one order day) only the minimum applies.
    churn_order_days = np.fmax(cfg.churn_gap_multiplier * gap, float(cfg.churn_min_days_since_order))
    churn_overdue = buyer & (since_order > churn_order_days)
    declining_orders = repeat & (np.asarray(columns["trend_orders_ratio"], dtype=np.float64) <= ratio)
    declining_spend = repeat & (np.asarray(columns["trend_spend_ratio"], dtype=np.float64) <= ratio)
    per_30d = (_nan_to_zero(np.asarray(columns[f"orders_{FREQUENCY_WINDOW_DAYS}d"], dtype=np.float64))
               * 30.0 / FREQUENCY_WINDOW_DAYS)
    mature_frequency = repeat & (per_30d >= cfg.mature_orders_per_30d)
    mature_value = repeat & (np.asarray(columns["avg_order_value"], dtype=np.float64) >= cfg.mature_avg_order_value)
    mature_repeats = repeat & (orders - 1 > cfg.growth_max_repeat_orders)
    return {
        "orders": orders, "buyer": buyer, "repeat_buyer": repeat, "silent_days": silent,
        "churn_silent": churn_silent, "churn_order_days": churn_order_days, "churn_overdue": churn_overdue,
        "churned": churn_silent & churn_overdue, "declining_orders": declining_orders,
        "declining_spend": declining_spend, "declining": declining_orders | declining_spend,
        "orders_per_30d": per_30d, "mature_frequency": mature_frequency, "mature_value": mature_value,
        "mature_repeats": mature_repeats, "mature": mature_frequency | mature_value | mature_repeats,
        "growth": repeat,
    }


def lifecycle_stages(rules: Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
    """THE precedence (churned > declining > mature > growth > new; ``potential`` for non-buyers) applied to
    the outcomes of :func:`lifecycle_rules` (arrays, or columns of :func:`lifecycle_checks`): one stage
    code per user, an object array of str."""
    buyer = np.asarray(rules["buyer"], dtype=np.bool_)
    conditions = [~buyer] + [np.asarray(rules[k], dtype=np.bool_) for k in ("churned", "declining", "mature", "growth")]
    return select_first(conditions, LIFECYCLE_STAGE_ORDER, "new")


def _num(features: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(features[column], errors="coerce").astype("float64").to_numpy()


def lifecycle_checks(features: pd.DataFrame, cfg: LifecycleConfig) -> pd.DataFrame:
    """Every intermediate quantity and rule outcome of the lifecycle rules, one row per user.

    A frame around :func:`lifecycle_rules`.

    Returns
    -------
    DataFrame indexed like ``features`` with float columns ``orders``, ``silent_days`` (days since the
    last order or event), ``churn_order_days`` (the days-since-order threshold of ``churned``),
    ``orders_per_30d`` and boolean columns ``buyer``, ``repeat_buyer``, ``churn_silent``,
    ``churn_overdue``, ``churned``, ``declining_orders``, ``declining_spend``, ``declining``,
    ``mature_frequency``, ``mature_value``, ``mature_repeats``, ``mature``, ``growth``.
    """
    require_columns(features, LIFECYCLE_COLUMNS, "the lifecycle rules")
    rules = lifecycle_rules({c: _num(features, c) for c in LIFECYCLE_COLUMNS}, cfg)
    return pd.DataFrame({k: rules[k] for k in LIFECYCLE_CHECK_NAMES}, index=features.index)


def lifecycle_from_checks(checks: pd.DataFrame) -> pd.Series:
    """Apply the precedence (churned > declining > mature > growth > new) to :func:`lifecycle_checks`."""
    return pd.Series(lifecycle_stages(checks), index=checks.index, name="lifecycle", dtype="object")


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
