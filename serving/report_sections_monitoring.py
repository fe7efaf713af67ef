"""Report sections of a monitoring run: drift since training (worst first), layer shares, realised
performance over time and the retraining recommendation.

``monitoring_sections(result)`` returns :class:`serving.report.Section` objects for
:class:`serving.report.Report` (the ``strata report`` command adds them).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from features.layer_names import LAYER_NAMES, display_name
from serving.monitoring import MonitorResult
from serving.report import Section, figure_html, note_html, table_html

#: Features shown in the drift table: every alert and warning, then the largest PSI up to this many rows.
DRIFT_TABLE_ROWS = 25
#: Features in the PSI bar chart.
DRIFT_CHART_ROWS = 20


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None or pd.isna(v) else format(float(v), fmt)


def _pct(v: Any) -> str:
    return _num(v, ".1%")


def _status_html(status: str) -> str:
    cls = {"alert": "bad", "warn": "flat", "ok": "good"}.get(status, "flat")
    label = {"alert": "alert 告警", "warn": "warn 注意", "ok": "ok 正常"}.get(status, status)
    return f'<span class="{cls}">{html.escape(label)}</span>'


def _drift_table(table: pd.DataFrame, limit: int | None) -> str:
    if table.empty:
        return note_html("Nothing to compare. 无可比较的数据。")
    flagged = table[table["status"] != "ok"]
    shown = table if limit is None else table.head(max(limit, len(flagged)))
    view = pd.DataFrame(
        {
            "name": shown["name"],
            "status": shown["status"],
            "PSI": shown["psi"],
            "test": shown["test"],
            "statistic": shown["statistic"],
            "p-value": shown["p_value"],
            "missing (train -> now)": [
                f"{_pct(a)} -> {_pct(b)}" for a, b in zip(shown["missing_reference"], shown["missing_current"], strict=True)
            ],
            "out of range": shown["out_of_range"],
            "detail": shown["reasons"],
        }
    )
    out = table_html(
        view,
        formatters={
            "status": _status_html,
            "PSI": lambda v: _num(v, ".3f"),
            "statistic": lambda v: _num(v, ".3f"),
            "p-value": lambda v: _num(v, ".2g"),
            "out of range": _pct,
        },
        html_columns=["status"],
        numeric_columns=["PSI", "statistic", "p-value", "out of range"],
    )
    if limit is not None and len(table) > len(shown):
        out += note_html(f"{len(table) - len(shown):,} more features are stable (PSI below the warning threshold).")
    return out


def _psi_chart(table: pd.DataFrame, psi_warn: float, psi_alert: float) -> str | None:
    import plotly.graph_objects as go

    top = table.sort_values("psi", ascending=False).head(DRIFT_CHART_ROWS)
    if top.empty:
        return None
    colours = ["#b91c1c" if s == "alert" else "#d97706" if s == "warn" else "#2563eb" for s in top["status"]]
    fig = go.Figure(go.Bar(x=top["psi"], y=top["name"], orientation="h", marker_color=colours,
                           hovertemplate="%{y}<br>PSI %{x:.3f}<extra></extra>"))
    for x, dash, name in ((psi_warn, "dot", "warn"), (psi_alert, "dash", "alert")):
        fig.add_vline(x=x, line_dash=dash, line_color="#6b7280", annotation_text=f"{name} {x:g}")
    fig.update_layout(title="特征漂移 PSI by feature (largest first)", height=160 + 22 * len(top),
                      yaxis={"autorange": "reversed"}, xaxis={"title": "PSI"})
    return figure_html(fig, div_id="fig-monitor-psi")


def _layer_table(table: pd.DataFrame) -> str:
    if table.empty:
        return note_html("No layer shares to compare. 无分层占比可比较。")
    moved = table[(table["status"] == "alert") | (table["change"].abs() >= 0.01)]
    shown = moved if not moved.empty else table.head(5)
    view = pd.DataFrame(
        {
            "dimension": shown["dimension"],
            "layer": [display_name(x) if x in LAYER_NAMES else x for x in shown["layer"]],
            "status": shown["status"],
            "reference share": shown["reference_share"],
            "current share": shown["current_share"],
            "change": shown["change"],
        }
    )
    return table_html(
        view,
        formatters={
            "status": _status_html,
            "reference share": _pct,
            "current share": _pct,
            "change": lambda v: _num(v, "+.1%"),
        },
        html_columns=["status"],
        numeric_columns=["reference share", "current share", "change"],
    )


def _summary_html(result: MonitorResult) -> str:
    rec = result.recommendation
    box = "alert-box" if rec.retrain else "ok-box"
    items = [*rec.causes, *rec.data_checks]
    lst = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    body = f'<div class="{box}"><b>{html.escape(rec.summary.split(":", 1)[0])}</b>'
    body += f'<ul class="alerts">{lst}</ul></div>' if lst else "</div>"
    m = result.model
    cards = [
        ("模型 Model", f"{m.get('name')} v{m.get('version')}"),
        ("用户 Users", f"{result.n_users:,}"),
        ("漂移特征 Drifted features", f"{int((result.feature_drift['status'] == 'alert').sum()):,}"),
        ("注意 Warnings", f"{int((result.feature_drift['status'] == 'warn').sum()):,}"),
        ("告警 Breaches", f"{sum(f.severity == 'alert' for f in result.findings):,}"),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="note">{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>'
        for k, v in cards
    )
    ref = m.get("reference_cutoff")
    ref_text = pd.Timestamp(ref).date().isoformat() if ref is not None else "unknown"
    return (
        body
        + f'<div class="cards">{cards_html}</div>'
        + note_html(
            f"Current base as of {result.as_of.date()} against the reference stored with the model at training "
            f"(population as of {ref_text}). A feature breaches when its PSI reaches the alert threshold "
            f"({result.thresholds.psi_alert:g}), its missing share moves by {result.thresholds.missing_share_shift:.0%} "
            f"or more, or {result.thresholds.out_of_range_share:.0%} or more of its values fall outside the training "
            "range. The size of a shift decides; KS and chi-square p-values only guard against sampling noise "
            "(with many users they flag trivial shifts)."
        )
    )


def _health_chart(trend: pd.DataFrame, reference: dict[str, float], cfg_auc_drop: float, calibration_error: float) -> str | None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if trend.empty:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("流失AUC Churn AUC / 价值Gini value Gini", "校准误差 Calibration error (ECE)"))
    for source, part in trend.groupby("source", sort=True):
        x = part["cutoff"].dt.strftime("%Y-%m-%d")
        symbols = np.where(part["out_of_time"].astype(bool), "circle", "circle-open")
        fig.add_trace(go.Scatter(x=x, y=part["churn_auc"], mode="lines+markers", name=f"churn AUC ({source})",
                                 marker={"symbol": symbols, "size": 9}), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=part["value_normalized_gini"], mode="lines+markers",
                                 name=f"value Gini ({source})", marker={"symbol": symbols, "size": 9},
                                 line={"dash": "dot"}), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=part["churn_ece"], mode="lines+markers", name=f"churn ECE ({source})",
                                 marker={"symbol": symbols, "size": 9}), row=1, col=2)
    auc = reference.get("churn_auc")
    if auc is not None and np.isfinite(auc):
        fig.add_hline(y=auc, line_dash="dash", line_color="#15803d", annotation_text=f"training AUC {auc:.3f}",
                      row=1, col=1)
        fig.add_hline(y=auc - cfg_auc_drop, line_dash="dot", line_color="#b91c1c",
                      annotation_text=f"breach below {auc - cfg_auc_drop:.3f}", row=1, col=1)
    fig.add_hline(y=calibration_error, line_dash="dot", line_color="#b91c1c",
                  annotation_text=f"breach at {calibration_error:g}", row=1, col=2)
    fig.update_layout(title="实际表现 Realised performance by cutoff (open markers: cutoffs the model was trained on)",
                      height=420)
    return figure_html(fig, div_id="fig-monitor-health")


def _health_table(trend: pd.DataFrame) -> str:
    view = pd.DataFrame(
        {
            "cutoff": trend["cutoff"].dt.strftime("%Y-%m-%d"),
            "source": trend["source"],
            "model version": trend["model_version"].astype(str),
            "after training": np.where(trend["out_of_time"].astype(bool), "yes", "no (in training)"),
            "buyers": trend["n_buyers"],
            "realised churn": trend["churn_rate"],
            "mean risk": trend["mean_churn_risk"],
            "AUC": trend["churn_auc"],
            "ECE": trend["churn_ece"],
            "value Gini": trend["value_normalized_gini"],
            "spend error %": trend["value_total_spend_error_pct"],
            "conversion AUC": trend["conversion_auc"],
        }
    )
    f3 = {c: (lambda v: _num(v, ".3f")) for c in ("AUC", "ECE", "value Gini", "conversion AUC")}
    return table_html(
        view,
        formatters={"realised churn": _pct, "mean risk": _pct, "spend error %": lambda v: _num(v, "+.1f"), **f3},
        numeric_columns=["buyers", "realised churn", "mean risk", "AUC", "ECE", "value Gini", "spend error %",
                         "conversion AUC"],
    )


def monitoring_sections(result: MonitorResult) -> list[Section]:
    """Report sections of a :class:`serving.monitoring.MonitorResult`.

    1. ``monitoring-drift``: the recommendation, the drift table of features (worst first) with a PSI
       chart, score drift and layer-share shifts;
    2. ``monitoring-health``: realised performance per past cutoff (chart and table) against the training
       backtest.
    """
    cfg = result.thresholds
    drift = (
        _summary_html(result)
        + "<h3>Features 特征 (worst first)</h3>"
        + (_psi_chart(result.feature_drift, cfg.psi_warn, cfg.psi_alert) or "")
        + _drift_table(result.feature_drift, DRIFT_TABLE_ROWS)
        + "<h3>Scores 模型分数</h3>"
        + _drift_table(result.score_drift, None)
        + f"<h3>Layer shares 分层占比 (vs {html.escape(result.layer_baseline)})</h3>"
        + _layer_table(result.layer_shift)
    )
    trend = result.health
    ref = result.health_reference
    ref_text = ", ".join(f"{k} {v:.3f}" for k, v in ref.items()) or "none stored"
    health = note_html(
        f"Predictions at past cutoffs whose {result.model.get('horizon_days')}-day horizon had passed by "
        f"{result.label_end.date()}, against what happened. Training backtest: {ref_text}. Status: "
        f"{result.health_status}."
    )
    if trend.empty:
        health += note_html("No realised outcomes yet. 暂无已实现的结果。")
    else:
        health += (_health_chart(trend, ref, cfg.auc_drop, cfg.calibration_error) or "") + _health_table(trend)
    for n in result.notes:
        health += note_html(n)
    return [
        Section("monitoring-drift", "Drift since training 数据漂移", drift),
        Section("monitoring-health", "Realised model performance 模型实际表现", health),
    ]


__all__ = ["monitoring_sections"]
