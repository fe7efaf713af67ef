"""The contract tables as Spark DataFrames (:class:`SparkDataset`) and conversions to and from pandas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.contract import EVENTS, ORDERS, USERS, TableSchema
from features.dataset import Dataset

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TABLE_NAMES: tuple[str, ...] = ("orders", "events", "users")


@dataclass
class SparkDataset:
    """Typed Spark DataFrames of the three contract tables (``events``/``users`` None when absent).

    Column types follow :mod:`features.contract`: strings, ``TIMESTAMP`` (UTC instants), ``DOUBLE``
    for ``amount``/``value``, ``BIGINT`` for ``quantity``. Only columns present in the input exist.
    """

    orders: DataFrame
    events: DataFrame | None = None
    users: DataFrame | None = None
    orders_unique: bool = False
    """True when no ``(user_id, order_id, status)`` repeats (validated data): the SQL skips de-duplication."""

    def tables(self) -> dict[str, DataFrame]:
        """The present tables by name."""
        out = {"orders": self.orders, "events": self.events, "users": self.users}
        return {k: v for k, v in out.items() if v is not None}


def spark_type(kind: str) -> Any:
    """The Spark type of a contract column kind (``string``, ``timestamp``, ``float``, ``int``)."""
    from pyspark.sql import types as T

    return {"string": T.StringType(), "timestamp": T.TimestampType(), "float": T.DoubleType(),
            "int": T.LongType()}[kind]


def contract_schema(schema: TableSchema, columns: list[str]) -> Any:
    """Spark schema of the contract columns among ``columns`` (in contract order)."""
    from pyspark.sql import types as T

    kinds = {**schema.required, **schema.optional}
    return T.StructType([T.StructField(c, spark_type(kinds[c]), True) for c in schema.columns if c in columns])


def frame_to_spark(spark: SparkSession, frame: pd.DataFrame, schema: TableSchema) -> DataFrame:
    """A typed pandas contract table (as :mod:`features.dataset` describes) as a Spark DataFrame.

    Non-contract columns are dropped; timestamps are sent as UTC instants.
    """
    cols = [c for c in schema.columns if c in frame.columns]
    sub = frame[cols].copy()
    kinds = {**schema.required, **schema.optional}
    for c in cols:
        if kinds[c] == "timestamp":
            ts = pd.to_datetime(sub[c], utc=True)
            sub[c] = ts
        elif kinds[c] == "int":
            sub[c] = sub[c].astype("Int64")
        elif kinds[c] == "float":
            sub[c] = pd.to_numeric(sub[c]).astype("float64")
    # An explicit schema (not inference): all-null columns and Int64 keep their contract types.
    spark_schema = contract_schema(schema, cols)
    if len(sub):
        return spark.createDataFrame(sub, schema=spark_schema)
    return spark.createDataFrame([], schema=spark_schema)


def dataset_to_spark(spark: SparkSession, dataset: Dataset) -> SparkDataset:
    """A validated in-memory :class:`Dataset` as a :class:`SparkDataset` (tests, small data)."""
    orders = dataset.orders
    keys = [c for c in ("user_id", "order_id", "status") if c in orders.columns]
    unique = "order_id" in orders.columns and not orders.duplicated(keys).any()
    return SparkDataset(
        orders_unique=bool(unique),
        orders=frame_to_spark(spark, dataset.orders, ORDERS),
        events=frame_to_spark(spark, dataset.events, EVENTS) if dataset.has_events else None,  # type: ignore[arg-type]
        users=frame_to_spark(spark, dataset.users, USERS) if dataset.has_users else None,  # type: ignore[arg-type]
    )


def spark_to_pandas(frame: DataFrame) -> pd.DataFrame:
    """Collect ``frame`` to pandas with timestamp columns tz-aware UTC (Spark hands them back naive)."""
    from pyspark.sql import types as T

    out = frame.toPandas()
    for f in frame.schema.fields:
        if isinstance(f.dataType, T.TimestampType | T.TimestampNTZType) and f.name in out.columns:
            s = pd.to_datetime(out[f.name])
            out[f.name] = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
            out[f.name] = out[f.name].astype("datetime64[ns, UTC]")
    return out


def collect_dataset(dataset: SparkDataset) -> Dataset:
    """Collect a (sampled) Spark data set into an in-memory :class:`Dataset` typed like ``load_dataset``'s."""
    def typed(frame: DataFrame | None, schema: TableSchema) -> pd.DataFrame | None:
        if frame is None:
            return None
        pdf = spark_to_pandas(frame)
        kinds = {**schema.required, **schema.optional}
        for c in pdf.columns:
            if kinds.get(c) == "int":
                pdf[c] = pdf[c].astype("Int64")
            elif kinds.get(c) == "float":
                pdf[c] = pdf[c].astype("float64")
        return pdf

    orders = typed(dataset.orders, ORDERS)
    assert orders is not None
    return Dataset(orders=orders, events=typed(dataset.events, EVENTS), users=typed(dataset.users, USERS))
