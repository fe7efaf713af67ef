"""Findings of a monitoring run and the retraining recommendation they lead to.

A :class:`Finding` is one threshold crossed (``alert``: a breach) or approached (``warn``), with the
subject it concerns (a feature, a score, a layer, a metric) and a sentence that names the numbers. The
:class:`Recommendation` groups the alerts by cause:

- ``feature_drift`` / ``score_drift`` / ``layer_shift``: the population changed since training; the
  model extrapolates, so retrain on recent data (the drifted features are named, worst first);
- ``missing`` / ``range``: a feature went missing or left its training range, which is as often a
  broken data feed as a real change: check the input data, then retrain if the change is real;
- ``performance``: the realised quality of the predictions (AUC, calibration, value ranking) dropped
  below the thresholds once outcomes came in: retrain.

Retraining is recommended when any alert is found; warnings are listed to watch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

Severity = Literal["alert", "warn"]

#: Kinds of finding, in the order the recommendation lists them.
FINDING_KINDS: tuple[str, ...] = ("performance", "feature_drift", "score_drift", "layer_shift", "missing", "range")
_DATA_KINDS = frozenset({"missing", "range"})
#: At most this many subjects are named per cause in the summary sentence.
NAMED_PER_CAUSE = 5


@dataclass
class Finding:
    """One threshold crossed (``alert``) or approached (``warn``).

    ``value`` and ``threshold`` are in the unit of the check (PSI, share 0..1, AUC points...).
    """

    kind: str
    subject: str
    severity: Severity
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recommendation:
    """Whether to retrain, and why (one sentence per cause, the worst subjects named first)."""

    retrain: bool
    summary: str
    causes: list[str] = field(default_factory=list)
    data_checks: list[str] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift_findings(table: pd.DataFrame, kind: str, psi_warn: float, psi_alert: float) -> list[Finding]:
    """Findings of a drift table (:func:`serving.drift.feature_drift` or :func:`~serving.drift.score_drift`).

    A row in ``alert`` gives a ``kind`` finding when its PSI is at or above ``psi_alert`` (and the shift
    is significant), and a ``missing`` / ``range`` finding when that is why it alerts; any other row with
    a PSI at or above ``psi_warn`` gives a warning.
    """
    out: list[Finding] = []
    for row in table.to_dict("records"):
        name, psi, reasons = str(row["name"]), float(row["psi"]), str(row["reasons"])
        if psi >= psi_alert and row["status"] == "alert" and bool(row["significant"]):
            detail = f"; new levels {row['new_levels']}" if row["new_levels"] else ""
            out.append(Finding(kind, name, "alert", psi, psi_alert, f"{name}: PSI {psi:.3f} >= {psi_alert:g}{detail}"))
        elif psi >= psi_warn:
            out.append(Finding(kind, name, "warn", psi, psi_warn, f"{name}: PSI {psi:.3f} >= {psi_warn:g}"))
        if row["status"] == "alert" and "missing share" in reasons:
            out.append(Finding("missing", name, "alert", float(row["missing_change"]), float("nan"),
                               f"{name}: missing share {row['missing_reference']:.1%} -> {row['missing_current']:.1%}"))
        if row["status"] == "alert" and "outside the reference range" in reasons:
            out.append(Finding("range", name, "alert", float(row["out_of_range"]), float("nan"),
                               f"{name}: {row['out_of_range']:.1%} of values outside the training range"))
    return out


def layer_findings(table: pd.DataFrame, threshold: float, baseline: str) -> list[Finding]:
    """``layer_shift`` alerts of a :func:`serving.drift.layer_shift` table (``baseline`` names what was compared)."""
    out = []
    for row in table.to_dict("records"):
        if row["status"] == "alert":
            out.append(
                Finding(
                    "layer_shift",
                    f"{row['dimension']}={row['layer']}",
                    "alert",
                    float(row["change"]),
                    threshold,
                    f"{row['dimension']} {row['layer']}: share {row['reference_share']:.1%} ({baseline}) -> "
                    f"{row['current_share']:.1%} ({row['change']:+.1%})",
                )
            )
    return out


def _named(findings: list[Finding]) -> str:
    ranked = sorted(findings, key=lambda f: -abs(f.value))
    shown = ", ".join(f.message if f.kind == "performance" else _short(f) for f in ranked[:NAMED_PER_CAUSE])
    more = len(ranked) - NAMED_PER_CAUSE
    return shown + (f" and {more} more" if more > 0 else "")


def _short(f: Finding) -> str:
    if f.kind in ("feature_drift", "score_drift"):
        return f"{f.subject} (PSI {f.value:.2f})"
    if f.kind == "layer_shift":
        return f"{f.subject} ({f.value:+.1%})"
    if f.kind == "missing":
        return f"{f.subject} (missing {f.value:+.1%})"
    return f"{f.subject} ({f.value:.1%} out of range)"


_CAUSE_TEXT = {
    "performance": "realised performance dropped: {}",
    "feature_drift": "features drifted since training: {}",
    "score_drift": "scores drifted since training: {}",
    "layer_shift": "layer shares moved: {}",
}


def recommend_retraining(findings: list[Finding]) -> Recommendation:
    """The recommendation for a set of findings: retrain when any is an ``alert``, naming the causes."""
    alerts = [f for f in findings if f.severity == "alert"]
    causes: list[str] = []
    for kind in ("performance", "feature_drift", "score_drift", "layer_shift"):
        group = [f for f in alerts if f.kind == kind]
        if group:
            causes.append(_CAUSE_TEXT[kind].format(_named(group)))
    checks = []
    for kind, text in (("missing", "missing values changed: {}"), ("range", "values outside the training range: {}")):
        group = [f for f in alerts if f.kind == kind]
        if group:
            checks.append(text.format(_named(group)) + " (check the input data feed, and the buyer/prospect mix)")
    watch = [f.message for f in findings if f.severity == "warn"]
    retrain = bool(alerts)
    if not retrain:
        summary = "no retraining needed: no drift or performance threshold crossed"
        if watch:
            summary += f" ({len(watch)} warning(s) to watch)"
    else:
        parts = causes + checks
        summary = "retraining recommended: " + "; ".join(parts)
        if checks and not causes:
            summary = "check the input data, then retrain if the change is real: " + "; ".join(checks)
    return Recommendation(retrain=retrain, summary=summary, causes=causes, data_checks=checks, watch=watch)


__all__ = [
    "FINDING_KINDS",
    "Finding",
    "Recommendation",
    "drift_findings",
    "layer_findings",
    "recommend_retraining",
]
