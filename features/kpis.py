"""Per-layer KPIs operators watch, at one cutoff and compared with the previous one.

One row per (dimension, layer): the whole base first (``overall`` / ``all``), then every code of each
layer dimension in display order (layers with no user have size 0 and NaN rates). Definitions:

- ``size``: users in the layer; ``share``: size / all users (0..1).
- ``repurchase_rate`` (复购率): among the layer's users with a paid order in the last 90 days
  (``orders_90d`` >= 1), the share with 2 or more paid orders in total (0..1; NaN with no such user).
- ``interaction_rate`` (活跃率): share of the layer with any order or event in the last 30 days
  (``active_days_30d`` > 0).
- ``conversion_rate`` (潜客转化率): among users who were prospects (no paid order) at the *previous*
  cutoff, grouped by their layer *at that cutoff*, the share with a paid order at the current cutoff.
  Users gone from the current table count as not converted. NaN without a previous cutoff.
- ``avg_order_value`` (客单价): net spend / paid orders over the last 365 days (shop currency).
- ``spend_per_user``: net spend over the last 365 days per user of the layer, buyers or not.
- ``ltv_per_user``: all-time net spend per user of the layer (historical LTV, shop currency).

:func:`kpi_table` adds ``<metric>_prev`` (the same KPI at the previous cutoff) and ``<metric>_change``
(current minus previous: users for ``size``, fraction points for rates, currency for amounts).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import ENTITY_KEY
from features.errors import StrataError
from features.layer_names import DIMENSION_NAMES, LAYER_DIMENSIONS, LAYER_NAMES, require_columns

KPI_METRICS: tuple[str, ...] = (
    "size",
    "share",
    "repurchase_rate",
    "interaction_rate",
    "conversion_rate",
    "avg_order_value",
    "spend_per_user",
    "ltv_per_user",
)
RATE_METRICS: frozenset[str] = frozenset({"share", "repurchase_rate", "interaction_rate", "conversion_rate"})
MONEY_METRICS: frozenset[str] = frozenset({"avg_order_value", "spend_per_user", "ltv_per_user"})

METRIC_NAMES: dict[str, tuple[str, str]] = {
    "size": ("人数", "Users"),
    "share": ("占比", "Share"),
    "repurchase_rate": ("复购率", "Repurchase rate"),
    "interaction_rate": ("活跃率", "Interaction rate"),
    "conversion_rate": ("潜客转化率", "Prospect conversion"),
    "avg_order_value": ("客单价", "Avg order value"),
    "spend_per_user": ("人均年消费", "Spend per user (365d)"),
    "ltv_per_user": ("人均累计消费", "LTV per user"),
}

OVERALL = ("overall", "all")
REPURCHASE_WINDOW_DAYS = 90
SPEND_WINDOW_DAYS = 365
KPI_FEATURE_COLUMNS: tuple[str, ...] = (
    "orders_total",
    f"orders_{REPURCHASE_WINDOW_DAYS}d",
    "active_days_30d",
    f"orders_{SPEND_WINDOW_DAYS}d",
    f"spend_{SPEND_WINDOW_DAYS}d",
    "spend_total",
)


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64").fillna(0.0)


def _user_index(frame: pd.DataFrame, which: str) -> pd.DataFrame:
    require_columns(frame, [ENTITY_KEY], which)
    out = frame.copy()
    out.index = out[ENTITY_KEY].astype(str)
    if out.index.has_duplicates:
        dup = out.index[out.index.duplicated()][0]
        raise StrataError(f"{which}: column {ENTITY_KEY} has duplicate value {dup!r}")
    return out


def _joined(features: pd.DataFrame, layers: pd.DataFrame, which: str) -> pd.DataFrame:
    require_columns(features, KPI_FEATURE_COLUMNS, f"the KPIs ({which} cutoff)")
    f = _user_index(features, f"{which} features")
    lay = _user_index(layers, f"{which} layers")
    dims = [d for d in LAYER_DIMENSIONS if d in lay.columns]
    if not dims:
        raise StrataError(f"{which} layers: no layer column (one of {', '.join(LAYER_DIMENSIONS)})")
    missing = lay.index.difference(f.index)
    if len(missing):
        raise StrataError(
            f"{which} layers: {len(missing):,} user_id(s) not in the feature table, e.g. {missing[0]!r}"
        )
    per_user = pd.DataFrame(index=lay.index)
    orders_total = _num(f, "orders_total").reindex(lay.index)
    recent = _num(f, f"orders_{REPURCHASE_WINDOW_DAYS}d").reindex(lay.index) >= 1
    per_user["n"] = 1.0
    per_user["recent_buyer"] = recent.astype(float)
    per_user["recent_repeat"] = (recent & (orders_total >= 2)).astype(float)
    per_user["interacted"] = (_num(f, "active_days_30d").reindex(lay.index) > 0).astype(float)
    per_user["orders_w"] = _num(f, f"orders_{SPEND_WINDOW_DAYS}d").reindex(lay.index)
    per_user["spend_w"] = _num(f, f"spend_{SPEND_WINDOW_DAYS}d").reindex(lay.index)
    per_user["spend_total"] = _num(f, "spend_total").reindex(lay.index)
    for d in dims:
        per_user[d] = lay[d].astype(str)
    return per_user


def _canonical_rows(seen: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The overall row, then every known code of each dimension present, then unknown codes sorted."""
    rows = [OVERALL]
    for dim, codes in LAYER_DIMENSIONS.items():
        if dim in seen:
            rows += [(dim, c) for c in codes] + [(dim, c) for c in sorted(seen[dim] - set(codes))]
    return rows


def _div(a: pd.Series, b: pd.Series) -> pd.Series:
    return a / b.replace(0.0, np.nan)


def _conversion(
    features: pd.DataFrame, prev_features: pd.DataFrame, prev_layers: pd.DataFrame
) -> dict[tuple[str, str], float]:
    buyers_now = set(features.loc[_num(features, "orders_total") >= 1, ENTITY_KEY].astype(str))
    pf = _user_index(prev_features, "previous features")
    pl = _user_index(prev_layers, "previous layers")
    prospect = (_num(pf, "orders_total") < 1).reindex(pl.index).fillna(False).astype(bool)
    frame = pl.loc[prospect.to_numpy()].copy()
    frame["converted"] = frame.index.isin(list(buyers_now)).astype(float)
    out: dict[tuple[str, str], float] = {}
    if len(frame):
        out[OVERALL] = float(frame["converted"].mean())
    for dim in LAYER_DIMENSIONS:
        if dim in frame.columns:
            for code, rate in frame.groupby(frame[dim].astype(str))["converted"].mean().items():
                out[(dim, str(code))] = float(rate)
    return out


def layer_kpis(
    features: pd.DataFrame,
    layers: pd.DataFrame,
    *,
    prev_features: pd.DataFrame | None = None,
    prev_layers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """KPIs of every layer at one cutoff (see the module docstring for definitions and units).

    ``prev_features``/``prev_layers`` (the previous cutoff) are only used for ``conversion_rate``.

    Returns
    -------
    DataFrame with columns ``dimension``, ``layer`` and one column per :data:`KPI_METRICS`.
    """
    per_user = _joined(features, layers, "current")
    total = float(len(per_user))
    sums_cols = ["n", "recent_buyer", "recent_repeat", "interacted", "orders_w", "spend_w", "spend_total"]
    parts = [per_user[sums_cols].sum().to_frame().T.assign(dimension=OVERALL[0], layer=OVERALL[1])]
    for dim in LAYER_DIMENSIONS:
        if dim in per_user.columns:
            g = per_user.groupby(dim)[sums_cols].sum().reset_index().rename(columns={dim: "layer"})
            parts.append(g.assign(dimension=dim))
    sums = pd.concat(parts, ignore_index=True).set_index(["dimension", "layer"])
    sums = sums.reindex(
        pd.MultiIndex.from_tuples(
            _canonical_rows({d: set(per_user[d]) for d in LAYER_DIMENSIONS if d in per_user.columns}),
            names=["dimension", "layer"],
        ),
        fill_value=0.0,
    )
    out = pd.DataFrame(index=sums.index)
    out["size"] = sums["n"].astype("int64")
    out["share"] = sums["n"] / total if total else np.nan
    out["repurchase_rate"] = _div(sums["recent_repeat"], sums["recent_buyer"])
    out["interaction_rate"] = _div(sums["interacted"], sums["n"])
    conv = (
        _conversion(features, prev_features, prev_layers)
        if prev_features is not None and prev_layers is not None
        else {}
    )
    out["conversion_rate"] = [conv.get(key, np.nan) for key in out.index]
    out["avg_order_value"] = _div(sums["spend_w"], sums["orders_w"])
    out["spend_per_user"] = _div(sums["spend_w"], sums["n"])
    out["ltv_per_user"] = _div(sums["spend_total"], sums["n"])
    return out.reset_index()


def kpi_table(
    features: pd.DataFrame,
    layers: pd.DataFrame,
    prev_features: pd.DataFrame | None = None,
    prev_layers: pd.DataFrame | None = None,
    *,
    before_prev_features: pd.DataFrame | None = None,
    before_prev_layers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """KPIs per layer now, at the previous cutoff, and their change.

    Parameters
    ----------
    features, layers
        Feature and layer tables at the current cutoff.
    prev_features, prev_layers
        The same at the previous cutoff (optional: without them ``*_prev`` and ``*_change`` are NaN).
    before_prev_features, before_prev_layers
        The cutoff before the previous one, only needed for the previous value of ``conversion_rate``.

    Returns
    -------
    DataFrame with ``dimension``, ``layer``, ``name_zh``, ``name_en``, then for every metric ``m`` of
    :data:`KPI_METRICS` the columns ``m``, ``m_prev`` and ``m_change`` (current minus previous).
    """
    current = layer_kpis(features, layers, prev_features=prev_features, prev_layers=prev_layers)
    keys = ["dimension", "layer"]
    if prev_features is not None and prev_layers is not None:
        previous = layer_kpis(
            prev_features, prev_layers, prev_features=before_prev_features, prev_layers=before_prev_layers
        )
        table = current.merge(previous, on=keys, how="outer", suffixes=("", "_prev"), sort=False)
    else:
        table = current.copy()
        for m in KPI_METRICS:
            table[f"{m}_prev"] = np.nan
    # Outer merge may append layers seen only previously; keep the canonical order.
    seen = {d: set(table.loc[table["dimension"] == d, "layer"]) for d in LAYER_DIMENSIONS}
    order = {key: i for i, key in enumerate(_canonical_rows({d: v for d, v in seen.items() if v}))}
    table = table.iloc[
        np.argsort([order[(d, c)] for d, c in zip(table["dimension"], table["layer"], strict=True)])
    ]
    table = table.reset_index(drop=True)
    for m in KPI_METRICS:
        if m == "size":
            table[m] = table[m].fillna(0).astype("int64")
            table[f"{m}_prev"] = table[f"{m}_prev"].astype("float64")
        elif m == "share":
            table[m] = table[m].fillna(0.0)
        table[f"{m}_change"] = table[m].astype("float64") - table[f"{m}_prev"].astype("float64")
    table.insert(
        2, "name_zh", [_names(d, c)[0] for d, c in zip(table["dimension"], table["layer"], strict=True)]
    )
    table.insert(
        3, "name_en", [_names(d, c)[1] for d, c in zip(table["dimension"], table["layer"], strict=True)]
    )
    metric_cols = [col for m in KPI_METRICS for col in (m, f"{m}_prev", f"{m}_change")]
    return table[["dimension", "layer", "name_zh", "name_en", *metric_cols]]


def _names(dimension: str, layer: str) -> tuple[str, str]:
    if (dimension, layer) == OVERALL:
        return DIMENSION_NAMES["overall"]
    return LAYER_NAMES.get(layer, (layer, layer))


def format_metric(metric: str, value: float) -> str:
    """A KPI value as operators read it: ``12,345`` users, ``12.3%`` rates, ``1,234.56`` currency."""
    if value is None or pd.isna(value):
        return "n/a"
    if metric in RATE_METRICS:
        return f"{value:.1%}"
    if metric in MONEY_METRICS:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def format_change(metric: str, change: float) -> str:
    """A KPI change with its sign: ``+1,234`` users, ``-1.2 pp`` (percentage points) rates, ``+12.30`` currency."""
    if change is None or pd.isna(change):
        return "n/a"
    if metric in RATE_METRICS:
        return f"{change * 100:+.1f} pp"
    if metric in MONEY_METRICS:
        return f"{change:+,.2f}"
    return f"{change:+,.0f}"
