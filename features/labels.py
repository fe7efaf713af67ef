"""Labels: what happened in the window ``(as_of, as_of + horizon]`` after a cutoff.

Computed for exactly the users the feature table has at ``as_of`` (the same known-user rule), from
orders only: ``label_churn`` is 1 if the user made no paid order in the window; ``label_value`` is the
net spend in the window (paid minus refunded amounts dated in the window), floored at 0;
``label_convert`` is, for prospects (no paid order at or before ``as_of``), 1 if they made a first paid
order in the window, and NaN for buyers. All three are float64.
"""

from __future__ import annotations

import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import StrataError
from features.pipeline import (
    DuckDBEngine,
    SourceColumns,
    dedupe_orders_sql,
    entities_sql,
    filter_events_sql,
    filter_orders_sql,
    filter_users_sql,
)

LABEL_COLUMNS: tuple[str, ...] = ("label_churn", "label_value", "label_convert")


def label_queries(
    as_of: pd.Timestamp,
    horizon_days: int,
    sources: SourceColumns,
    *,
    dedupe_orders: bool = True,
) -> str:
    """The engine-neutral label query (DuckDB dialect) over tables ``orders``/``events``/``users``.

    Returns ``user_id, label_churn, label_value, label_convert`` for the users known at ``as_of``,
    ordered by ``user_id``.
    """
    if horizon_days <= 0:
        raise StrataError(f"label horizon must be a positive number of days, got {horizon_days}")
    as_of = parse_as_of(as_of)
    end = as_of + pd.Timedelta(days=horizon_days)
    past = filter_orders_sql(as_of, None, sources.orders)
    future = filter_orders_sql(end, None, sources.orders, after=as_of)
    dedupe = dedupe_orders_sql if dedupe_orders else (lambda src: f"SELECT * FROM {src}")
    ctes = [
        ("orders_f", past),
        ("orders_d", dedupe("orders_f")),
        ("events_f", filter_events_sql(as_of, None, sources.events)),
        ("users_f", filter_users_sql(as_of, sources.users)),
        ("known", entities_sql("orders_d", "events_f", "users_f")),
        ("paid_before", "SELECT user_id, SUM(CASE WHEN paid THEN 1 ELSE 0 END) AS n_paid FROM orders_d GROUP BY user_id"),
        ("window_f", future),
        ("window_d", dedupe("window_f")),
        ("in_window", "SELECT user_id, SUM(CASE WHEN paid THEN 1 ELSE 0 END) AS n_paid, "
                      "SUM(signed_amount) AS net_spend FROM window_d GROUP BY user_id"),
    ]
    with_clause = ",\n".join(f"{name} AS (\n  {body}\n)" for name, body in ctes)
    return (
        f"WITH {with_clause}\n"
        "SELECT k.user_id AS user_id, "
        "CAST(CASE WHEN COALESCE(w.n_paid, 0) = 0 THEN 1 ELSE 0 END AS DOUBLE) AS label_churn, "
        "CAST(GREATEST(COALESCE(w.net_spend, 0), 0) AS DOUBLE) AS label_value, "
        "CAST(CASE WHEN COALESCE(p.n_paid, 0) = 0 THEN (CASE WHEN COALESCE(w.n_paid, 0) > 0 THEN 1 ELSE 0 END) "
        "END AS DOUBLE) AS label_convert "
        "FROM known AS k LEFT JOIN in_window AS w ON w.user_id = k.user_id "
        "LEFT JOIN paid_before AS p ON p.user_id = k.user_id ORDER BY user_id"
    )


def labels_from_engine(engine: DuckDBEngine, as_of: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """:func:`build_labels` on an already loaded :class:`~features.pipeline.DuckDBEngine`."""
    sql = label_queries(as_of, horizon_days, engine.sources, dedupe_orders=engine.has_duplicate_orders)
    raw = engine.query(sql, f"computing labels as of {parse_as_of(as_of).isoformat()}")
    out = pd.DataFrame({ENTITY_KEY: raw[ENTITY_KEY].astype(str).to_numpy(dtype=object)})
    for col in LABEL_COLUMNS:
        out[col] = raw[col].astype("float64").to_numpy()
    if not out[ENTITY_KEY].is_monotonic_increasing:
        out = out.sort_values(ENTITY_KEY, kind="stable").reset_index(drop=True)
    return out


def build_labels(
    dataset: Dataset, as_of: pd.Timestamp, horizon_days: int, config: StrataConfig | None = None
) -> pd.DataFrame:
    """Labels of every user known at ``as_of`` over the window ``(as_of, as_of + horizon_days]``.

    ``config`` sets the engine's memory limit and spill directory (``[features] engine_memory_limit`` and
    ``engine_temp_directory``; None: DuckDB's defaults); ``horizon_days`` is given on its own, so that a
    caller can ask for another window than ``[labels] horizon_days``.

    Returns
    -------
    DataFrame ``user_id`` (str), ``label_churn`` (1.0 if no paid order in the window, else 0.0),
    ``label_value`` (net spend in the window, shop currency, floored at 0) and ``label_convert``
    (prospects: 1.0 if a first paid order in the window, else 0.0; NaN for buyers), sorted by user.
    """
    with DuckDBEngine(dataset, copy=False, config=config) as engine:
        return labels_from_engine(engine, as_of, horizon_days)
