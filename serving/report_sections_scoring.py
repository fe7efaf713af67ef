"""Report sections of a scoring run: risk and value per layer, refined vs rule layers, interventions, uplift.

``scoring_sections(scores, outcomes)`` returns :class:`serving.report.Section` objects for
:class:`serving.report.Report`. Charts use precomputed quantiles (box plots from five numbers), so
the page stays small whatever the number of users.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from serving.outcomes import outcome_summary
from serving.refinement import REFINED_LAYER_NAMES, disagreement_table, refined_layer_label
from serving.report import Section, figure_html, note_html, table_html

_LAYER_ORDER = [
    "hot_prospect", "potential", "high_potential_new", "new", "growth", "mature", "at_risk", "declining",
    "recoverable", "churned",
]


def _ordered_layers(values: pd.Series) -> list[str]:
    present = set(values.dropna().astype(str))
    return [c for c in _LAYER_ORDER if c in present] + sorted(present - set(_LAYER_ORDER))


def _pct(v: Any) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{float(v):.1%}"


def _money(v: Any) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{float(v):,.2f}"


def _box_stats(values: np.ndarray) -> dict[str, float] | None:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None
    q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    lo, hi = np.quantile(v, [0.05, 0.95])
    return {"q1": q1, "median": med, "q3": q3, "lowerfence": lo, "upperfence": hi, "mean": float(v.mean())}


def _box_figure(scores: pd.DataFrame, column: str, title: str, layers: list[str]) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    for layer in layers:
        stats = _box_stats(scores.loc[scores["refined_layer"] == layer, column].to_numpy(dtype=float))
        if stats is None:
            continue
        fig.add_trace(
            go.Box(
                name=refined_layer_label(layer),
                q1=[stats["q1"]], median=[stats["median"]], q3=[stats["q3"]],
                lowerfence=[stats["lowerfence"]], upperfence=[stats["upperfence"]], mean=[stats["mean"]],
                boxpoints=False, showlegend=False,
            )
        )
    fig.update_layout(title=title + " (box: quartiles; whiskers: 5th-95th percentile)", height=380)
    return figure_html(fig)


def distribution_section(scores: pd.DataFrame) -> Section:
    """Churn risk, conversion and predicted value per refined layer: table and box plots."""
    layers = _ordered_layers(scores["refined_layer"])
    g = scores.groupby("refined_layer")
    total_value = float(scores["predicted_value"].sum())
    value_sums = g["predicted_value"].sum()
    table = pd.DataFrame(
        {
            "layer": [refined_layer_label(x) for x in layers],
            "users": [int(g.size().get(x, 0)) for x in layers],
            "mean churn risk": [g["churn_risk"].mean().get(x) for x in layers],
            "expected churners": [g["churn_risk"].sum(min_count=1).get(x) for x in layers],
            "mean conversion prob": [g["conversion_prob"].mean().get(x) for x in layers],
            "predicted value": [float(value_sums.get(x, 0.0)) for x in layers],
            "share of value": [float(value_sums.get(x, 0.0)) / total_value if total_value else np.nan for x in layers],
        }
    )
    body = note_html(
        "Churn risk: probability of no purchase within the horizon (buyers); conversion: probability of a "
        "first purchase (prospects); predicted value: expected net spend within the horizon (shop currency)."
    )
    body += table_html(
        table,
        formatters={"mean churn risk": _pct, "mean conversion prob": _pct, "share of value": _pct,
                    "expected churners": lambda v: "n/a" if pd.isna(v) else f"{v:,.1f}", "predicted value": _money},
    )
    body += '<div class="grid">'
    body += _box_figure(scores, "churn_risk", "Churn risk by refined layer 各层流失风险", layers)
    body += _box_figure(scores, "predicted_value", "Predicted value by refined layer 各层预测价值", layers)
    body += "</div>"
    return Section("scoring-distributions", "风险与价值分布 Risk and value by layer", body)


def refinement_section(scores: pd.DataFrame) -> Section:
    """Rule lifecycle vs refined layer side by side: disagreement counts and a heatmap."""
    import plotly.graph_objects as go

    table = disagreement_table(scores["lifecycle"], scores["refined_layer"])
    changed = int(table.loc[~table["agrees"], "users"].sum())
    n = int(table["users"].sum())
    body = note_html(
        f"{changed:,} of {n:,} users ({changed / n:.1%}) have a refined layer different from their rule "
        "lifecycle stage: the model flags them early (at risk), sees potential (high-potential new, hot "
        "prospect) or a real chance of return (recoverable)." if n else "No users scored."
    )
    shown = table.loc[~table["agrees"], ["rule_name", "refined_name", "users", "share_of_rule_layer"]]
    body += table_html(
        shown.rename(columns={"rule_name": "rule layer", "refined_name": "refined layer",
                              "share_of_rule_layer": "share of rule layer"}),
        formatters={"share of rule layer": _pct},
        caption="Disagreements 规则层与精细层不一致",
    )
    rows = _ordered_layers(scores["lifecycle"])
    cols = _ordered_layers(scores["refined_layer"])
    cross = pd.crosstab(scores["lifecycle"], scores["refined_layer"]).reindex(index=rows, columns=cols, fill_value=0)
    fig = go.Figure(
        go.Heatmap(
            z=cross.to_numpy(), x=[refined_layer_label(c) for c in cols], y=[refined_layer_label(r) for r in rows],
            text=cross.to_numpy(), texttemplate="%{text}", colorscale="Blues", showscale=False,
        )
    )
    fig.update_layout(title="Rule lifecycle (rows) vs refined layer (columns) 规则层 vs 精细层", height=420)
    body += figure_html(fig)
    return Section("scoring-refinement", "精细分层 vs 规则分层 Refined vs rule layers", body)


def interventions_section(scores: pd.DataFrame, top_n: int = 20) -> Section:
    """Recommended actions: per action counts, cost and expected value; the budget; the top users."""
    rec = scores[scores["action_id"].notna()]
    treated = rec[~rec["control"].astype(bool)]
    per_action = (
        rec.groupby(["action_id", "action_name"])
        .agg(users=("user_id", "size"), control=("control", "sum"), unit_cost=("action_cost", "first"))
        .reset_index()
    )
    t = treated.groupby("action_id").agg(cost=("action_cost", "sum"), value=("expected_incremental_value", "sum"))
    per_action["to contact"] = per_action["users"] - per_action["control"]
    per_action["cost"] = per_action["action_id"].map(t["cost"]).fillna(0.0)
    per_action["expected incremental value"] = per_action["action_id"].map(t["value"]).fillna(0.0)
    per_action = per_action.sort_values("expected incremental value", ascending=False)
    cost = float(treated["action_cost"].sum())
    value = float(treated["expected_incremental_value"].sum())
    eiv = np.sort(treated["expected_incremental_value"].to_numpy(dtype=float))[::-1]
    top20 = eiv[: max(1, int(np.ceil(0.2 * len(eiv))))].sum() / eiv.sum() if len(eiv) and eiv.sum() > 0 else np.nan
    body = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div>{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>'
            for k, v in [
                ("to contact 触达", f"{len(treated):,}"),
                ("control 对照组", f"{len(rec) - len(treated):,}"),
                ("cost 成本", _money(cost)),
                ("expected incremental value 预期增量", _money(value)),
                ("value from top 20% 前20%贡献", _pct(top20)),
            ]
        )
        + "</div>"
    )
    body += note_html(
        "Expected incremental value = churn risk x value if retained x expected uplift - cost (prospects: "
        "conversion probability x uplift x value if converted - cost). Control users are recommended but "
        "held out (not contacted, no cost) so the real uplift can be measured."
    )
    body += table_html(
        per_action[["action_id", "action_name", "unit_cost", "users", "to contact", "control", "cost",
                    "expected incremental value"]].rename(columns={"action_name": "action", "unit_cost": "unit cost"}),
        caption="Actions 干预动作",
    )
    top = treated.nlargest(top_n, "expected_incremental_value")
    top_table = pd.DataFrame(
        {
            "user": top["user_id"],
            "refined layer": top["refined_layer"].map(refined_layer_label),
            "churn risk": top["churn_risk"],
            "predicted value": top["predicted_value"],
            "action": top["action_name"],
            "cost": top["action_cost"],
            "expected incremental value": top["expected_incremental_value"],
        }
    )
    body += table_html(top_table, formatters={"churn risk": _pct}, caption=f"Top {top_n} users by expected value")
    return Section("scoring-interventions", "干预建议与预算 Interventions and budget", body)


def uplift_section(outcomes: pd.DataFrame) -> Section:
    """Measured uplift and ROI per action and per refined layer (95% intervals) next to the prior."""
    import plotly.graph_objects as go

    by_action = outcome_summary(outcomes, by="action_id")
    by_layer = outcome_summary(outcomes, by="refined_layer")

    def ci(lo: Any, hi: Any, fmt: Any = _pct) -> str:
        return "n/a" if pd.isna(lo) else f"[{fmt(lo)}, {fmt(hi)}]"

    def frame(s: pd.DataFrame, label: Any) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "group": s["group"].map(label),
                "treated": s["n_treated"],
                "control": s["n_control"],
                "rate treated": s["rate_treated"].map(_pct),
                "rate control": s["rate_control"].map(_pct),
                "uplift": s["uplift"].map(_pct),
                "95% CI": [ci(a, b) for a, b in zip(s["uplift_lo"], s["uplift_hi"], strict=True)],
                "relative uplift": s["relative_uplift"].map(_pct),
                "relative 95% CI": [ci(a, b) for a, b in zip(s["relative_uplift_lo"], s["relative_uplift_hi"], strict=True)],
                "prior": s["uplift_prior"].map(_pct),
                "cost": s["cost"].map(_money),
                "ROI": s["roi"].map(lambda v: "n/a" if pd.isna(v) else f"{v:+.2f}"),
                "ROI 95% CI": [ci(a, b, lambda v: f"{v:+.2f}") for a, b in zip(s["roi_lo"], s["roi_hi"], strict=True)],
            }
        )

    body = note_html(
        "Treated = recommended and not in the control group (intent to treat). Uplift: difference of the "
        "purchase rate, treated minus control; relative uplift is comparable to the playbook prior "
        "(relative reduction of the no-purchase rate for buyers, relative rise of conversion for prospects). "
        "ROI = (incremental spend - cost) / cost."
    )
    body += table_html(frame(by_action, str), caption="By action 按动作", numeric_columns=["treated", "control"])
    body += table_html(
        frame(by_layer, lambda c: refined_layer_label(c) if c in REFINED_LAYER_NAMES else c),
        caption="By refined layer 按精细层",
        numeric_columns=["treated", "control"],
    )
    shown = by_action[by_action["uplift"].notna()]
    if len(shown):
        fig = go.Figure(
            go.Scatter(
                x=shown["uplift"], y=shown["group"], mode="markers",
                error_x={"type": "data", "symmetric": False, "array": shown["uplift_hi"] - shown["uplift"],
                         "arrayminus": shown["uplift"] - shown["uplift_lo"]},
                name="measured uplift",
            )
        )
        fig.add_vline(x=0.0, line_dash="dot")
        fig.update_layout(title="Measured uplift per action (95% CI) 实测增量", height=120 + 28 * len(shown),
                          xaxis_tickformat=".0%")
        body += figure_html(fig)
    return Section("scoring-uplift", "实测增量与ROI Measured uplift and ROI", body)


def scoring_sections(scores: pd.DataFrame, outcomes: pd.DataFrame | None = None) -> list[Section]:
    """The report sections of a scoring output (and of imported outcomes, when given)."""
    sections = [distribution_section(scores), refinement_section(scores), interventions_section(scores)]
    if outcomes is not None and len(outcomes):
        sections.append(uplift_section(outcomes))
    return sections
