"""Point-in-time features: the definitions of :mod:`features.definitions` composed into SQL and run.

The point-in-time logic is a chain of small named steps, each a SQL builder that can be run alone:

1. :func:`filter_orders_sql`, :func:`filter_events_sql`, :func:`filter_users_sql`: keep rows at or
   before ``as_of`` and normalise optional columns (absent ``status`` means paid, absent ``category`` or
   ``value`` is NULL) so that the definitions never depend on which optional columns exist;
2. :func:`dedupe_orders_sql`: one row per ``(user_id, order_id, status)``, the earliest;
3. :func:`aggregate_sql`, :func:`order_days_sql`, :func:`event_type_counts_sql`, :func:`activity_sql`:
   one aggregate pass per source (conditional aggregates for every window and half-life);
4. :func:`entities_sql`: the users known at ``as_of``;
5. :func:`join_sql` and :func:`derive_sql`: left-join the aggregates onto the users, fill defaults,
   compute the row-level derived features.

:func:`feature_queries` returns the whole query as **engine-neutral SQL** over tables named ``orders``,
``events`` and ``users`` (DuckDB dialect, or transpiled by SQLGlot for ``dialect="spark"``); the Spark
path registers its DataFrames under those names, runs that SQL and passes the result through
:func:`finalize_features`, exactly as :func:`build_features` does with DuckDB.

Both engines must run with the session time zone set to UTC (``MONTH()`` depends on it); ages use epoch
seconds and are time-zone independent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.definitions import (
    ACTIVITY_WINDOW_DAYS,
    EVENT_TYPE_WINDOWS_DAYS,
    STAGES,
    FeatureDef,
    Stage,
    decay_rate,
    double,
    feature_definitions,
    output_features,
)

if TYPE_CHECKING:
    import duckdb

    from features.config import StrataConfig

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86400
_AGGREGATE_CTE: dict[Stage, str] = {
    "orders": "order_aggs",
    "order_days": "rhythm_aggs",
    "events": "event_aggs",
    "activity": "activity_aggs",
    "users": "user_aggs",
}


@dataclass(frozen=True)
class SourceColumns:
    """Which tables and optional columns the input has (the SQL adapts its filter steps to them).

    ``events`` / ``users`` are None when the table is absent or empty.
    """

    orders: frozenset[str]
    events: frozenset[str] | None = None
    users: frozenset[str] | None = None

    @classmethod
    def of(cls, dataset: Dataset) -> SourceColumns:
        """The tables and columns present in ``dataset``."""
        return cls(
            orders=frozenset(dataset.orders.columns),
            events=frozenset(dataset.events.columns) if dataset.has_events else None,  # type: ignore[union-attr]
            users=frozenset(dataset.users.columns) if dataset.has_users else None,  # type: ignore[union-attr]
        )


# --------------------------------------------------------------------------- literals


def timestamp_literal(ts: pd.Timestamp) -> str:
    """A UTC timestamp literal with an explicit offset (same instant in DuckDB and Spark)."""
    ts = parse_as_of(ts)
    return f"CAST('{ts.strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00' AS TIMESTAMPTZ)"


def epoch_seconds(ts: pd.Timestamp) -> float:
    """Seconds since 1970-01-01 UTC (microsecond resolution, like both engines)."""
    return parse_as_of(ts).value // 1000 / 1e6


def _age_days(column: str, as_of: pd.Timestamp) -> str:
    return f"({double(epoch_seconds(as_of))} - EPOCH({column})) / {double(_SECONDS_PER_DAY)}"


def _decay_columns(config: StrataConfig) -> list[str]:
    return [
        f"EXP(age_days * {double(-decay_rate(h))}) AS w_hl{h}" for h in sorted(set(config.features.half_lives_days))
    ]


# --------------------------------------------------------------------------- step 1: filter


def filter_orders_sql(
    as_of: pd.Timestamp,
    config: StrataConfig,
    order_columns: Iterable[str],
    *,
    after: pd.Timestamp | None = None,
) -> str:
    """Rows of ``orders`` with ``after < ordered_at <= as_of``, normalised (see the module docstring).

    Output columns: ``user_id, order_id, ordered_at, status, amount, paid, refunded, signed_amount,
    category, month, day_num, age_days, w_hl{h}``; ``age_days`` is measured back from ``as_of``.
    """
    cols = set(order_columns)
    status = "status" if "status" in cols else "CAST(NULL AS VARCHAR)"
    order_id = "order_id" if "order_id" in cols else "CAST(NULL AS VARCHAR)"
    category = "category" if "category" in cols else "CAST(NULL AS VARCHAR)"
    cond = f"ordered_at <= {timestamp_literal(as_of)}"
    if after is not None:
        cond = f"ordered_at > {timestamp_literal(after)} AND {cond}"
    base = (
        f"SELECT user_id, {order_id} AS order_id, ordered_at, {status} AS status, "
        f"CAST(amount AS DOUBLE) AS amount, {category} AS category, "
        f"{_age_days('ordered_at', as_of)} AS age_days "
        f"FROM orders WHERE user_id IS NOT NULL AND {cond}"
    )
    return (
        "SELECT user_id, order_id, ordered_at, status, amount, category, age_days, "
        "(status IS NULL OR status = 'paid') AS paid, "
        "(status IS NOT NULL AND status = 'refunded') AS refunded, "
        "CASE WHEN status IS NULL OR status = 'paid' THEN amount "
        "WHEN status = 'refunded' THEN -amount ELSE CAST(0 AS DOUBLE) END AS signed_amount, "
        "MONTH(ordered_at) AS month, "
        f"CAST(FLOOR(EPOCH(ordered_at) / {double(_SECONDS_PER_DAY)}) AS BIGINT) AS day_num, "
        f"{', '.join(_decay_columns(config))} "
        f"FROM ({base}) AS o"
    )


def filter_events_sql(as_of: pd.Timestamp, config: StrataConfig, event_columns: Iterable[str] | None) -> str:
    """Rows of ``events`` at or before ``as_of``: ``user_id, event_type, value, age_days, w_hl{h}``.

    With ``event_columns=None`` (no events table) it is an empty relation of the same shape, so the
    engagement features take their defaults (0 counts, NaN means) exactly as for a user without events.
    """
    if event_columns is None:
        decay = ", ".join(f"CAST(NULL AS DOUBLE) AS w_hl{h}" for h in sorted(set(config.features.half_lives_days)))
        return (
            "SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS VARCHAR) AS event_type, "
            f"CAST(NULL AS DOUBLE) AS value, CAST(NULL AS DOUBLE) AS age_days, {decay} WHERE 1 = 0"
        )
    cols = set(event_columns)
    value = "CAST(value AS DOUBLE)" if "value" in cols else "CAST(NULL AS DOUBLE)"
    base = (
        f"SELECT user_id, event_type, {value} AS value, {_age_days('occurred_at', as_of)} AS age_days "
        f"FROM events WHERE user_id IS NOT NULL AND occurred_at <= {timestamp_literal(as_of)}"
    )
    return f"SELECT user_id, event_type, value, age_days, {', '.join(_decay_columns(config))} FROM ({base}) AS e"


def filter_users_sql(as_of: pd.Timestamp, user_columns: Iterable[str] | None) -> str:
    """One row per user of ``users`` visible at ``as_of``: ``user_id, joined_age_days, source_channel, has_joined``.

    A user row is visible when ``joined_at`` is at or before ``as_of`` or unknown; a user with unknown
    ``joined_at`` only becomes known through orders or events (``has_joined = 0``). Duplicate rows of a
    user are merged deterministically (earliest join, smallest channel name).
    """
    if user_columns is None:
        return (
            "SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS DOUBLE) AS joined_age_days, "
            "CAST(NULL AS VARCHAR) AS source_channel, 0 AS has_joined WHERE 1 = 0"
        )
    cols = set(user_columns)
    channel = "source_channel" if "source_channel" in cols else "CAST(NULL AS VARCHAR)"
    if "joined_at" in cols:
        age = _age_days("joined_at", as_of)
        joined = "CASE WHEN joined_at IS NOT NULL THEN 1 ELSE 0 END"
        cond = f"(joined_at IS NULL OR joined_at <= {timestamp_literal(as_of)})"
    else:
        age, joined, cond = "CAST(NULL AS DOUBLE)", "0", "1 = 1"
    return (
        f"SELECT user_id, MAX({age}) AS joined_age_days, MIN({channel}) AS source_channel, "
        f"MAX({joined}) AS has_joined FROM users WHERE user_id IS NOT NULL AND {cond} GROUP BY user_id"
    )


# --------------------------------------------------------------------------- step 2: dedupe


def dedupe_orders_sql(source: str) -> str:
    """Keep one row per ``(user_id, order_id, status)`` of relation ``source``: the earliest.

    Applied after the cutoff filter, so a duplicate dated after ``as_of`` can never replace one before it.
    Rows without ``order_id`` are kept as they are.
    """
    return (
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, order_id, status "
        "ORDER BY ordered_at, amount) AS dup_rank "
        f"FROM {source}) AS d WHERE dup_rank = 1 OR order_id IS NULL"
    )


# --------------------------------------------------------------------------- step 3: aggregate


def _stage_defs(defs: Sequence[FeatureDef], stage: Stage) -> list[FeatureDef]:
    return [d for d in defs if d.stage == stage]


def aggregate_sql(defs: Sequence[FeatureDef], stage: Stage, source: str) -> str:
    """One ``GROUP BY user_id`` pass over ``source`` computing every definition of ``stage``."""
    exprs = ", ".join(f"{d.sql_expression} AS {d.name}" for d in _stage_defs(defs, stage))
    return f"SELECT user_id, {exprs} FROM {source} GROUP BY user_id"


def event_type_counts_sql(events_source: str, config: StrataConfig) -> str:
    """Per ``(user_id, event_type)``: ``n``, ``n_{w}d``, ``decay_hl{h}``, ``min_age_days``, ``value_sum``, ``value_n``.

    The ``events`` stage aggregates (and pivots) these few rows per user instead of every event row.
    """
    windows = ", ".join(f"SUM(CASE WHEN age_days < {w} THEN 1 ELSE 0 END) AS n_{w}d" for w in EVENT_TYPE_WINDOWS_DAYS)
    decay = ", ".join(f"SUM(w_hl{h}) AS decay_hl{h}" for h in sorted(set(config.features.half_lives_days)))
    return (
        f"SELECT user_id, event_type, COUNT(*) AS n, {windows}, {decay}, MIN(age_days) AS min_age_days, "
        f"SUM(value) AS value_sum, COUNT(value) AS value_n FROM {events_source} GROUP BY user_id, event_type"
    )


def order_days_sql(orders_source: str) -> str:
    """Distinct paid-order days per user with the gap (days) since the previous order day."""
    days = (
        f"SELECT user_id, day_num, SUM(amount) AS day_amount FROM {orders_source} "
        "WHERE paid GROUP BY user_id, day_num"
    )
    return (
        "SELECT user_id, day_num, day_amount, "
        "day_num - LAG(day_num) OVER (PARTITION BY user_id ORDER BY day_num) AS gap "
        f"FROM ({days}) AS od"
    )


def activity_sql(orders_source: str, events_source: str) -> str:
    """Order and event rows of the last 30 days as ``(user_id, rel_day)``, ``rel_day`` in 0..29."""
    w = ACTIVITY_WINDOW_DAYS
    rel = "CAST(FLOOR(age_days) AS BIGINT) AS rel_day"
    return (
        f"SELECT user_id, {rel} FROM {orders_source} WHERE age_days < {w} "
        f"UNION ALL SELECT user_id, {rel} FROM {events_source} WHERE age_days < {w}"
    )


def users_stage_sql(defs: Sequence[FeatureDef], users_source: str) -> str:
    """The ``users`` stage: a row-level projection of the visible user rows."""
    exprs = ", ".join(f"{d.sql_expression} AS {d.name}" for d in _stage_defs(defs, "users"))
    return f"SELECT user_id, {exprs} FROM {users_source}"


# --------------------------------------------------------------------------- step 4: entities


def entities_sql(orders_source: str, events_source: str, users_source: str) -> str:
    """Users known at ``as_of``: any order or event row in the (filtered) sources, or joined by then."""
    return (
        f"SELECT user_id FROM {orders_source} UNION SELECT user_id FROM {events_source} "
        f"UNION SELECT user_id FROM {users_source} WHERE has_joined = 1"
    )


# --------------------------------------------------------------------------- step 5: join and derive


def join_sql(defs: Sequence[FeatureDef], entities: str = "entities") -> str:
    """Left-join every stage's aggregates onto ``entities``; users missing from a stage get its defaults."""
    selects, joins = [f"e.{ENTITY_KEY} AS {ENTITY_KEY}"], []
    for stage, cte in _AGGREGATE_CTE.items():
        stage_defs = _stage_defs(defs, stage)
        if not stage_defs:
            continue
        alias = cte.split("_")[0][:2] + "_"
        joins.append(f"LEFT JOIN {cte} AS {alias} ON {alias}.{ENTITY_KEY} = e.{ENTITY_KEY}")
        for d in stage_defs:
            col = f"{alias}.{d.name}"
            selects.append(f"COALESCE({col}, {d.default}) AS {d.name}" if d.default is not None else f"{col} AS {d.name}")
    return f"SELECT {', '.join(selects)} FROM {entities} AS e {' '.join(joins)}"


def derive_sql(defs: Sequence[FeatureDef], as_of: pd.Timestamp, source: str = "joined") -> str:
    """Visible features in table order, cast to DOUBLE (or VARCHAR), derived ones computed row-wise."""
    month = str(parse_as_of(as_of).month)
    selects = [ENTITY_KEY]
    for d in defs:
        if d.hidden:
            continue
        expr = d.sql_expression.replace("{as_of_month}", month) if d.stage == "derived" else d.name
        sql_type = "VARCHAR" if d.dtype == "string" else "DOUBLE"
        selects.append(f"CAST({expr} AS {sql_type}) AS {d.name}")
    return f"SELECT {', '.join(selects)} FROM {source} ORDER BY {ENTITY_KEY}"


# --------------------------------------------------------------------------- composition


def feature_queries(
    config: StrataConfig,
    as_of: pd.Timestamp,
    dialect: str = "duckdb",
    *,
    has_events: bool = True,
    has_users: bool = True,
    order_columns: Iterable[str] = ("user_id", "order_id", "ordered_at", "amount", "status", "category"),
    event_columns: Iterable[str] = ("user_id", "occurred_at", "event_type", "value"),
    user_columns: Iterable[str] = ("user_id", "joined_at", "source_channel"),
) -> str:
    """The engine-neutral feature query for ``as_of``: one SQL statement over ``orders``/``events``/``users``.

    This is the function the Spark path uses: ``spark.sql(feature_queries(cfg, as_of, "spark", ...))``
    after registering temp views named ``orders``, ``events`` (if ``has_events``) and ``users`` (if
    ``has_users``), then :func:`finalize_features` on the collected result. The result has ``user_id``
    and the visible features (DOUBLE / VARCHAR), ordered by ``user_id``; ``as_of`` is added by
    :func:`finalize_features`.

    Parameters
    ----------
    dialect : ``duckdb`` (as written) or any SQLGlot write dialect, e.g. ``spark``.
    order_columns, event_columns, user_columns : columns present in each table (optional ones may be absent).
    """
    sources = SourceColumns(
        orders=frozenset(order_columns),
        events=frozenset(event_columns) if has_events else None,
        users=frozenset(user_columns) if has_users else None,
    )
    sql = _compose(config, parse_as_of(as_of), sources)
    if dialect == "duckdb":
        return sql
    import sqlglot

    return sqlglot.transpile(sql, read="duckdb", write=dialect)[0]


def _compose(config: StrataConfig, as_of: pd.Timestamp, sources: SourceColumns) -> str:
    defs = feature_definitions(config)
    unknown = {d.stage for d in defs} - set(STAGES)
    if unknown:
        raise ValueError(f"unknown feature stages: {sorted(unknown)}")
    ctes = [
        ("orders_f", filter_orders_sql(as_of, config, sources.orders)),
        ("orders_d", dedupe_orders_sql("orders_f")),
        ("events_f", filter_events_sql(as_of, config, sources.events)),
        ("users_f", filter_users_sql(as_of, sources.users)),
        ("order_aggs", aggregate_sql(defs, "orders", "orders_d")),
        ("order_days", order_days_sql("orders_d")),
        ("rhythm_aggs", aggregate_sql(defs, "order_days", "order_days")),
        ("event_types", event_type_counts_sql("events_f", config)),
        ("event_aggs", aggregate_sql(defs, "events", "event_types")),
        ("activity_rows", activity_sql("orders_d", "events_f")),
        ("activity_aggs", aggregate_sql(defs, "activity", "activity_rows")),
        ("user_aggs", users_stage_sql(defs, "users_f")),
        ("entities", entities_sql("order_aggs", "event_aggs", "users_f")),
        ("joined", join_sql(defs)),
    ]
    with_clause = ",\n".join(f"{name} AS (\n  {body}\n)" for name, body in ctes)
    return f"WITH {with_clause}\n{derive_sql(defs, as_of)}"


def finalize_features(raw: pd.DataFrame, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
    """Turn an engine's query result into the feature-table contract (any engine, same output).

    Returns ``user_id`` (str), ``as_of`` (UTC timestamp), then the features in catalog order: float64
    (NaN where undefined) or str; rows sorted by ``user_id``, index 0..n-1.
    """
    defs = output_features(config)
    missing = [c for c in [ENTITY_KEY, *(d.name for d in defs)] if c not in raw.columns]
    if missing:
        raise ValueError(f"feature query result lacks columns {missing}")
    out = pd.DataFrame({ENTITY_KEY: raw[ENTITY_KEY].astype(str).to_numpy(dtype=object)})
    out["as_of"] = pd.Series(parse_as_of(as_of), index=out.index, dtype="datetime64[ns, UTC]")
    cols: dict[str, Any] = {}
    for d in defs:
        col = raw[d.name]
        if d.dtype == "string":
            cols[d.name] = col.fillna("unknown").astype(str).to_numpy(dtype=object)
        else:
            cols[d.name] = pd.to_numeric(col, errors="raise").astype("float64").to_numpy()
    out = pd.concat([out, pd.DataFrame(cols, index=out.index)], axis=1)
    if not out[ENTITY_KEY].is_monotonic_increasing:
        out = out.sort_values(ENTITY_KEY, kind="stable").reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- DuckDB execution


def _as_arrow(frame: pd.DataFrame) -> Any:
    """Arrow table of ``frame`` with timestamps at microsecond resolution (what both SQL engines use)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            us = pa.timestamp("us", tz=field.type.tz)
            table = table.set_column(i, field.name, table.column(i).cast(us, safe=False))
    return table


class DuckDBEngine:
    """An in-process DuckDB connection with a data set registered as ``orders``/``events``/``users``.

    Register once, query many cutoffs (training sets). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, dataset: Dataset, threads: int | None = None) -> None:
        import duckdb

        self.dataset = dataset
        self.sources = SourceColumns.of(dataset)
        self.con: duckdb.DuckDBPyConnection = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")
        t0 = time.perf_counter()
        self.con.register("orders", _as_arrow(dataset.orders))
        if dataset.has_events:
            self.con.register("events", _as_arrow(dataset.events))  # type: ignore[arg-type]
        if dataset.has_users:
            self.con.register("users", _as_arrow(dataset.users))  # type: ignore[arg-type]
        log.debug("registered tables with DuckDB in %.2fs", time.perf_counter() - t0)

    def query(self, sql: str) -> pd.DataFrame:
        """Run ``sql`` and return the result as a pandas frame."""
        return self.con.execute(sql).df()

    def features(self, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
        """The feature table as of ``as_of`` (see :func:`build_features`)."""
        as_of = parse_as_of(as_of)
        t0 = time.perf_counter()
        sql = _compose(config, as_of, self.sources)
        raw = self.query(sql)
        out = finalize_features(raw, as_of, config)
        log.info("features as of %s: %d users x %d features in %.2fs", as_of.isoformat(), len(out),
                 out.shape[1] - 2, time.perf_counter() - t0)
        return out

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def build_features(dataset: Dataset, as_of: pd.Timestamp, config: StrataConfig) -> pd.DataFrame:
    """Point-in-time features of every user known at ``as_of``, from data at or before ``as_of`` only.

    Returns one row per user (sorted by ``user_id``): ``user_id``, ``as_of``, then the features of
    :func:`features.definitions.feature_names` (days, currency, counts, ratios as documented in the
    catalog; float64 with NaN where undefined; ``source_channel`` str). Runs the SQL of
    :func:`feature_queries` on an in-process DuckDB.
    """
    with DuckDBEngine(dataset) as engine:
        return engine.features(as_of, config)


def build_features_from_frames(
    orders: pd.DataFrame,
    as_of: pd.Timestamp,
    config: StrataConfig,
    events: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`build_features` on loose frames (the online path: a few users' rows)."""
    return build_features(Dataset(orders=orders, events=events, users=users), as_of, config)
