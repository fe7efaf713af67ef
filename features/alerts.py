"""Alerts: KPI changes between two cutoffs that moved past a configured threshold (``[[alerts]]``).

Each :class:`features.config.AlertRule` names a KPI (a metric of :data:`features.kpis.KPI_METRICS`), a
layer code (or none: every row of the KPI table, the whole base included), a kind of change and a
threshold. On a row with both a previous and a current value:

- ``relative_drop`` fires when (current - previous) / previous < -threshold, ``relative_rise`` when it is
  > threshold; relative changes need a previous value > 0 (use an absolute rule for "from zero").
- ``absolute_drop`` fires when current - previous < -threshold, ``absolute_rise`` when it is > threshold.

A change exactly at the threshold does not fire ("moves by more than"). Rates of layers with fewer than
``min_size`` users at either cutoff are skipped as noise (``size`` and ``share`` are never skipped: their
base is the whole population). Rows with a missing value at either cutoff never fire.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from features.config import AlertRule
from features.errors import StrataError
from features.kpis import KPI_METRICS, METRIC_NAMES, format_change, format_metric
from features.layer_names import display_name

# Changes are differences of floats: without slack a drop of exactly 5% computes as 5.0000000000000044%.
_EPS = 1e-9


@dataclass(frozen=True)
class Alert:
    """One fired alert: ``change`` is relative (fraction) or absolute per the rule, ``threshold`` the rule's."""

    name: str
    layer: str
    metric: str
    previous: float
    current: float
    change: float
    threshold: float
    message: str
    dimension: str = ""


class AlertRuleError(StrataError):
    """An alert rule names a metric or layer the KPI table does not have."""


def _check_rule(rule: AlertRule, kpis: pd.DataFrame) -> None:
    if rule.metric not in KPI_METRICS:
        raise AlertRuleError(
            f"alert rule {rule.name!r}: metric {rule.metric!r} is not a KPI (one of {', '.join(KPI_METRICS)})"
        )
    if rule.layer is not None and rule.layer not in set(kpis["layer"]):
        raise AlertRuleError(
            f"alert rule {rule.name!r}: layer {rule.layer!r} is not in the KPI table "
            f"(known: {', '.join(sorted(set(kpis['layer'])))})"
        )


def rule_change(rule: AlertRule, previous: float, current: float) -> float:
    """The change a rule looks at: relative (fraction of ``previous``) or absolute; NaN when undefined."""
    if pd.isna(previous) or pd.isna(current):
        return math.nan
    if rule.change.startswith("relative"):
        return (current - previous) / previous if previous > 0 else math.nan
    return current - previous


def rule_fires(rule: AlertRule, change: float) -> bool:
    """True when ``change`` is strictly beyond the rule's threshold in the rule's direction."""
    if pd.isna(change):
        return False
    if rule.change.endswith("drop"):
        return change < -rule.threshold - _EPS
    return change > rule.threshold + _EPS


def _message(rule: AlertRule, dimension: str, layer: str, prev: float, curr: float, change: float) -> str:
    verb = "fell" if curr < prev else "rose"
    where = "all users" if layer == "all" else f"{display_name(layer)} ({dimension})"
    how = (
        f"{change:+.2%} relative"
        if rule.change.startswith("relative")
        else format_change(rule.metric, change)
    )
    limit = (
        f"{rule.threshold:.1%}"
        if rule.change.startswith("relative")
        else format_change(rule.metric, rule.threshold).lstrip("+")
    )
    return (
        f"{rule.name}: {METRIC_NAMES[rule.metric][1].lower()} of {where} {verb} from "
        f"{format_metric(rule.metric, prev)} to {format_metric(rule.metric, curr)} ({how}; "
        f"alert when the {rule.change.replace('_', ' ')} exceeds {limit})"
    )


def evaluate_alerts(kpis: pd.DataFrame, rules: Iterable[AlertRule]) -> list[Alert]:
    """Evaluate alert rules on a KPI change table (:func:`features.kpis.kpi_table`).

    Returns
    -------
    The fired alerts, in rule order then KPI-table row order. Raises :class:`AlertRuleError` for a rule
    whose metric or layer the table does not know.
    """
    fired: list[Alert] = []
    for rule in rules:
        _check_rule(rule, kpis)
        rows = kpis if rule.layer is None else kpis[kpis["layer"] == rule.layer]
        for r in rows.to_dict("records"):
            prev, curr = float(r[f"{rule.metric}_prev"]), float(r[rule.metric])
            if rule.metric not in ("size", "share"):
                sizes = (r["size_prev"], r["size"])
                if any(pd.isna(s) or s < rule.min_size for s in sizes):
                    continue
            change = rule_change(rule, prev, curr)
            if not rule_fires(rule, change):
                continue
            fired.append(
                Alert(
                    name=rule.name,
                    layer=str(r["layer"]),
                    metric=rule.metric,
                    previous=prev,
                    current=curr,
                    change=float(change),
                    threshold=rule.threshold,
                    message=_message(rule, str(r["dimension"]), str(r["layer"]), prev, curr, change),
                    dimension=str(r["dimension"]),
                )
            )
    return fired
