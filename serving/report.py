"""One self-contained HTML report that operators read: layers, migration, KPIs, alerts, distributions.

The file needs no network: plotly.js is embedded once, inline, when any section holds a chart, and
nothing references an external URL. The report is a list of :class:`Section` objects, so later modules
(scoring, model quality, interventions, monitoring) add their own sections::

    report = Report("Strata report", as_of)
    for s in layer_sections(features, layers, config, prev_features=..., prev_layers=...):
        report.add(s)
    report.add_section("model-quality", "Model quality 模型质量", figure_html(fig) + table_html(df))
    report.write("report.html")

Helpers: :func:`figure_html` (a plotly figure, no script tag), :func:`table_html` (a DataFrame as an
escaped HTML table), :func:`change_html` (a coloured change), :func:`note_html`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.alerts import Alert, evaluate_alerts
from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.errors import StrataError
from features.kpis import KPI_METRICS, METRIC_NAMES, format_change, format_metric, kpi_table
from features.layer_names import DIMENSION_NAMES, LAYER_DIMENSIONS, display_name
from features.migrations import GONE_COLUMN, NEW_ROW, migration_matrix, migration_summary
from features.rfm_segments import RfmThresholds, rfm_thresholds

if TYPE_CHECKING:
    import plotly.graph_objects as go

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# Class plotly gives every chart container; its presence means plotly.js must be embedded.
_PLOTLY_MARKER = "plotly-graph-div"

#: Layers where growth is bad news: a rising size or share of these is shown in red.
UNFAVOURABLE_LAYERS: frozenset[str] = frozenset(
    {"declining", "churned", "sleeping", "important_retain", "general_retain", "low_value"}
)

#: Key features whose distribution per lifecycle stage the report shows: column -> (title, unit).
DISTRIBUTION_FEATURES: dict[str, tuple[str, str]] = {
    "days_since_last_order": ("距上次购买天数 Days since last order", "days"),
    "orders_365d": ("近365天订单数 Orders, last 365 days", "orders"),
    "spend_365d": ("近365天消费 Net spend, last 365 days", "currency"),
    "active_days_30d": ("近30天活跃天数 Active days, last 30 days", "days"),
}


@dataclass
class Section:
    """One ``<section id=...>`` of the report: ``html`` is trusted markup (build it with the helpers)."""

    id: str
    title: str
    html: str

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.id):
            raise StrataError(
                f"report section id {self.id!r}: use letters, digits, '-' or '_' (start with a letter)"
            )


_PAGE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", sans-serif;
  margin: 0 auto; max-width: 1280px; padding: 0 24px 48px; color: #1f2937; line-height: 1.45; }}
header {{ border-bottom: 2px solid #e5e7eb; padding: 16px 0 8px; margin-bottom: 8px; }}
h1 {{ margin: 0 0 4px; font-size: 1.7em; }}
h2 {{ border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; margin-top: 36px; }}
h3 {{ margin: 20px 0 6px; font-size: 1.1em; }}
.meta {{ color: #4b5563; font-size: 0.92em; }}
nav ul {{ list-style: none; padding: 0; margin: 8px 0; display: flex; flex-wrap: wrap; gap: 6px 18px; }}
nav a {{ color: #2563eb; text-decoration: none; }}
table.data {{ border-collapse: collapse; margin: 8px 0 16px; font-size: 0.88em; }}
table.data th, table.data td {{ border: 1px solid #e5e7eb; padding: 4px 8px; }}
table.data th {{ background: #f3f4f6; text-align: left; }}
table.data td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.chg {{ display: block; font-size: 0.85em; }}
.good {{ color: #15803d; }} .bad {{ color: #b91c1c; }} .flat {{ color: #6b7280; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 12px; }}
.note {{ color: #4b5563; font-size: 0.9em; }}
ul.alerts li {{ margin: 4px 0; }}
.alert-box {{ border-left: 4px solid #b91c1c; background: #fef2f2; padding: 8px 12px; }}
.ok-box {{ border-left: 4px solid #15803d; background: #f0fdf4; padding: 8px 12px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 14px; min-width: 150px; }}
.card .v {{ font-size: 1.5em; font-weight: 600; }}
</style>
{plotly_js}
</head>
<body>
<header>
<h1>{title}</h1>
<div class="meta">{meta}</div>
<nav><ul>{nav}</ul></nav>
</header>
{sections}
</body>
</html>
"""


def _fmt_time(value: pd.Timestamp | str) -> str:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC") if (ts.hour or ts.minute) else ts.strftime("%Y-%m-%d")


def build_report(
    sections: Sequence[Section],
    title: str,
    as_of: pd.Timestamp | str,
    *,
    generated_at: pd.Timestamp | None = None,
    meta: Mapping[str, str] | None = None,
) -> str:
    """Render sections into one self-contained HTML page (UTF-8 text).

    Parameters
    ----------
    sections
        Rendered in order, each as ``<section id=...><h2>title</h2>...</section>``; ids must be unique.
    title
        Page title and ``<h1>``.
    as_of
        The cutoff the report describes, shown in the header.
    generated_at
        Shown in the header; default now (UTC).
    meta
        Extra header items (label -> value), e.g. ``{"previous cutoff": "2024-05-31"}``.
    """
    ids = [s.id for s in sections]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise StrataError(f"report: duplicate section id(s) {', '.join(dup)}")
    generated = pd.Timestamp.now(tz="UTC") if generated_at is None else pd.Timestamp(generated_at)
    items = {"as of 截止": _fmt_time(as_of), **(meta or {}), "generated at 生成于": _fmt_time(generated)}
    meta_html = " &middot; ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in items.items())
    nav = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    body = "\n".join(
        f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n{s.html}\n</section>' for s in sections
    )
    plotly_js = ""
    if any(_PLOTLY_MARKER in s.html for s in sections):
        from plotly.offline import get_plotlyjs

        plotly_js = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    return _PAGE.format(title=html.escape(title), meta=meta_html, nav=nav, sections=body, plotly_js=plotly_js)


@dataclass
class Report:
    """A report being assembled: add sections, then :meth:`render` or :meth:`write`."""

    title: str
    as_of: pd.Timestamp | str
    meta: dict[str, str] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)

    def add(self, section: Section) -> Section:
        """Append a section (its id must be new)."""
        if any(s.id == section.id for s in self.sections):
            raise StrataError(f"report: section id {section.id!r} already added")
        self.sections.append(section)
        return section

    def add_section(self, id: str, title: str, html: str) -> Section:  # noqa: A002 (the HTML attribute's name)
        """Append ``<section id=id><h2>title</h2>html</section>``; ``html`` is trusted markup."""
        return self.add(Section(id, title, html))

    def extend(self, sections: Iterable[Section]) -> None:
        """Append several sections in order."""
        for s in sections:
            self.add(s)

    def render(self, generated_at: pd.Timestamp | None = None) -> str:
        """The whole page as HTML text."""
        return build_report(self.sections, self.title, self.as_of, generated_at=generated_at, meta=self.meta)

    def write(self, path: str | Path, generated_at: pd.Timestamp | None = None) -> Path:
        """Write the page to ``path`` (UTF-8); return the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.render(generated_at), encoding="utf-8")
        return p


# ----------------------------------------------------------------------------------------------- helpers


def figure_html(fig: go.Figure, *, div_id: str | None = None) -> str:
    """A plotly figure as a ``<div>`` plus its drawing script, without plotly.js (embedded once per page)."""
    fig.update_layout(template="plotly_white", font={"size": 12}, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=div_id,
            config={"displaylogo": False, "responsive": True},
        )
    )


def note_html(text: str) -> str:
    """A short explanatory paragraph (escaped)."""
    return f'<p class="note">{html.escape(text)}</p>'


def change_html(text: str, good: bool | None) -> str:
    """A change label coloured green (``good``), red (not ``good``) or grey (None: flat or unknown)."""
    cls = "flat" if good is None else ("good" if good else "bad")
    return f'<span class="chg {cls}">{html.escape(text)}</span>'


def table_html(
    df: pd.DataFrame,
    *,
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
    html_columns: Iterable[str] = (),
    numeric_columns: Iterable[str] | None = None,
    caption: str | None = None,
) -> str:
    """A DataFrame as an HTML table; every cell is escaped except those of ``html_columns`` (trusted markup).

    ``formatters`` maps a column to a function rendering its cells; numbers default to thousands
    separators (``12,345`` / ``1,234.57``); NaN shows as ``n/a``. Numeric columns are right-aligned.
    """
    formatters = dict(formatters or {})
    trusted = set(html_columns)
    numeric = (
        set(numeric_columns)
        if numeric_columns is not None
        else {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])}
    )

    def default(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "n/a"
        if isinstance(v, (int, np.integer)):
            return f"{int(v):,}"
        if isinstance(v, (float, np.floating)):
            return f"{float(v):,.2f}"
        return str(v)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, rec, strict=True):
            text = formatters.get(col, default)(v)
            text = text if col in trusted else html.escape(text)
            cls = ' class="num"' if col in numeric else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="data">{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ------------------------------------------------------------------------------------- layer sections


def _label(code: str) -> str:
    if code in (NEW_ROW, GONE_COLUMN):
        return {"(new)": "(新增 new)", "(gone)": "(离开 gone)"}[code]
    return display_name(code)


def _dim_title(dim: str) -> str:
    zh, en = DIMENSION_NAMES[dim]
    return f"{zh} {en}"


def _is_good(metric: str, layer: str, change: float) -> bool | None:
    if pd.isna(change) or abs(change) < 1e-12:
        return None
    rising = change > 0
    if metric in ("size", "share") and layer in UNFAVOURABLE_LAYERS:
        return not rising
    return rising


def _overview_html(
    features: pd.DataFrame,
    kpis: pd.DataFrame,
    alerts: list[Alert],
    thresholds: RfmThresholds,
    config: StrataConfig,
) -> str:
    overall = kpis[kpis["dimension"] == "overall"].iloc[0]
    buyers = int((pd.to_numeric(features["orders_total"], errors="coerce").fillna(0) >= 1).sum())
    cards = [
        ("用户 Users", f"{int(overall['size']):,}"),
        ("购买用户 Buyers", f"{buyers:,}"),
        ("潜客 Prospects", f"{int(overall['size']) - buyers:,}"),
        ("活跃率 Interaction rate", format_metric("interaction_rate", overall["interaction_rate"])),
        ("复购率 Repurchase rate", format_metric("repurchase_rate", overall["repurchase_rate"])),
        ("预警 Alerts", f"{len(alerts):,}"),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="note">{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>'
        for k, v in cards
    )
    lc = config.layers.lifecycle
    vt = config.layers.value_tier
    at = config.layers.activity
    rules = [
        f"Lifecycle: mature if >= {lc.mature_orders_per_30d:g} orders per 30 days (last 365 days), average order "
        f"value >= {lc.mature_avg_order_value:,.0f} or more than {lc.growth_max_repeat_orders} repeat orders; "
        f"declining if a trend ratio <= {lc.declining_trend_ratio:g}; churned if silent > "
        f"{lc.churn_no_interaction_days} days and no order for > max({lc.churn_gap_multiplier:g} x usual gap, "
        f"{lc.churn_min_days_since_order} days).",
        f"RFM ({thresholds.mode}): {thresholds.describe()}.",
        f"Value tier: high if net spend over 365 days > {vt.high_annual_spend:,.0f}, low if < {vt.low_annual_spend:,.0f}.",
        f"Activity tier: sleeping if no interaction for >= {at.sleeping_days} days, core if active on >= "
        f"{at.core_active_days} of the last 30 days.",
    ]
    rules_html = "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rules) + "</ul>"
    return f'<div class="cards">{cards_html}</div><h3>Rules in effect 分层规则</h3>{rules_html}'


def _alerts_html(alerts: list[Alert], config: StrataConfig, has_previous: bool) -> str:
    if not has_previous:
        return note_html("No previous cutoff: alerts compare two cutoffs. 无上期数据，无法比较。")
    rules = "; ".join(
        f"{r.name} ({r.metric}, {r.layer or 'every layer'}, {r.change.replace('_', ' ')} > {r.threshold:g})"
        for r in config.alerts
    )
    if not alerts:
        return f'<div class="ok-box">No alert fired. 无预警。</div>{note_html("Rules: " + rules)}'
    items = "".join(f"<li>{html.escape(a.message)}</li>" for a in alerts)
    return (
        f'<div class="alert-box"><b>{len(alerts):,} alert(s) fired 触发预警</b><ul class="alerts">{items}</ul></div>'
        f"{note_html('Rules: ' + rules)}"
    )


def _sizes_html(kpis: pd.DataFrame, has_previous: bool) -> str:
    import plotly.graph_objects as go

    figs = []
    for dim in LAYER_DIMENSIONS:
        rows = kpis[kpis["dimension"] == dim]
        if rows.empty:
            continue
        labels = [display_name(c) for c in rows["layer"]]
        fig = go.Figure()
        if has_previous:
            fig.add_bar(
                y=labels,
                x=rows["size_prev"],
                orientation="h",
                name="previous 上期",
                marker_color="#cbd5e1",
                text=[f"{v:,.0f}" for v in rows["size_prev"].fillna(0)],
                textposition="auto",
            )
        fig.add_bar(
            y=labels,
            x=rows["size"],
            orientation="h",
            name="current 本期",
            marker_color="#2563eb",
            text=[f"{n:,} ({s:.1%})" for n, s in zip(rows["size"], rows["share"], strict=True)],
            textposition="auto",
        )
        fig.update_layout(
            title=f"{_dim_title(dim)}: users per layer",
            barmode="group",
            height=140 + 42 * len(rows),
            yaxis={"autorange": "reversed"},
            xaxis={"title": "users", "tickformat": ",d"},
            legend={"orientation": "h", "y": -0.15},
        )
        figs.append(figure_html(fig, div_id=f"fig-sizes-{dim}"))
    return '<div class="grid">' + "".join(f"<div>{f}</div>" for f in figs) + "</div>"


def _migration_html(layers: pd.DataFrame, prev_layers: pd.DataFrame | None) -> str:
    if prev_layers is None:
        return note_html("No previous cutoff: migration needs two scorings. 无上期数据。")
    import plotly.graph_objects as go

    parts = []
    for dim in LAYER_DIMENSIONS:
        if dim not in layers.columns or dim not in prev_layers.columns:
            continue
        m = migration_matrix(prev_layers, layers, dim)
        s = migration_summary(m)
        z = m.to_numpy()
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[_label(c) for c in m.columns],
                y=[_label(i) for i in m.index],
                text=[[f"{v:,}" for v in row] for row in z],
                texttemplate="%{text}",
                colorscale="Blues",
                hovertemplate="previous %{y}<br>current %{x}<br>users %{text}<extra></extra>",
                showscale=False,
            )
        )
        fig.update_layout(
            title=f"{_dim_title(dim)}: previous (rows) -> current (columns)",
            height=180 + 40 * len(m.index),
            yaxis={"autorange": "reversed", "title": "previous 上期"},
            xaxis={"title": "current 本期", "side": "bottom"},
        )
        summary = f"stayed 留存 {s['stayed']:,} · moved 迁移 {s['moved']:,} · new 新增 {s['new']:,} · gone 离开 {s['gone']:,}"
        parts.append(f"<div>{figure_html(fig, div_id=f'fig-migration-{dim}')}{note_html(summary)}</div>")
    intro = note_html(
        "Users counted by layer at the previous cutoff (rows) and now (columns); (new) = users first seen now, "
        "(gone) = users no longer present. Row sums are the previous sizes, column sums the current sizes."
    )
    return intro + '<div class="grid">' + "".join(parts) + "</div>"


def _kpi_tables_html(kpis: pd.DataFrame, has_previous: bool) -> str:
    parts = [
        note_html(
            "Repurchase rate: share of users who ordered in the last 90 days with 2+ orders in total. Interaction "
            "rate: share active in the last 30 days. Prospect conversion: share of the previous cutoff's prospects "
            "(by their layer then) who have bought since. Average order value and spend per user: net, last 365 "
            "days. LTV per user: net spend, all time. Changes vs the previous cutoff: green = better, red = worse."
        )
    ]
    for dim in ["overall", *LAYER_DIMENSIONS]:
        rows = kpis[kpis["dimension"] == dim]
        if rows.empty:
            continue
        table = pd.DataFrame({"layer 分层": [display_name(c) for c in rows["layer"]]})
        for m in KPI_METRICS:
            cells = []
            for layer, cur, chg in zip(rows["layer"], rows[m], rows[f"{m}_change"], strict=True):
                cell = html.escape(format_metric(m, cur))
                if has_previous:
                    cell += change_html(format_change(m, chg), _is_good(m, layer, chg))
                cells.append(cell)
            zh, en = METRIC_NAMES[m]
            table[f"{zh} {en}"] = cells
        metric_cols = [c for c in table.columns if c != "layer 分层"]
        parts.append(f"<h3>{html.escape(_dim_title(dim))}</h3>")
        parts.append(table_html(table, html_columns=metric_cols, numeric_columns=metric_cols))
    return "".join(parts)


def box_figure(
    values: pd.Series,
    groups: pd.Series,
    order: Sequence[str],
    *,
    title: str,
    unit: str,
    div_id: str,
    label: Callable[[str], str] = display_name,
) -> str | None:
    """Box plot of ``values`` per group, from precomputed percentiles (the page stays small for any number
    of users): box = 25th-75th percentile with the median, whiskers = 5th and 95th, dashed line = mean.
    Groups without a value are left out; returns None if no group has one."""
    import plotly.graph_objects as go

    v_all = pd.to_numeric(values, errors="coerce")
    stats = []
    for group in order:
        v = v_all[(groups == group).to_numpy()].dropna()
        if v.empty:
            continue
        q = v.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).to_numpy()
        stats.append((f"{label(group)} (n={len(v):,})", q, float(v.mean())))
    if not stats:
        return None
    fig = go.Figure(
        go.Box(
            x=[s[0] for s in stats],
            lowerfence=[s[1][0] for s in stats],
            q1=[s[1][1] for s in stats],
            median=[s[1][2] for s in stats],
            q3=[s[1][3] for s in stats],
            upperfence=[s[1][4] for s in stats],
            mean=[s[2] for s in stats],
            boxmean=True,
            name=title,
            marker_color="#2563eb",
            showlegend=False,
        )
    )
    fig.update_layout(title=title, height=380, yaxis={"title": unit, "tickformat": ","})
    return figure_html(fig, div_id=div_id)


def _grid(parts: Iterable[str | None]) -> str:
    return '<div class="grid">' + "".join(f"<div>{p}</div>" for p in parts if p) + "</div>"


_BOX_NOTE = (
    "Box = 25th-75th percentile with the median, whiskers = 5th and 95th percentiles, dashed line = mean; "
    "users with no value (e.g. prospects for days since last order) are left out."
)


def _distributions_html(features: pd.DataFrame, layers: pd.DataFrame) -> str:
    joined = layers[[ENTITY_KEY, "lifecycle"]].merge(
        features.assign(**{ENTITY_KEY: features[ENTITY_KEY].astype(str)}), on=ENTITY_KEY, how="left"
    )
    figs = [
        box_figure(
            joined[col],
            joined["lifecycle"],
            LAYER_DIMENSIONS["lifecycle"],
            title=title,
            unit=unit,
            div_id=f"fig-dist-{col}",
        )
        for col, (title, unit) in DISTRIBUTION_FEATURES.items()
        if col in joined.columns
    ]
    return note_html("Per lifecycle stage. " + _BOX_NOTE) + _grid(figs)


def layer_sections(
    features: pd.DataFrame,
    layers: pd.DataFrame,
    config: StrataConfig,
    *,
    prev_features: pd.DataFrame | None = None,
    prev_layers: pd.DataFrame | None = None,
    kpis: pd.DataFrame | None = None,
    alerts: list[Alert] | None = None,
) -> list[Section]:
    """The rule-layer sections of the report: overview, alerts, layer sizes, migration, KPIs, distributions.

    ``kpis`` and ``alerts`` default to :func:`features.kpis.kpi_table` and
    :func:`features.alerts.evaluate_alerts` of the given tables (pass them if already computed).
    """
    has_previous = prev_features is not None and prev_layers is not None
    if kpis is None:
        kpis = kpi_table(features, layers, prev_features, prev_layers)
    if alerts is None:
        alerts = evaluate_alerts(kpis, config.alerts) if has_previous else []
    thresholds = rfm_thresholds(features, config.layers.rfm)
    return [
        Section("overview", "Overview 概览", _overview_html(features, kpis, alerts, thresholds, config)),
        Section("alerts", f"Alerts 预警 ({len(alerts):,})", _alerts_html(alerts, config, has_previous)),
        Section("layer-sizes", "Layer sizes 分层规模", _sizes_html(kpis, has_previous)),
        Section("migration", "Layer migration 分层迁移", _migration_html(layers, prev_layers)),
        Section("kpis", "KPIs by layer 分层指标", _kpi_tables_html(kpis, has_previous)),
        Section(
            "distributions",
            "Key features by lifecycle stage 分层特征分布",
            _distributions_html(features, layers),
        ),
    ]


__all__ = [
    "Report",
    "Section",
    "build_report",
    "change_html",
    "figure_html",
    "layer_sections",
    "box_figure",
    "note_html",
    "table_html",
]
