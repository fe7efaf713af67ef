"""The feature SQL on Spark: transpiled from DuckDB, run over temp views, collected or written as Parquet."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.spark.frames import TABLE_NAMES, SparkDataset, spark_to_pandas
from features.spark.reading import hadoop_path

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def transpile_for_spark(duckdb_sql: str) -> str:
    """Transpile the DuckDB feature SQL to Spark SQL, keeping its exact meaning.

    SQLGlot translates DuckDB ``EPOCH(ts)`` (seconds as DOUBLE, microsecond precision) into Spark
    ``UNIX_TIMESTAMP(ts)``, which truncates to whole seconds; here it becomes
    ``UNIX_MICROS(ts) / 1e6`` instead, so day numbers agree to the microsecond with DuckDB; ``EPOCH_US(ts)``
    (whole microseconds, which ages are computed from) becomes ``UNIX_MICROS(ts)``. DuckDB's CTE
    materialisation hints are dropped (Spark inlines CTEs and has no syntax for them).
    """
    import sqlglot
    from sqlglot import exp

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.TimeToUnix):
            arg = node.this.sql(dialect="spark")
            micros = sqlglot.parse_one(f"CAST(UNIX_MICROS({arg}) AS DOUBLE) / CAST(1000000 AS DOUBLE)", read="spark")
            return exp.Paren(this=micros)
        if isinstance(node, exp.Anonymous) and str(node.this).upper() == "EPOCH_US":
            return exp.Anonymous(this="UNIX_MICROS", expressions=node.expressions)
        return node

    from features.pipeline import strip_materialization_hints

    tree = strip_materialization_hints(sqlglot.parse_one(duckdb_sql, read="duckdb")).transform(fix)
    return tree.sql(dialect="spark")


def feature_sql_spark(config: StrataConfig, as_of: pd.Timestamp, dataset: SparkDataset, *, ordered: bool = False) -> str:
    """The Spark SQL of the feature query for ``dataset`` as of ``as_of`` (over views orders/events/users).

    ``ordered=False`` drops the final ``ORDER BY user_id``: a global sort is a full shuffle that
    written Parquet does not need (collected results are sorted by :func:`collect_features`).
    """
    import sqlglot

    from features.pipeline import feature_queries

    sql = feature_queries(
        config,
        parse_as_of(as_of),
        "duckdb",
        has_events=dataset.events is not None,
        has_users=dataset.users is not None,
        order_columns=dataset.orders.columns,
        event_columns=dataset.events.columns if dataset.events is not None else (),
        user_columns=dataset.users.columns if dataset.users is not None else (),
        dedupe_orders=not dataset.orders_unique,
    )
    spark_sql = transpile_for_spark(sql)
    if ordered:
        return spark_sql
    tree = sqlglot.parse_one(spark_sql, read="spark")
    tree.set("order", None)
    return tree.sql(dialect="spark")


def register_views(spark: SparkSession, dataset: SparkDataset) -> None:
    """Register the tables as temp views ``orders``, ``events``, ``users`` (absent ones are dropped)."""
    for name in TABLE_NAMES:
        frame = dataset.tables().get(name)
        if frame is None:
            spark.catalog.dropTempView(name)
        else:
            frame.createOrReplaceTempView(name)


def build_features_spark(spark: SparkSession, dataset: SparkDataset, as_of: pd.Timestamp | str,
                         config: StrataConfig) -> DataFrame:
    """Point-in-time features as of ``as_of`` as a Spark DataFrame (lazy; nothing runs yet).

    Columns: ``user_id`` (string), ``as_of`` (timestamp, UTC), then the features of
    :func:`features.definitions.feature_names` in catalog order (DOUBLE, NULL where undefined, or
    STRING), one row per user known at ``as_of``, computed by the same SQL as the DuckDB path.
    """
    from pyspark.sql import functions as F

    as_of_ts = parse_as_of(as_of)
    register_views(spark, dataset)
    raw = spark.sql(feature_sql_spark(config, as_of_ts, dataset))
    cols = raw.columns
    stamp = F.lit(as_of_ts.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00:00").cast("timestamp").alias("as_of")
    return raw.select(F.col(ENTITY_KEY), stamp, *[F.col(c) for c in cols if c != ENTITY_KEY])


def collect_features(features: DataFrame, as_of: pd.Timestamp | str, config: StrataConfig) -> pd.DataFrame:
    """Collect a Spark feature frame into the pandas feature-table contract (as ``build_features`` returns).

    Runs :func:`features.pipeline.finalize_features` on the collected rows: ``user_id`` (str),
    ``as_of`` (UTC), features float64 (NaN where undefined) or str, sorted by ``user_id``.
    """
    from features.pipeline import finalize_features

    raw = spark_to_pandas(features.drop("as_of") if "as_of" in features.columns else features)
    return finalize_features(raw, parse_as_of(as_of), config)


def write_features_spark(features: DataFrame, out: str, *, mode: str = "overwrite") -> str:
    """Write a Spark feature frame as Parquet part files under ``out`` (a directory); returns ``out``."""
    target = hadoop_path(out)
    features.write.mode(mode).parquet(target)
    return target
