"""Stable codes and bilingual display names of the rule layers.

Every layer value is a short stable code (``important_value``, ``churned``...) that tables, the API and
the configuration use; operators read the display name, Chinese and English side by side. Codes are
unique across the four layer dimensions, so a code alone names a layer (e.g. in an alert rule).
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from features.errors import StrataError

LIFECYCLE_STAGES: tuple[str, ...] = ("potential", "new", "growth", "mature", "declining", "churned")
RFM_SEGMENTS: tuple[str, ...] = (
    "important_value",
    "important_develop",
    "important_keep",
    "important_retain",
    "general_value",
    "general_develop",
    "general_keep",
    "general_retain",
    "prospect",
)
VALUE_TIERS: tuple[str, ...] = ("high_value", "potential_value", "low_value")
#: Layers only the model-based refinement assigns (:mod:`serving.refinement`); with the lifecycle stages they are
#: every value of ``refined_layer``, and what a playbook action may target.
REFINED_ONLY_LAYERS: tuple[str, ...] = ("at_risk", "high_potential_new", "recoverable", "hot_prospect")
ACTIVITY_TIERS: tuple[str, ...] = ("core", "active", "sleeping")

#: The four layer dimensions (columns of :func:`features.layers.assign_layers`) and their codes in
#: display order.
LAYER_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "lifecycle": LIFECYCLE_STAGES,
    "rfm_segment": RFM_SEGMENTS,
    "value_tier": VALUE_TIERS,
    "activity_tier": ACTIVITY_TIERS,
}

DIMENSION_NAMES: dict[str, tuple[str, str]] = {
    "lifecycle": ("生命周期", "Lifecycle stage"),
    "rfm_segment": ("RFM分层", "RFM segment"),
    "value_tier": ("价值分层", "Value tier"),
    "activity_tier": ("活跃分层", "Activity tier"),
    "overall": ("全体", "All users"),
}

#: code -> (Chinese, English) display names.
LAYER_NAMES: dict[str, tuple[str, str]] = {
    # lifecycle
    "potential": ("潜在", "Potential"),
    "new": ("新客", "New"),
    "growth": ("成长", "Growth"),
    "mature": ("成熟", "Mature"),
    "declining": ("衰退", "Declining"),
    "churned": ("流失", "Churned"),
    # RFM segments
    "important_value": ("重要价值", "Important value"),
    "important_develop": ("重要发展", "Important develop"),
    "important_keep": ("重要保持", "Important keep"),
    "important_retain": ("重要挽留", "Important retain"),
    "general_value": ("一般价值", "General value"),
    "general_develop": ("一般发展", "General develop"),
    "general_keep": ("一般保持", "General keep"),
    "general_retain": ("一般挽留", "General retain"),
    "prospect": ("未购潜客", "Prospect (no purchase)"),
    # value tiers
    "high_value": ("高价值", "High value"),
    "potential_value": ("潜力价值", "Potential value"),
    "low_value": ("低价值", "Low value"),
    # activity tiers
    "core": ("核心活跃", "Core"),
    "active": ("活跃", "Active"),
    "sleeping": ("沉睡", "Sleeping"),
    # the whole population (KPI tables)
    "all": ("全体", "All users"),
}


def display_name(code: str, sep: str = " ") -> str:
    """Chinese and English name of a layer code side by side (``"重要价值 Important value"``).

    Unknown codes are returned unchanged, so a layer added by configuration still displays.
    """
    names = LAYER_NAMES.get(code) or DIMENSION_NAMES.get(code)
    return f"{names[0]}{sep}{names[1]}" if names else code


def dimension_of(code: str) -> str | None:
    """The layer dimension (``lifecycle``...) a code belongs to, or None if unknown."""
    for dim, codes in LAYER_DIMENSIONS.items():
        if code in codes:
            return dim
    return None


class FeatureColumnsError(StrataError):
    """A feature table lacks the columns a rule needs; the message names them."""


def require_columns(features: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise :class:`FeatureColumnsError` naming every column of ``columns`` missing from ``features``."""
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise FeatureColumnsError(
            f"feature table: {what} needs column(s) {', '.join(missing)} which are missing "
            f"(present: {len(features.columns)} columns; check features.windows_days and the pipeline version)"
        )
