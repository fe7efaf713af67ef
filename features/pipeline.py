"""Point-in-time features: the definitions of :mod:`features.definitions` composed into SQL and run.

The point-in-time logic is a chain of small named steps, each a SQL builder that can be run alone:

1. :func:`filter_orders_sql`, :func:`filter_events_sql`, :func:`filter_users_sql`: keep rows at or
   before ``as_of`` and normalise optional columns (absent ``status`` means paid, absent ``category`` or
   ``value`` is NULL) so that the definitions never depend on which optional columns exist;
2. :func:`dedupe_orders_sql`: one row per ``(user_id, order_id, status)``, the earliest;
3. :func:`aggregate_sql`, :func:`paid_orders_sql`: one aggregate pass per source (conditional aggregates
   for every window, half-life and event type);
4. :func:`entities_sql` / :data:`KNOWN_USER_CONDITION`: the users known at ``as_of``;
5. :func:`join_sql` and :func:`derive_sql`: join the aggregates into one row per known user, fill
   defaults, compute the row-level derived features.

:func:`feature_queries` returns the whole query as **engine-neutral SQL** over tables named ``orders``,
``events`` and ``users`` (DuckDB dialect, or transpiled by SQLGlot for ``dialect="spark"``); the Spark
path registers its DataFrames under those names, runs that SQL and passes the result through
:func:`finalize_features`, exactly as :func:`build_features` does with DuckDB.

Both engines must run with the session time zone set to UTC (``MONTH()`` depends on it); ages use epoch
seconds and are time-zone independent.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.contract import ENTITY_KEY, SCHEMAS
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.definitions import (
    STAGES,
    FeatureDef,
    Stage,
    decay_rate,
    double,
    feature_definitions,
    output_features,
    select_families,
    sql_string,
)
from features.errors import EngineMemoryError
from features.io import arrow_to_frame

if TYPE_CHECKING:
    import duckdb
    import sqlglot

    from features.config import StrataConfig

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86400
#: Numbers the engines of this process (their default spill directories must differ).
_ENGINE_IDS = itertools.count()
_ALIAS: dict[Stage, str] = {
    "orders": "or_", "paid_orders": "po_", "events": "ev_", "users": "us_",
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


def epoch_micros(ts: pd.Timestamp) -> int:
    """Microseconds since 1970-01-01 UTC (the resolution of both engines' timestamps)."""
    return parse_as_of(ts).value // 1000


def _age_days(column: str, as_of: pd.Timestamp) -> str:
    """Days from ``column`` to ``as_of``, from whole microseconds: exact differences, so a row stamped at
    ``as_of`` is 0 days old (not -3e-12, as seconds in DOUBLE from each side could make it), and an age
    of exactly 30 days is 30. The Spark engine reads ``EPOCH_US`` as ``UNIX_MICROS``."""
    return f"CAST(CAST({epoch_micros(as_of)} AS BIGINT) - EPOCH_US({column}) AS DOUBLE) / {double(_SECONDS_PER_DAY * 10**6)}"


def _half_lives(config: StrataConfig | None) -> list[int]:
    return sorted(set(config.features.half_lives_days)) if config is not None else []


def _decay_columns(config: StrataConfig | None) -> str:
    """``, EXP(...) AS w_hl{h}`` for each half-life of ``config`` (nothing when config is None)."""
    return "".join(f", EXP(age_days * {double(-decay_rate(h))}) AS w_hl{h}" for h in _half_lives(config))


# --------------------------------------------------------------------------- step 1: filter


def filter_orders_sql(
    as_of: pd.Timestamp,
    config: StrataConfig | None,
    order_columns: Iterable[str],
    *,
    after: pd.Timestamp | None = None,
) -> str:
    """Rows of ``orders`` with ``after < ordered_at <= as_of``, normalised (see the module docstring).

    Output columns: ``user_id, order_id, ordered_at, status, amount, paid, refunded, signed_amount,
    category, month, day_num, age_days, w_hl{h}``; ``age_days`` is measured back from ``as_of``. The
    decay weights ``w_hl{h}`` are the half-lives of ``config`` (none when ``config`` is None).
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
        f"CAST(FLOOR(EPOCH(ordered_at) / {double(_SECONDS_PER_DAY)}) AS BIGINT) AS day_num"
        f"{_decay_columns(config)} FROM ({base}) AS o"
    )


def filter_events_sql(as_of: pd.Timestamp, config: StrataConfig | None, event_columns: Iterable[str] | None) -> str:
    """Rows of ``events`` at or before ``as_of``: ``user_id, event_type, value, age_days, w_hl{h}``.

    With ``event_columns=None`` (no events table) it is an empty relation of the same shape, so the
    engagement features take their defaults (0 counts, NaN means) exactly as for a user without events.
    """
    if event_columns is None:
        decay = "".join(f", CAST(NULL AS DOUBLE) AS w_hl{h}" for h in _half_lives(config))
        return (
            "SELECT CAST(NULL AS VARCHAR) AS user_id, CAST(NULL AS VARCHAR) AS event_type, "
            f"CAST(NULL AS DOUBLE) AS value, CAST(NULL AS DOUBLE) AS age_days{decay} WHERE 1 = 0"
        )
    cols = set(event_columns)
    value = "CAST(value AS DOUBLE)" if "value" in cols else "CAST(NULL AS DOUBLE)"
    base = (
        f"SELECT user_id, event_type, {value} AS value, {_age_days('occurred_at', as_of)} AS age_days "
        f"FROM events WHERE user_id IS NOT NULL AND occurred_at <= {timestamp_literal(as_of)}"
    )
    return f"SELECT user_id, event_type, value, age_days{_decay_columns(config)} FROM ({base}) AS e"


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
    """One ``GROUP BY user_id`` pass over ``source`` computing every definition of ``stage``.

    With no definitions of ``stage`` it is the distinct users of ``source``.
    """
    exprs = "".join(f", {d.sql_expression} AS {d.name}" for d in _stage_defs(defs, stage))
    return f"SELECT user_id{exprs} FROM {source} GROUP BY user_id"


def paid_orders_sql(orders_source: str) -> str:
    """The paid rows of ``orders_source`` in day order, with their gap since the previous order day.

    Output: ``user_id, day_num, amount, category, first_day`` (the user's first paid-order day) and
    ``gap`` (see the ``paid_orders`` stage in :mod:`features.definitions`). One window sort by user
    and day serves both window functions, and the stage's aggregates read its rows directly: no
    ``GROUP BY (user_id, day_num)`` (whose hash table holds about one entry per order, since most
    order days have one order) and no peer-range sum per day. The distinct categories are counted
    over these rows too, the paid rows only. DuckDB still plans that distinct count as a grouping of
    its own, fed from this window's output, but as a distinct aggregate among the many aggregates of
    the ``orders`` pass it cost about 1 CPU-s more at 16M orders.
    """
    by_day = "OVER (PARTITION BY user_id ORDER BY day_num)"
    return (
        f"SELECT user_id, day_num, amount, category, day_num - LAG(day_num) {by_day} AS gap, "
        f"FIRST_VALUE(day_num) {by_day} AS first_day FROM {orders_source} WHERE paid"
    )


def users_stage_sql(defs: Sequence[FeatureDef], users_source: str) -> str:
    """The ``users`` stage: a row-level projection of the visible user rows."""
    exprs = "".join(f", {d.sql_expression} AS {d.name}" for d in _stage_defs(defs, "users"))
    return f"SELECT user_id, has_joined{exprs} FROM {users_source}"


# --------------------------------------------------------------------------- step 4: entities


def entities_sql(orders_source: str, events_source: str, users_source: str) -> str:
    """Users known at ``as_of``: any order or event row in the (filtered) sources, or joined by then.

    :func:`join_sql` applies the same rule as :data:`KNOWN_USER_CONDITION` while joining.
    """
    return (
        f"SELECT user_id FROM {orders_source} UNION SELECT user_id FROM {events_source} "
        f"UNION SELECT user_id FROM {users_source} WHERE has_joined = 1"
    )


#: The entity rule inside :func:`join_sql`: an order or event row at or before ``as_of``, or joined by then.
KNOWN_USER_CONDITION = "or_.user_id IS NOT NULL OR ev_.user_id IS NOT NULL OR us_.has_joined = 1"


# --------------------------------------------------------------------------- step 5: join and derive


def join_sql(defs: Sequence[FeatureDef]) -> str:
    """Full-join the per-source aggregates into one row per known user, filling each stage's defaults.

    Orders, events and visible user rows are full-joined (each aggregate is read once); the
    ``paid_orders`` aggregates, whose users are a subset of the order users, are left-joined (only when
    ``defs`` use them). Rows are kept for known users only (:data:`KNOWN_USER_CONDITION`).
    """
    key = ENTITY_KEY
    stages = {d.stage for d in defs}
    any_activity = f"COALESCE(or_.{key}, ev_.{key})"
    joins = [
        f"FROM order_aggs AS or_ FULL OUTER JOIN event_aggs AS ev_ ON ev_.{key} = or_.{key}",
        f"FULL OUTER JOIN user_aggs AS us_ ON us_.{key} = {any_activity}",
    ]
    if "paid_orders" in stages:
        joins.append(f"LEFT JOIN paid_order_aggs AS po_ ON po_.{key} = or_.{key}")
    selects = [f"COALESCE(or_.{key}, ev_.{key}, us_.{key}) AS {key}"]
    for stage, alias in _ALIAS.items():
        for d in _stage_defs(defs, stage):
            col = f"{alias}.{d.name}"
            selects.append(f"COALESCE({col}, {d.default}) AS {d.name}" if d.default is not None else f"{col} AS {d.name}")
    return f"SELECT {', '.join(selects)} {' '.join(joins)} WHERE {KNOWN_USER_CONDITION}"


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
    dedupe_orders: bool = True,
    families: Iterable[str] | None = None,
) -> str:
    """The engine-neutral feature query for ``as_of``: one SQL statement over ``orders``/``events``/``users``.

    This is the function the Spark path uses: ``spark.sql(feature_queries(cfg, as_of, "spark", ...))``
    after registering temp views named ``orders``, ``events`` (if ``has_events``) and ``users`` (if
    ``has_users``), then :func:`finalize_features` on the collected result. The result has ``user_id``
    and the visible features (DOUBLE / VARCHAR), ordered by ``user_id``; ``as_of`` is added by
    :func:`finalize_features`.

    Parameters
    ----------
    dialect : ``duckdb`` (as written), ``spark`` (:func:`features.spark.feature_sql.transpile_for_spark`, which
        keeps microsecond timestamps) or any other SQLGlot write dialect.
    order_columns, event_columns, user_columns : columns present in each table (optional ones may be absent).
    dedupe_orders : include the de-duplication step; False is only correct when ``(user_id, order_id,
        status)`` is known to be unique (validated data rejects duplicate ``order_id``).
    families : only these feature families (:func:`features.definitions.select_families`); None is all.
        A subset reads only the tables its definitions need, and its rows are the users known from
        those tables (orders only for ``["rfm"]``: the users with an order row at or before ``as_of``).
    """
    sources = SourceColumns(
        orders=frozenset(order_columns),
        events=frozenset(event_columns) if has_events else None,
        users=frozenset(user_columns) if has_users else None,
    )
    sql = _compose(config, parse_as_of(as_of), sources, dedupe_orders, families)
    if dialect == "duckdb":
        return sql
    if dialect == "spark":
        # Spark specifics (EPOCH at microsecond precision) live with the Spark engine, in one place.
        from features.spark.feature_sql import transpile_for_spark

        return transpile_for_spark(sql)
    import sqlglot

    return strip_materialization_hints(sqlglot.parse_one(sql, read="duckdb")).sql(dialect=dialect)


def strip_materialization_hints(tree: sqlglot.exp.Expr) -> sqlglot.exp.Expr:
    """``tree`` without DuckDB's ``AS [NOT] MATERIALIZED`` CTE hints (Spark's grammar has none; it inlines CTEs)."""
    import sqlglot

    for cte in tree.find_all(sqlglot.exp.CTE):
        cte.set("materialized", None)
    return tree


def _compose(
    config: StrataConfig,
    as_of: pd.Timestamp,
    sources: SourceColumns,
    dedupe_orders: bool = True,
    families: Iterable[str] | None = None,
) -> str:
    defs, with_clause = _feature_ctes(config, as_of, sources, dedupe_orders, families)
    return f"{with_clause}\n{derive_sql(defs, as_of)}"


#: The CTE of each aggregate stage in the composed feature query (:func:`stage_query`).
STAGE_CTES: dict[str, str] = {"orders": "order_aggs", "paid_orders": "paid_order_aggs", "events": "event_aggs"}


def stage_query(
    config: StrataConfig, as_of: pd.Timestamp, sources: SourceColumns, stage: str, dedupe_orders: bool = True
) -> str:
    """One aggregate stage of the feature query on its own (``orders``, ``paid_orders`` or ``events``): the
    same CTEs as :func:`feature_queries` composes, selecting that stage's per-user aggregates only.

    For measuring where the time of the feature query goes (``benchmarks/bench_features.py --stages``).
    """
    if stage not in STAGE_CTES:
        raise ValueError(f"stage must be one of {sorted(STAGE_CTES)}, not {stage!r}")
    _, with_clause = _feature_ctes(config, as_of, sources, dedupe_orders, None)
    return f"{with_clause}\nSELECT * FROM {STAGE_CTES[stage]}"


def _feature_ctes(
    config: StrataConfig,
    as_of: pd.Timestamp,
    sources: SourceColumns,
    dedupe_orders: bool,
    families: Iterable[str] | None,
) -> tuple[list[FeatureDef], str]:
    """The definitions of ``families`` and the ``WITH`` clause of their stages (inputs, per-stage
    aggregates, users, the join)."""
    defs = select_families(feature_definitions(config), families)
    stages = {d.stage for d in defs}
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown feature stages: {sorted(unknown)}")
    if families is not None:
        # a subset reads only the tables its definitions need (its users are those known from them)
        if "events" not in stages:
            sources = replace(sources, events=None)
        if "users" not in stages:
            sources = replace(sources, users=None)
    # Without de-duplication the filtered orders are inlined into both of their readers (the orders pass
    # and the paid-orders window) rather than materialised once: DuckDB then scans the Parquet twice but
    # never holds a copy of every order row with its derived columns (peak memory 2.5 GiB instead of 3.9
    # at 1M users, and a little faster). A de-duplicated relation stays materialised: its window runs once.
    inline = () if dedupe_orders else ("orders_f", "orders_d")
    ctes = [
        ("orders_f", filter_orders_sql(as_of, config, sources.orders)),
        ("orders_d", dedupe_orders_sql("orders_f") if dedupe_orders else "SELECT * FROM orders_f"),
        ("events_f", filter_events_sql(as_of, config, sources.events)),
        ("users_f", filter_users_sql(as_of, sources.users)),
        ("order_aggs", aggregate_sql(defs, "orders", "orders_d")),
    ]
    if "paid_orders" in stages:
        ctes += [("paid_orders", paid_orders_sql("orders_d")),
                 ("paid_order_aggs", aggregate_sql(defs, "paid_orders", "paid_orders"))]
    ctes.append(("event_aggs", aggregate_sql(defs, "events", "events_f")))
    ctes += [("user_aggs", users_stage_sql(defs, "users_f")), ("joined", join_sql(defs))]
    with_clause = ",\n".join(
        f"{name} AS {'NOT MATERIALIZED ' if name in inline else ''}(\n  {body}\n)" for name, body in ctes
    )
    return defs, f"WITH {with_clause}"


def finalize_features(
    raw: pd.DataFrame, as_of: pd.Timestamp, config: StrataConfig, families: Iterable[str] | None = None
) -> pd.DataFrame:
    """Turn an engine's query result into the feature-table contract (any engine, same output).

    Returns ``user_id`` (str), ``as_of`` (UTC timestamp), then the features in catalog order: float64
    (NaN where undefined) or str; rows sorted by ``user_id``, index 0..n-1. When ``raw`` already has
    the contract's layout (the DuckDB result does), it is completed in place and returned, to avoid a
    second copy of a large table; do not reuse ``raw`` afterwards. ``families`` as in :func:`feature_queries`.
    """
    defs = output_features(config, families)
    missing = [c for c in [ENTITY_KEY, *(d.name for d in defs)] if c not in raw.columns]
    if missing:
        raise ValueError(f"feature query result lacks columns {missing}")
    naive = parse_as_of(as_of).tz_convert(None).to_datetime64()
    as_of_col = pd.DatetimeIndex(np.full(len(raw), naive, dtype="datetime64[ns]")).tz_localize("UTC")
    names = [ENTITY_KEY, *(d.name for d in defs)]
    floats = [d.name for d in defs if d.dtype == "float"]
    if list(raw.columns) == names and (raw.dtypes[floats] == "float64").all() and raw[ENTITY_KEY].dtype == object:
        # the DuckDB result already has the contract's layout: adjust in place (no copy of the table)
        out = raw
        for d in defs:
            if d.dtype == "string":
                out[d.name] = out[d.name].fillna("unknown").astype(str)
        with warnings.catch_warnings():
            # a frame of one block per column (:meth:`DuckDBEngine.query_arrow`) trips pandas' fragmentation
            # warning past 100 columns; one insert into it is cheap, unlike the copy that would avoid it
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            out.insert(1, "as_of", as_of_col)
    else:
        cols: dict[str, Any] = {ENTITY_KEY: raw[ENTITY_KEY].astype(str).to_numpy(dtype=object), "as_of": as_of_col}
        for d in defs:
            col = raw[d.name]
            if d.dtype == "string":
                cols[d.name] = col.fillna("unknown").astype(str).to_numpy(dtype=object)
            else:
                cols[d.name] = pd.to_numeric(col, errors="raise").astype("float64").to_numpy()
        out = pd.DataFrame(cols)
    if not out[ENTITY_KEY].is_monotonic_increasing:
        out = out.sort_values(ENTITY_KEY, kind="stable").reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- DuckDB execution


#: Columns each table contributes to the features; others are never loaded into the engine.
FEATURE_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "orders": ("user_id", "order_id", "ordered_at", "amount", "status", "category"),
    "events": ("user_id", "occurred_at", "event_type", "value"),
    "users": ("user_id", "joined_at", "source_channel"),
}


#: :data:`FEATURE_INPUT_COLUMNS` of validated data: :func:`features.validation.load_dataset` rejects missing
#: and duplicate ``order_id``, so an engine told ``orders_unique=True`` never reads that column (the
#: ``columns`` to keep when a data set is loaded only to compute features).
VALIDATED_FEATURE_INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    name: tuple(c for c in cols if c != "order_id") for name, cols in FEATURE_INPUT_COLUMNS.items()
}


#: DuckDB optimizers the engine turns off (see :meth:`DuckDBEngine._connect` for the measured reason).
DISABLED_OPTIMIZERS = "partitioned_execution"

_SQL_TYPES = {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ", "float": "DOUBLE", "int": "BIGINT"}


def _typed_columns(table: str, columns: Iterable[str]) -> str:
    """``CAST(c AS <contract type>) AS c, ...`` for ``columns`` of ``table`` (timestamps in microseconds)."""
    kinds = {**SCHEMAS[table].required, **SCHEMAS[table].optional}
    return ", ".join(f"CAST({c} AS {_SQL_TYPES[kinds[c]]}) AS {c}" for c in columns)


class DuckDBEngine:
    """An in-process DuckDB database holding a data set as tables ``orders``, ``events``, ``users``.

    With ``copy=True`` the pandas frames are copied once into DuckDB tables (only
    :data:`FEATURE_INPUT_COLUMNS`; strings converted once, timestamps at microsecond resolution), so
    that many cutoffs (training sets) are queried without converting the frames again. With
    ``copy=False`` the tables are typed views over the frames: no second copy of the data in memory,
    the frames are scanned by each query (best for one cutoff). :meth:`from_parquet` makes the tables
    typed views over Parquet files instead (no pandas frames at all). ``orders_unique=True`` says
    ``(user_id, order_id, status)`` is known to be unique, as in data that passed
    :func:`features.validation.load_dataset` (it rejects duplicate and missing ``order_id``): the
    duplicate check (one pass over the orders) and the de-duplication step are skipped. ``config``
    sets DuckDB's memory limit and spill directory (``[features] engine_memory_limit`` and
    ``engine_temp_directory``); the features' own configuration is passed to :meth:`features`. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(
        self,
        dataset: Dataset,
        threads: int | None = None,
        *,
        copy: bool = True,
        orders_unique: bool = False,
        config: StrataConfig | None = None,
    ) -> None:
        self.dataset: Dataset | None = dataset
        self.copy = copy
        self._connect(threads, config)
        t0 = time.perf_counter()
        columns: dict[str, frozenset[str] | None] = {"orders": None, "events": None, "users": None}
        frames = {"orders": dataset.orders, "events": dataset.events if dataset.has_events else None,
                  "users": dataset.users if dataset.has_users else None}
        with self._setup_memory_errors("loading the data"):
            for name, frame in frames.items():
                if frame is not None:
                    columns[name] = self._load(name, frame)
            self.sources = SourceColumns(orders=columns["orders"] or frozenset(), events=columns["events"],
                                         users=columns["users"])
            self.has_duplicate_orders = False if orders_unique else self._has_duplicate_orders()
        log.debug("registered tables with DuckDB in %.2fs", time.perf_counter() - t0)

    def _connect(self, threads: int | None, config: StrataConfig | None = None) -> None:
        import duckdb

        self.con: duckdb.DuckDBPyConnection = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        # Spills (a query outgrowing the memory limit) go to a directory of this engine's own, in the
        # configured directory or the system temp directory (not DuckDB's default ".tmp" in whatever the
        # working directory is). Engines never share one: DuckDB names its files by process and removes the
        # directory on close. DuckDB creates it only when it spills.
        features = config.features if config is not None else None
        base = Path(features.engine_temp_directory) if features is not None and features.engine_temp_directory else None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.spill_directory = (base or Path(tempfile.gettempdir())) / f"strata-duckdb-{os.getpid()}-{next(_ENGINE_IDS)}"
        self.con.execute(f"SET temp_directory = {sql_string(str(self.spill_directory))}")
        self.memory_limit = features.engine_memory_limit if features is not None else None
        if self.memory_limit is not None:
            self.con.execute(f"SET memory_limit = {sql_string(self.memory_limit)}")
        # every result that needs an order says so (ORDER BY); letting DuckDB drop insertion order
        # saves about 1 CPU-s of the feature query at 1M users
        self.con.execute("SET preserve_insertion_order = false")
        try:
            # DuckDB 2.0's partitioned execution splits a large GROUP BY into user_id ranges when the row
            # groups look partitioned by user (as Parquet written in user chunks does). Over our typed views
            # the range filter cannot reach the Parquet reader, so every split rescans the whole file: at 1M
            # users the bare count/sum/max aggregate took 2.6 s instead of 1.9, the feature query 12.5
            # instead of 11.9 (benchmarks/bench_features.py data, 2 cores).
            self.con.execute(f"SET disabled_optimizers = '{DISABLED_OPTIMIZERS}'")
        except duckdb.Error:
            log.debug("DuckDB %s has no %s optimizer to disable", duckdb.__version__, DISABLED_OPTIMIZERS)
        try:
            self.con.execute("SET enable_progress_bar = false")  # the CLI shows its own progress
        except duckdb.Error:
            # In a Jupyter kernel without ipywidgets DuckDB refuses to change the progress-bar setting;
            # the notebooks then keep DuckDB's default.
            pass
        if threads is not None:
            self.con.execute(f"SET threads = {int(threads)}")

    @classmethod
    def from_parquet(
        cls,
        orders: Path | str,
        events: Path | str | None = None,
        users: Path | str | None = None,
        threads: int | None = None,
        *,
        orders_unique: bool = False,
        config: StrataConfig | None = None,
    ) -> DuckDBEngine:
        """An engine whose tables are typed views over Parquet files, read by DuckDB at each query.

        For typed Parquet such as :func:`features.demo_data.write_dataset` writes (or a validated data
        set saved with :func:`features.io.write_table`): timestamps, ``amount`` and ``value`` numeric,
        the contract's column names. Nothing is validated here (raw files go through
        :func:`features.validation.load_dataset`); a value of the wrong type fails the query. Only
        :data:`FEATURE_INPUT_COLUMNS` are read, the pandas frames never exist, and DuckDB scans the
        files in parallel, so this is the lightest way to compute features of a large exported data set.
        ``orders_unique=True`` says ``(user_id, order_id, status)`` is known to be unique (validated data
        rejects duplicate order ids), which skips the duplicate check (one pass over the orders) and the
        de-duplication step; otherwise both happen as for frames.

        Raises
        ------
        InputFileError
            If a file is missing or unreadable, or lacks a required column of its table.
        """
        import duckdb

        from features.errors import InputFileError

        engine = cls.__new__(cls)
        engine.dataset = None
        engine.copy = False
        engine._connect(threads, config)
        columns: dict[str, frozenset[str] | None] = {"orders": None, "events": None, "users": None}
        for name, path in (("orders", orders), ("events", events), ("users", users)):
            if path is None:
                continue
            path = Path(path)
            if not path.is_file():
                engine.close()
                raise InputFileError(f"{path}: file not found (the {name} table)")
            literal = "'" + str(path).replace("'", "''") + "'"
            try:
                present = {row[0] for row in engine.con.execute(f"DESCRIBE SELECT * FROM read_parquet({literal})").fetchall()}
                n_rows = engine.con.execute(f"SELECT COUNT(*) FROM read_parquet({literal})").fetchone()
            except duckdb.Error as err:
                engine.close()
                raise InputFileError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
            missing = [c for c in SCHEMAS[name].required if c not in present]
            if missing:
                engine.close()
                raise InputFileError(f"{path}: missing required column(s) {', '.join(map(repr, missing))} of the {name} table")
            if name != "orders" and not (n_rows and n_rows[0]):
                continue  # an empty optional table is an absent one (as for Dataset.has_events)
            cols = [c for c in FEATURE_INPUT_COLUMNS[name] if c in present]
            engine.con.execute(f"CREATE VIEW {name} AS SELECT {_typed_columns(name, cols)} FROM read_parquet({literal})")
            columns[name] = frozenset(cols)
        engine.sources = SourceColumns(orders=columns["orders"] or frozenset(), events=columns["events"],
                                     users=columns["users"])
        with engine._setup_memory_errors("checking the orders for duplicates"):
            engine.has_duplicate_orders = False if orders_unique else engine._has_duplicate_orders()
        return engine

    def _load(self, name: str, frame: pd.DataFrame) -> frozenset[str]:
        """Copy the feature input columns of ``frame`` into table ``name`` (or, with ``copy=False``, make
        ``name`` a typed view over the frame); return the columns loaded."""
        cols = [c for c in FEATURE_INPUT_COLUMNS[name] if c in frame.columns]
        typed = _typed_columns(name, cols)
        source = f"input_{name}"
        index = frame.index
        if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
            frame = frame[cols].reset_index(drop=True)  # DuckDB's pandas scan needs a plain 0..n-1 index
        self.con.register(source, frame)
        if not self.copy:
            self.con.execute(f"CREATE VIEW {name} AS SELECT {typed} FROM {source}")
            return frozenset(cols)
        try:
            self.con.execute(f"CREATE TABLE {name} AS SELECT {typed} FROM {source}")
        finally:
            self.con.unregister(source)
        return frozenset(cols)

    def _has_duplicate_orders(self) -> bool:
        """Whether any ``(user_id, order_id, status)`` occurs twice (checked once per data set).

        Unique ``order_id`` values (the usual case, and always so after validation) are found by a
        pass over that one column, about half the cost of grouping by the three columns.
        """
        if "order_id" not in self.sources.orders:
            return False
        # a count of distinct ids rather than a grouping that keeps the repeated ones: about 15% less
        ids = self.con.execute("SELECT COUNT(order_id) - COUNT(DISTINCT order_id) FROM orders").fetchone()
        if not (ids and ids[0]):
            return False
        status = "status" if "status" in self.sources.orders else "NULL"
        sql = (
            f"SELECT COUNT(*) FROM (SELECT 1 FROM orders WHERE order_id IS NOT NULL "
            f"GROUP BY user_id, order_id, {status} HAVING COUNT(*) > 1) AS d"
        )
        row = self.con.execute(sql).fetchone()
        return bool(row and row[0])

    def query(self, sql: str, doing: str = "running a query") -> pd.DataFrame:
        """Run ``sql`` and return the result as a pandas frame (``doing`` names it in an out-of-memory error)."""
        with self._memory_errors(doing):
            return self.con.execute(sql).df()

    def query_arrow(self, sql: str, doing: str = "running a query") -> pd.DataFrame:
        """Run ``sql`` and return the result as a pandas frame converted from Arrow.

        For wide numeric results (the feature table): about 1 CPU-s instead of 2.5 to 4 for
        :meth:`query` at 870k rows x 100 DOUBLE columns. Strings come back as Python ``str`` objects,
        DOUBLE as float64 with NaN for NULL.
        """
        self.con.complete()  # finish any pending statement: a relation may not start while one is open
        with self._memory_errors(doing):
            return arrow_to_frame(self.con.sql(sql).to_arrow_table())

    def features(
        self, as_of: pd.Timestamp, config: StrataConfig, families: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """The feature table as of ``as_of`` (see :func:`build_features`); ``families`` as in
        :func:`feature_queries` (None: all)."""
        as_of = parse_as_of(as_of)
        t0 = time.perf_counter()
        sql = _compose(config, as_of, self.sources, dedupe_orders=self.has_duplicate_orders, families=families)
        raw = self.query_arrow(sql, f"computing features as of {as_of.isoformat()}")
        out = finalize_features(raw, as_of, config, families)
        log.info("features as of %s: %d users x %d features in %.2fs", as_of.isoformat(), len(out),
                 out.shape[1] - 2, time.perf_counter() - t0)
        return out

    @contextlib.contextmanager
    def _memory_errors(self, doing: str) -> Iterator[None]:
        """Turn DuckDB's out-of-memory error into an :class:`EngineMemoryError` naming the limit to change."""
        import duckdb

        try:
            yield
        except duckdb.OutOfMemoryException as err:
            limit = (f"the configured limit [features] engine_memory_limit = {self.memory_limit!r}"
                     if self.memory_limit is not None else "DuckDB's default limit (80% of this machine's memory)")
            detail = str(err).splitlines()[0]
            raise EngineMemoryError(
                f"out of memory while {doing} under {limit} ({detail}); raise [features] engine_memory_limit, "
                "or compute features with --engine spark"
            ) from None

    @contextlib.contextmanager
    def _setup_memory_errors(self, doing: str) -> Iterator[None]:
        """:meth:`_memory_errors` while the engine is being built: it closes the half-built engine first."""
        try:
            with self._memory_errors(doing):
                yield
        except EngineMemoryError:
            self.close()
            raise

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
    :func:`feature_queries` on an in-process DuckDB (over views of the frames: no copy of the data).
    """
    with DuckDBEngine(dataset, copy=False, config=config) as engine:
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
