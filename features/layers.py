"""Rule layers of every user: lifecycle stage, RFM segment, value tier and activity tier.

The rules live in :mod:`features.lifecycle`, :mod:`features.rfm_segments` and :mod:`features.tiers`
(their module docstrings state each rule); thresholds come from ``config.layers``. Codes and the
bilingual display names are in :mod:`features.layer_names` (re-exported here).
"""

from __future__ import annotations

import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.errors import StrataError
from features.layer_names import (
    ACTIVITY_TIERS,
    LAYER_DIMENSIONS,
    LAYER_NAMES,
    LIFECYCLE_STAGES,
    RFM_SEGMENTS,
    VALUE_TIERS,
    display_name,
    require_columns,
)
from features.lifecycle import assign_lifecycle, explain_lifecycle
from features.rfm_segments import RfmThresholds, assign_rfm_segment, explain_rfm, rfm_thresholds
from features.tiers import assign_activity_tier, assign_value_tier, explain_activity_tier, explain_value_tier

__all__ = [
    "ACTIVITY_TIERS",
    "LAYER_COLUMNS",
    "LAYER_DIMENSIONS",
    "LAYER_NAMES",
    "LIFECYCLE_STAGES",
    "RFM_SEGMENTS",
    "VALUE_TIERS",
    "RfmThresholds",
    "assign_layers",
    "display_name",
    "explain_layers",
    "rfm_thresholds",
]

LAYER_COLUMNS: tuple[str, ...] = tuple(LAYER_DIMENSIONS)


def assign_layers(
    features: pd.DataFrame, config: StrataConfig, *, thresholds: RfmThresholds | None = None
) -> pd.DataFrame:
    """Assign the four rule layers to every user of a feature table.

    Parameters
    ----------
    features
        Output of :func:`features.pipeline.build_features` (or any frame with its column names).
    config
        Thresholds are read from ``config.layers``.
    thresholds
        RFM thresholds to use; default: :func:`rfm_thresholds` of ``features`` (medians of its buyers in
        quantile mode).

    Returns
    -------
    DataFrame with columns ``user_id``, ``lifecycle``, ``rfm_segment``, ``value_tier``,
    ``activity_tier`` (string codes of :data:`LAYER_DIMENSIONS`), one row per input row, in input order.
    """
    require_columns(features, [ENTITY_KEY], "layer assignment")
    layer_cfg = config.layers
    th = thresholds if thresholds is not None else rfm_thresholds(features, layer_cfg.rfm)
    out = pd.DataFrame({ENTITY_KEY: features[ENTITY_KEY].astype(str).to_numpy()})
    out["lifecycle"] = assign_lifecycle(features, layer_cfg.lifecycle).to_numpy()
    out["rfm_segment"] = assign_rfm_segment(features, layer_cfg.rfm, th).to_numpy()
    out["value_tier"] = assign_value_tier(features, layer_cfg.value_tier).to_numpy()
    out["activity_tier"] = assign_activity_tier(features, layer_cfg.activity).to_numpy()
    return out


def explain_layers(
    features_row: pd.Series, config: StrataConfig, *, thresholds: RfmThresholds | None = None
) -> list[str]:
    """Human-readable rule trace of the four layers for one user (one row of the feature table).

    In RFM quantile mode the thresholds are medians of the whole population, which one row cannot give:
    pass ``thresholds=rfm_thresholds(features, config.layers.rfm)``; without it the RFM step says so.
    """
    row = features_row.copy()
    layer_cfg = config.layers
    lines = [f"user {row.get(ENTITY_KEY, '?')}"]
    lines += explain_lifecycle(row, layer_cfg.lifecycle)
    if thresholds is None and layer_cfg.rfm.mode == "fixed":
        thresholds = rfm_thresholds(row.to_frame().T, layer_cfg.rfm)
    if thresholds is None:
        lines.append(
            "rfm: quantile mode needs the medians of all buyers; pass thresholds= to explain this step"
        )
    else:
        lines += explain_rfm(row, thresholds)
    lines += explain_value_tier(row, layer_cfg.value_tier)
    lines += explain_activity_tier(row, layer_cfg.activity)
    return lines


def explain_user(features: pd.DataFrame, user_id: str, config: StrataConfig) -> list[str]:
    """Rule trace of :func:`explain_layers` for ``user_id`` of a whole feature table (RFM thresholds from it).

    Raises :class:`StrataError` if the user is not in the table.
    """
    match = features[features[ENTITY_KEY].astype(str) == str(user_id)]
    if match.empty:
        raise StrataError(
            f"--explain: user_id {user_id!r} is not in the feature table ({len(features):,} users)"
        )
    th = rfm_thresholds(features, config.layers.rfm)
    row = match.iloc[0]
    lines = explain_layers(row, config, thresholds=th)
    layers = assign_layers(match.iloc[[0]], config, thresholds=th).iloc[0]
    lines.append(
        "result: "
        + ", ".join(f"{dim} = {layers[dim]} ({display_name(layers[dim])})" for dim in LAYER_COLUMNS)
    )
    return lines
