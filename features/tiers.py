"""Value tier (价值分层) and activity tier (活跃分层) of every user.

Value tier, by ``spend_365d`` (net spend over the last 365 days, shop currency; NaN counts as 0):

- ``high_value``: spend > ``[layers.value_tier] high_annual_spend`` (default 5000);
- ``low_value``: spend < ``low_annual_spend`` (default 1000), including prospects (no spend);
- ``potential_value``: in between, both ends included.

Activity tier, measured on interactions (orders or events) of the last 30 days:

- ``sleeping``: no interaction for ``[layers.activity] sleeping_days`` days or more
  (``days_since_last_interaction`` >= sleeping_days), or never any interaction;
- ``core``: otherwise, active on ``core_active_days`` or more distinct days of the last 30
  (``active_days_30d``);
- ``active``: everyone else.

``sleeping`` takes precedence over ``core``, which only matters if ``sleeping_days`` is set below 30.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import ActivityTierConfig, ValueTierConfig
from features.layer_names import require_columns
from features.lifecycle import select_first

VALUE_WINDOW_DAYS = 365
VALUE_COLUMNS: tuple[str, ...] = (f"spend_{VALUE_WINDOW_DAYS}d",)
ACTIVITY_COLUMNS: tuple[str, ...] = ("active_days_30d", "days_since_last_interaction")


def _num(features: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(features[column], errors="coerce").astype("float64").to_numpy()


def value_tier_codes(spend_365d: np.ndarray, cfg: ValueTierConfig) -> np.ndarray:
    """THE value tier rule on arrays: net spend over the last 365 days (shop currency, NaN counts as 0) ->
    tier code (``high_value``, ``potential_value``, ``low_value``) per user, an object array of str."""
    spend = np.asarray(spend_365d, dtype=np.float64)
    spend = np.where(np.isnan(spend), 0.0, spend)
    return select_first([spend > cfg.high_annual_spend, spend < cfg.low_annual_spend],
                        ["high_value", "low_value"], "potential_value")


def activity_tier_codes(
    active_days_30d: np.ndarray, days_since_last_interaction: np.ndarray, cfg: ActivityTierConfig
) -> np.ndarray:
    """THE activity tier rule on arrays: distinct active days of the last 30 (NaN counts as 0) and days
    since the last interaction (NaN: never) -> tier code (``core``, ``active``, ``sleeping``) per user,
    an object array of str."""
    silent = np.asarray(days_since_last_interaction, dtype=np.float64)
    active_days = np.asarray(active_days_30d, dtype=np.float64)
    active_days = np.where(np.isnan(active_days), 0.0, active_days)
    sleeping = np.isnan(silent) | (silent >= cfg.sleeping_days)  # NaN compares False, without a warning
    return select_first([sleeping, active_days >= cfg.core_active_days], ["sleeping", "core"], "active")


def assign_value_tier(features: pd.DataFrame, cfg: ValueTierConfig) -> pd.Series:
    """Value tier code (``high_value``, ``potential_value``, ``low_value``) per user, indexed like ``features``."""
    require_columns(features, VALUE_COLUMNS, "the value tier")
    tier = value_tier_codes(_num(features, f"spend_{VALUE_WINDOW_DAYS}d"), cfg)
    return pd.Series(tier, index=features.index, name="value_tier", dtype="object")


def assign_activity_tier(features: pd.DataFrame, cfg: ActivityTierConfig) -> pd.Series:
    """Activity tier code (``core``, ``active``, ``sleeping``) per user, indexed like ``features``."""
    require_columns(features, ACTIVITY_COLUMNS, "the activity tier")
    tier = activity_tier_codes(_num(features, "active_days_30d"), _num(features, "days_since_last_interaction"), cfg)
    return pd.Series(tier, index=features.index, name="activity_tier", dtype="object")


def explain_value_tier(row: pd.Series, cfg: ValueTierConfig) -> list[str]:
    """Human-readable trace of the value tier rule for one user."""
    tier = assign_value_tier(row.to_frame().T, cfg).iloc[0]
    spend = pd.to_numeric(row[f"spend_{VALUE_WINDOW_DAYS}d"], errors="coerce")
    spend = 0.0 if pd.isna(spend) else float(spend)
    return [
        f"value tier: net spend over {VALUE_WINDOW_DAYS} days {spend:,.2f}; high if > {cfg.high_annual_spend:,.2f}, "
        f"low if < {cfg.low_annual_spend:,.2f} -> {tier}"
    ]


def explain_activity_tier(row: pd.Series, cfg: ActivityTierConfig) -> list[str]:
    """Human-readable trace of the activity tier rule for one user."""
    tier = assign_activity_tier(row.to_frame().T, cfg).iloc[0]
    silent = pd.to_numeric(row["days_since_last_interaction"], errors="coerce")
    silent_txt = "never" if pd.isna(silent) else f"{float(silent):,.1f} days ago"
    days = pd.to_numeric(row["active_days_30d"], errors="coerce")
    days = 0.0 if pd.isna(days) else float(days)
    return [
        f"activity tier: last interaction {silent_txt} (sleeping if >= {cfg.sleeping_days} days or never); "
        f"active on {days:,.0f} of the last 30 days "
        f"(core if >= {cfg.core_active_days}) -> {tier}"
    ]
