"""The Apache Spark engine: the same validation and the same feature SQL, on data beyond one machine.

Nothing here re-implements a feature, and the SQL fast path of validation only ever accepts rows
(rejections come from the embedded validator or the global steps named below):

* **Features**: the Spark DataFrames are registered as temp views named ``orders``, ``events`` and
  ``users`` and the query of :func:`features.pipeline.feature_queries` (written once, DuckDB dialect)
  runs on them after SQLGlot transpiles it (:func:`transpile_for_spark`). Collected results go through
  :func:`features.pipeline.finalize_features`, exactly like the DuckDB path.
* **Validation**: the rules are :func:`features.validation.validate_table`'s. Rows whose every cell is
  in a plain form both engines provably read alike, and that pass every rule, are typed by Spark SQL
  (:func:`_fast_path`, no Python); every other row (all bad rows, and valid rows in unusual forms) is
  validated by ``validate_table`` itself inside ``mapInPandas``, so reasons are always its own. The
  rules that need every row at once run as global Spark steps: duplicate ``order_id`` / ``user_id``
  (the first in file order is kept, as in pandas) and events/orders of users missing from ``users``.
  Every row is accounted for: ``rows_in == accepted + rejected``, with the same reasons as the
  embedded path, and :meth:`SparkValidationReport.write_rejects` writes the embedded path's files.

Spark timestamps are UTC: the session time zone is forced to ``UTC`` (``MONTH()`` and day numbers
depend on it), and collected timestamps are tz-aware UTC.

Everything imports ``pyspark`` lazily, so ``features`` stays importable without it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.config import SparkConfig, StrataConfig
from features.contract import ENTITY_KEY, EVENTS, ORDER_STATUSES, ORDERS, SCHEMAS, USERS, TableSchema
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InputFileError, StrataError
from features.validation import ValidationTotals

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

#: Spark settings Strata always applies (the feature SQL and the timestamp conversions rely on them).
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Standard Parquet timestamps (UTC-adjusted microseconds), not legacy INT96: pandas reads them as UTC.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # pandas/pyarrow write nanosecond timestamps, which Spark refuses; read them as INT64 nanoseconds and
    # render them exactly (see _as_text).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
#: Defaults applied unless the configuration sets them.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.showConsoleProgress": "false",
}
TABLE_NAMES: tuple[str, ...] = ("orders", "events", "users")
_ROW = "_row"
_MID = "_mid"
_KIND = "_kind"
_REASON = "_reason"
_RAW = "_raw"
_CORRUPT = "_corrupt_record"
_FILE = "_file"
_POS_BITS = 33  # monotonically_increasing_id(): partition id in the upper bits, position in the lower 33


class SparkEngineError(StrataError):
    """Spark is missing, cannot start, or was configured in a way Strata cannot work with."""


# ------------------------------------------------------------------------------------------ session


def _is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[") or master.startswith("local-cluster")


def local_cores(master: str) -> int | None:
    """Worker threads of a ``local``/``local[N]``/``local[*]``/``local[N,F]`` master; None for other masters."""
    m = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if m is None:
        return None
    if m.group(1) in (None, ""):
        return 1
    return (os.cpu_count() or 1) if m.group(1) == "*" else int(m.group(1))


def spark_session(
    config: SparkConfig | StrataConfig,
    *,
    master: str | None = None,
    app_name: str = "strata",
    log_level: str = "ERROR",
) -> SparkSession:
    """Get or create the SparkSession described by ``config.spark`` (or a :class:`SparkConfig`).

    Parameters
    ----------
    config : the ``[spark]`` section (``master`` and ``conf``), or the whole configuration.
    master : overrides ``config.master`` (e.g. ``--spark-master spark://host:7077``). Under
        ``spark-submit`` (or on Databricks, where a session is already active) the master chosen by the
        launcher is kept unless this is given.
    app_name : the application name shown in the cluster UI.
    log_level : Spark's log level once started (``ERROR`` keeps command output readable).

    Returns
    -------
    The session, with ``spark.sql.session.timeZone=UTC`` and Arrow conversions on. For a ``local``
    master, Python workers run the interpreter of this process (so they see the same packages).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover - pyspark is a declared dependency
        raise SparkEngineError("the Spark engine needs pyspark (pip install pyspark) and Java 17") from None

    spark_cfg = config.spark if isinstance(config, StrataConfig) else config
    tz = spark_cfg.conf.get("spark.sql.session.timeZone", "UTC")
    if tz.upper() not in ("UTC", "Z", "+00:00", "ETC/UTC"):
        raise SparkEngineError(
            f"[spark] conf 'spark.sql.session.timeZone' = {tz!r}: Strata computes features in UTC; remove the key or set 'UTC'"
        )
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or SparkSession.getActiveSession() is not None
    effective_master = master or (None if launched else spark_cfg.master)
    if effective_master is not None and _is_local(effective_master):
        # Local workers are child processes: make them use this interpreter (and its packages).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    defaults = dict(DEFAULT_CONF)
    cores = local_cores(effective_master) if effective_master is not None else None
    if cores is not None:
        # Two shuffle partitions per local core keeps every core busy without hundreds of tiny tasks.
        defaults["spark.sql.shuffle.partitions"] = str(2 * cores)
    if effective_master is not None:
        builder = builder.master(effective_master)
    for key, value in {**defaults, **spark_cfg.conf, **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    t0 = time.perf_counter()
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # Java missing, bad master URL...: one line, not a JVM trace
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SparkEngineError(
            f"cannot start Spark (master {effective_master or 'from spark-submit'}): {first}; "
            "check that Java 17 is installed (JAVA_HOME) and the master URL"
        ) from None
    for key, value in REQUIRED_CONF.items():  # an existing session (Databricks) gets them too
        spark.conf.set(key, value)
    spark.sparkContext.setLogLevel(log_level)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs every gateway call at INFO
    log.info("Spark %s session (master %s) ready in %.1fs", spark.version, spark.sparkContext.master,
             time.perf_counter() - t0)
    return spark


# ------------------------------------------------------------------------------------------ datasets


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


def _spark_type(kind: str) -> Any:
    from pyspark.sql import types as T

    return {"string": T.StringType(), "timestamp": T.TimestampType(), "float": T.DoubleType(),
            "int": T.LongType()}[kind]


def _contract_schema(schema: TableSchema, columns: list[str]) -> Any:
    """Spark schema of the contract columns among ``columns`` (in contract order)."""
    from pyspark.sql import types as T

    kinds = {**schema.required, **schema.optional}
    return T.StructType([T.StructField(c, _spark_type(kinds[c]), True) for c in schema.columns if c in columns])


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
    spark_schema = _contract_schema(schema, cols)
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


# ------------------------------------------------------------------------------------------ features


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


def collect_features(features: DataFrame, as_of: pd.Timestamp | str, config: StrataConfig) -> pd.DataFrame:
    """Collect a Spark feature frame into the pandas feature-table contract (as ``build_features`` returns).

    Runs :func:`features.pipeline.finalize_features` on the collected rows: ``user_id`` (str),
    ``as_of`` (UTC), features float64 (NaN where undefined) or str, sorted by ``user_id``.
    """
    from features.pipeline import finalize_features

    raw = spark_to_pandas(features.drop("as_of") if "as_of" in features.columns else features)
    return finalize_features(raw, parse_as_of(as_of), config)


# ------------------------------------------------------------------------------------------ reading


#: URI schemes whose paths always name a bucket/container (``s3a://bucket/key``).
_AUTHORITY_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "abfs", "abfss", "wasb", "wasbs", "oss", "cos", "cosn", "obs"})


def hadoop_path(value: str | Path) -> str:
    """A path or URI as Hadoop expects it, undoing ``pathlib.Path``'s collapse of ``s3a://`` to ``s3a:/``.

    CLI options arrive as :class:`pathlib.Path`, which turns ``s3a://bucket/key`` into ``s3a:/bucket/key``;
    the ``//`` is restored for object-store schemes and for ``hdfs:/host:port/...``. ``hdfs:/path``
    (the default file system) and local paths are returned unchanged.
    """
    text = str(value)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)(.*)$", text)
    if m:
        scheme, rest = m.group(1), m.group(2)
        if scheme.lower() in _AUTHORITY_SCHEMES or (scheme.lower() == "hdfs" and ":" in rest.split("/", 1)[0]):
            return f"{scheme}://{rest}"
    return text


def _hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm: Any = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    return fs, hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` (local, ``hdfs://``, ``s3a://``, ``dbfs:/``...) exists, asked through Hadoop."""
    fs, hpath = _hadoop_fs(spark, path)
    return bool(fs.exists(hpath))


def _is_dir(spark: SparkSession, path: str) -> bool:
    fs, hpath = _hadoop_fs(spark, path)
    return bool(fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory())


_CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _is_parquet_path(spark: SparkSession, path: str) -> bool:
    """Parquet by suffix; a directory is CSV if it holds ``*.csv`` files, else Parquet (Spark part files)."""
    lower = path.lower().rstrip("/")
    if lower.endswith(_PARQUET_SUFFIXES):
        return True
    if lower.endswith(_CSV_SUFFIXES):
        return False
    if not _is_dir(spark, path):
        return False
    fs, hpath = _hadoop_fs(spark, path)
    names = [str(st.getPath().getName()).lower() for st in fs.listStatus(hpath)]
    return not any(n.endswith(_CSV_SUFFIXES) for n in names)


def find_tables_spark(
    spark: SparkSession,
    data_dir: str | Path | None = None,
    *,
    orders: str | Path | None = None,
    events: str | Path | None = None,
    users: str | Path | None = None,
) -> dict[str, str | None]:
    """Resolve the input tables: explicit paths win over ``<data_dir>/<table>.csv|csv.gz|parquet|pq``.

    Works on any file system Hadoop knows (local paths, ``hdfs://``, ``s3a://``, ``abfss://``, ``dbfs:/``);
    ``<data_dir>/<table>/`` (a directory of Parquet part files) is also accepted.

    Raises
    ------
    InputFileError
        If ``data_dir`` does not exist, an explicit file is missing, several files match one table, or
        no orders table is found.
    """
    root = hadoop_path(data_dir).rstrip("/") if data_dir is not None else None
    if root is not None and not path_exists(spark, root):
        raise InputFileError(f"{root}: data directory not found")
    explicit = {"orders": orders, "events": events, "users": users}
    found: dict[str, str | None] = {}
    for name, given in explicit.items():
        if given is not None:
            p = hadoop_path(given)
            if not path_exists(spark, p):
                raise InputFileError(f"{p}: file not found (the {name} table)")
            found[name] = p
            continue
        found[name] = None
        if root is None:
            continue
        hits = [f"{root}/{name}{sfx}" for sfx in (".csv", ".csv.gz", ".parquet", ".pq", "")]
        hits = [h for h in hits if path_exists(spark, h) and (not h.endswith(name) or _is_dir(spark, h))]
        if len(hits) > 1:
            raise InputFileError(f"{root}: several {name} tables ({', '.join(hits)}); keep one or pass --{name} FILE")
        found[name] = hits[0] if hits else None
    if found["orders"] is None:
        if root is None:
            raise InputFileError("no input data: pass --data DIR (with orders.csv or orders.parquet) or --orders FILE")
        raise InputFileError(f"{root}: no orders file (expected orders.csv or orders.parquet, or pass --orders FILE)")
    return found


def _check_header(path: str, schema: TableSchema, columns: list[str]) -> None:
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise InputFileError(f"{path}: duplicate column name {c!r} in the header")
        seen.add(c)
    missing = [c for c in schema.required if c not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) if columns else "none"
        what = "column" if len(missing) == 1 else "columns"
        raise InputFileError(
            f"{path}: missing required {what} {', '.join(repr(m) for m in missing)} of the {schema.name} table "
            f"(found columns: {found})"
        )


def _parquet_nanos_columns(path: str) -> set[str] | None:
    """Columns stored as nanosecond timestamps in a Parquet file or directory, read from its footer(s).

    None when pyarrow cannot open the path (e.g. an object store without an fsspec driver).
    """
    try:
        import pyarrow as pa
        import pyarrow.dataset as pads

        local = path[len("file:"):] if path.startswith("file:") else path
        schema = pads.dataset(local, format="parquet").schema
    except Exception:  # noqa: BLE001 - any failure means "unknown", handled by the caller
        return None
    return {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}


def _nanos_split(col: Column) -> tuple[Column, Column]:
    """INT64 nanoseconds since the epoch as (whole seconds, floored; nanoseconds within the second), exactly:
    Spark's ``/`` is a double division, exact for a multiple of 10^9 and for the part below a second."""
    from pyspark.sql import functions as F

    billion = F.lit(1_000_000_000).cast("long")
    frac = F.pmod(col, billion)
    return ((col - frac) / billion).cast("long"), frac


def _nanos_to_micros(col: Column) -> Column:
    """INT64 nanoseconds since the epoch as INT64 microseconds, floored, exactly."""
    from pyspark.sql import functions as F

    secs, frac = _nanos_split(col)
    return secs * F.lit(1_000_000).cast("long") + F.floor(frac / F.lit(1000)).cast("long")


def _nanos_as_text(col: Column) -> Column:
    """INT64 nanoseconds since the epoch as ISO-8601 UTC, exactly (integer arithmetic, no float rounding)."""
    from pyspark.sql import functions as F

    secs, frac = _nanos_split(col)
    text = F.concat(F.date_format(F.timestamp_seconds(secs), "yyyy-MM-dd'T'HH:mm:ss"), F.lit("."),
                    F.lpad(frac.cast("string"), 9, "0"))
    return F.concat(F.regexp_replace(text, r"\.0+$", ""), F.lit("Z"))


def _as_text(col: Column, data_type: Any, nanos: bool = False) -> Column:
    """A Parquet column rendered as :func:`features.io.read_table` renders it (ISO-8601 UTC timestamps).

    ``nanos``: the column is a nanosecond timestamp that Spark read as INT64.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if nanos and isinstance(data_type, T.LongType):
        return _nanos_as_text(col)
    if isinstance(data_type, T.TimestampType | T.TimestampNTZType):
        text = F.regexp_replace(F.date_format(col, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"), r"\.0+$", "")
        return F.concat(text, F.lit("Z"))
    if isinstance(data_type, T.DateType):
        return F.date_format(col, "yyyy-MM-dd")
    return col.cast("string")


def _typed_form(kind: str | None, data_type: Any, nanos: bool) -> str | None:
    """How the SQL fast path reads a typed Parquet column of contract ``kind`` as it is (None: from its text).

    The forms the embedded path checks typed too (:func:`features.cells.typed_kind`): timestamps (``ts``; ``nanos``
    for nanosecond timestamps Spark reads as INT64), doubles and integers.
    """
    from pyspark.sql import types as T

    if kind == "timestamp":
        if nanos and isinstance(data_type, T.LongType):
            return "nanos"
        return "ts" if isinstance(data_type, T.TimestampType | T.TimestampNTZType) else None
    if kind == "float" and isinstance(data_type, T.DoubleType):
        return "double"
    if kind == "int" and isinstance(data_type, T.LongType | T.IntegerType | T.ShortType | T.ByteType):
        return "int"
    return None


def read_raw_table(
    spark: SparkSession, path: str, schema: TableSchema
) -> tuple[DataFrame, list[str], dict[str, tuple[str, str]]]:
    """Read one table as raw strings with ``_file`` and ``_mid`` (increasing in file order within a file).

    CSV rows with the wrong number of fields carry their text in ``_corrupt_record``. Missing values
    are empty strings, as in :func:`features.io.read_table`. ``_mid`` becomes the row number in the
    file with :func:`_row_offsets` and :func:`_attach_rows` (exact also for a directory of files).
    A typed Parquet column the fast path can check as it is (:func:`_typed_form`) is also kept typed,
    under a column of its own: its text is then made only for rows the fast path leaves to pandas.

    Returns
    -------
    (frame, the table's column names as in the file header, per typed contract column its typed
    column in the frame and its form).

    Raises
    ------
    InputFileError
        If the file cannot be read or lacks a required column (naming the file and the column).
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    typed_columns: dict[str, tuple[str, str]] = {}
    try:
        if _is_parquet_path(spark, path):
            typed = spark.read.parquet(path)
            header = list(typed.columns)
            _check_header(path, schema, header)
            nanos = _parquet_nanos_columns(path)
            if nanos is None:  # footer unreadable here: INT64 contract timestamp columns are taken as nanoseconds
                nanos = set(schema.timestamp_columns)
            text = [F.coalesce(_as_text(F.col(f"`{f.name}`"), f.dataType, f.name in nanos), F.lit("")).alias(f.name)
                    for f in typed.schema.fields]
            for i, f in enumerate(typed.schema.fields):
                form = _typed_form(schema.kinds.get(f.name), f.dataType, f.name in nanos)
                if form is not None:
                    typed_columns[f.name] = (f"_typed_{i}", form)
            kept_typed = [F.col(f"`{c}`").alias(hidden) for c, (hidden, _) in typed_columns.items()]
            frame = typed.select(*text, *kept_typed, F.lit(None).cast("string").alias(_CORRUPT),
                                 F.col("_metadata.file_path").alias(_FILE))
        else:
            first = spark.read.option("header", True).option("enforceSchema", False).csv(path)
            header = [c.replace("\ufeff", "").strip() for c in first.columns]
            _check_header(path, schema, header)
            fields = [T.StructField(c, T.StringType(), True) for c in header]
            fields.append(T.StructField(_CORRUPT, T.StringType(), True))
            csv = (
                spark.read.schema(T.StructType(fields))
                .option("header", True)
                .option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", _CORRUPT)
                .option("escape", '"')
                .option("encoding", "UTF-8")
                .csv(path)
            )
            frame = csv.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c) for c in header],
                               F.col(_CORRUPT), F.col("_metadata.file_path").alias(_FILE))
    except (PySparkException, Py4JJavaError) as err:
        message = str(err).strip()
        msg = message.splitlines()[0] if message else type(err).__name__
        if isinstance(err, Py4JJavaError):  # the Java message, without the stack trace
            msg = str(err.java_exception.getMessage() or msg).splitlines()[0]
        raise InputFileError(f"{path}: cannot be read by Spark ({msg})") from None
    return frame.withColumn(_MID, F.monotonically_increasing_id()), header, typed_columns


def _row_offsets(frame: DataFrame) -> DataFrame:
    """Per (partition, file) segment, the offset turning ``_mid`` into the 1-based row number in the file.

    ``monotonically_increasing_id`` is (partition id << 33) + position in the partition. A partition
    holds contiguous runs ("segments") of rows of one file, and a file's segments come in file order
    across partitions, so segment sizes give every row's number within its file (no Python rows, one
    aggregate over ``frame``, which must hold every data row once with its ``_mid`` and ``_file``).

    Returns
    -------
    A small frame ``_pid, _file, _offset``: row = (``_mid`` & (2**33 - 1)) + ``_offset``.
    """
    from pyspark.sql import functions as F

    mask = (1 << _POS_BITS) - 1
    segments = (
        frame.select(F.shiftright(F.col(_MID), _POS_BITS).alias("_pid"), F.col(_MID).bitwiseAND(F.lit(mask)).alias("_pos"),
                     F.col(_FILE))
        .groupBy("_pid", _FILE)
        .agg(F.min("_pos").alias("_min_pos"), F.count(F.lit(1)).alias("_n"))
        .collect()
    )
    by_file: dict[str, list[tuple[int, int, int]]] = {}
    for seg in segments:
        by_file.setdefault(seg[_FILE], []).append((int(seg["_pid"]), int(seg["_min_pos"]), int(seg["_n"])))
    rows = []
    for file, segs in by_file.items():
        start = 0
        for pid, min_pos, n in sorted(segs):
            rows.append((pid, file, start - min_pos + 1))
            start += n
    return frame.sparkSession.createDataFrame(rows, f"_pid long, {_FILE} string, _offset long")


def _attach_rows(frame: DataFrame, offsets: DataFrame) -> DataFrame:
    """Replace ``_mid`` by ``_row`` (1-based data row number in ``_file``) using :func:`_row_offsets`."""
    from pyspark.sql import functions as F

    mask = (1 << _POS_BITS) - 1
    keyed = frame.withColumn("_pid", F.shiftright(F.col(_MID), _POS_BITS))
    return (
        keyed.join(F.broadcast(offsets), on=["_pid", _FILE], how="left")
        .withColumn(_ROW, F.col(_MID).bitwiseAND(F.lit(mask)) + F.col("_offset"))
        .drop("_pid", "_offset", _MID)
    )


# ------------------------------------------------------------------------------------------ validation


@dataclass
class SparkTableResult:
    """Outcome of validating one table on Spark (the counterpart of ``validation.TableResult``).

    ``accepted`` is the typed table; ``rejected`` has ``file``, ``row`` (1-based data row in the file),
    ``reason`` and ``values`` (the row's original strings as a JSON object; ``{"line": ...}`` for rows
    with the wrong number of fields). Counts are computed eagerly; the frames are cached.
    """

    table: str
    path: str | None
    rows_in: int
    n_accepted: int
    n_rejected: int
    accepted: DataFrame
    rejected: DataFrame
    reasons: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    warning_counts: dict[str, int] = field(default_factory=dict)
    header: list[str] = field(default_factory=list)
    """The input's column names (contract and extra columns), as in the file header."""
    _cached: list[DataFrame] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with the same keys as ``TableResult.to_dict``."""
        return {
            "table": self.table,
            "path": self.path,
            "rows_in": self.rows_in,
            "accepted": self.n_accepted,
            "rejected": self.n_rejected,
            "reasons": dict(self.reasons),
            "warnings": list(self.warnings),
            "warning_counts": dict(self.warning_counts),
        }

    def rejected_table(self, *, with_file: bool | None = None) -> DataFrame:
        """Rejected rows laid out as the embedded ``<table>_rejected.csv``: ``row``, ``reason``, the
        original values (one string column per header column), and ``line`` if some row had the wrong
        number of fields; sorted by file and row.

        ``with_file`` adds the input ``file`` as the first column (default: only when the table was read
        from several files, where row numbers restart in each file).
        """
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        from features.validation import MALFORMED

        columns = list(self.header) + (["line"] if self.reasons.get(MALFORMED) else [])
        if with_file is None:
            with_file = self.n_rejected > 0 and self.rejected.select("file").distinct().limit(2).count() > 1
        struct = T.StructType([T.StructField(c, T.StringType(), True) for c in columns])
        parsed = self.rejected.withColumn("_v", F.from_json(F.col("values"), struct))
        lead = [F.col("file")] if with_file else []
        # One partition, sorted: written as one file in file/row order (rejected rows are the few).
        return parsed.repartition(1).sortWithinPartitions("file", "row").select(
            *lead, F.col("row"), F.col("reason"), *[F.col("_v").getField(c).alias(c) for c in columns]
        )

    def rejected_pandas(self, limit: int | None = None) -> pd.DataFrame:
        """Rejected rows as pandas: ``file``, ``row``, ``reason`` and one column per original value."""
        rows = self.rejected.orderBy("file", "row")
        if limit is not None:
            rows = rows.limit(limit)
        pdf = rows.toPandas()
        values = pd.DataFrame([json.loads(v) if v else {} for v in pdf["values"]], index=pdf.index)
        return pd.concat([pdf.drop(columns="values"), values], axis=1)

    def unpersist(self) -> None:
        """Release the cached frames."""
        for frame in self._cached:
            frame.unpersist()


@dataclass
class SparkValidationReport(ValidationTotals):
    """Per-table Spark validation results and the time ``now`` future timestamps were judged by.

    Totals and ``to_dict`` come from :class:`features.validation.ValidationTotals`, so the JSON has the
    same keys as the embedded ``ValidationReport``.
    """

    tables: dict[str, SparkTableResult]
    now: pd.Timestamp

    def write_rejects(self, out_dir: str | Path) -> dict[str, str]:
        """Write ``<table>_rejected.csv`` per validated table into ``out_dir`` (any Hadoop file system).

        The same file names and columns as the embedded ``ValidationReport.write_rejects`` (``row``,
        ``reason``, the original values, ``line`` for rows with the wrong number of fields; header only
        if nothing was rejected), plus a leading ``file`` column when a table was read from several files.
        Each file is written by one Spark task and moved into place.

        Returns
        -------
        Mapping table name -> written path.
        """
        target_dir = hadoop_path(out_dir).rstrip("/")
        paths: dict[str, str] = {}
        for name, res in self.tables.items():
            frame = res.rejected_table()
            spark = frame.sparkSession
            staging = f"{target_dir}/_{name}_rejected.tmp"
            (frame.write.mode("overwrite").option("header", True).option("escape", '"').option("emptyValue", "")
             .option("ignoreLeadingWhiteSpace", False).option("ignoreTrailingWhiteSpace", False).csv(staging))
            fs, hstage = _hadoop_fs(spark, staging)
            parts = [st.getPath() for st in fs.listStatus(hstage) if str(st.getPath().getName()).startswith("part-")]
            final = f"{target_dir}/{name}_rejected.csv"
            _, hfinal = _hadoop_fs(spark, final)
            if fs.exists(hfinal):
                fs.delete(hfinal, False)
            if not parts or not fs.rename(parts[0], hfinal):
                raise SparkEngineError(f"{final}: could not move the rejected rows into place (from {staging})")
            fs.delete(hstage, True)
            _drop_local_checksum(fs, hfinal)
            paths[name] = final
        return paths

    def unpersist(self) -> None:
        """Release the cached frames."""
        for res in self.tables.values():
            res.unpersist()


def _drop_local_checksum(fs: Any, hpath: Any) -> None:
    """Remove the ``.<name>.crc`` side file Hadoop's local file system keeps next to a written file."""
    if str(fs.getScheme()) != "file":
        return
    try:
        checksum = fs.getChecksumFile(hpath)
        raw_fs = fs.getRawFileSystem()
        if raw_fs.exists(checksum):
            raw_fs.delete(checksum, False)
    except Exception:  # noqa: BLE001 - a leftover .crc file is harmless
        log.debug("could not remove the checksum file of %s", hpath)


#: Characters that may be stripped as whitespace at the edges of a cell (a superset of what Python's
#: ``str.strip`` and Arrow's ``utf8_trim_whitespace`` remove): cells starting or ending with one never
#: take the SQL fast path.
_EDGE_SPACE = r"\x00-\x20\x7f-\xa0\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f\u3000\ufeff"
_PLAIN_RE = f"^[^{_EDGE_SPACE}](.*[^{_EDGE_SPACE}])?$"  # anchored: far cheaper than searching for an edge
#: ISO-8601 forms on which Spark's timestamp cast and pandas' ISO-8601 parser agree to the microsecond
#: (naive = UTC). Other forms (and impossible dates, which the cast turns into NULL) go to validate_table.
_TS_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?)?$"
#: Plain decimals of at most 15 characters: every parser rounds them correctly (pandas' ``to_numeric`` is not
#: correctly rounded for 16-17 digits, so those take the pandas path, as on the embedded engine).
_DEC_RE = r"^\d+(\.\d+)?$"
_SIGNED_DEC_RE = r"^-?\d+(\.\d+)?$"
_MAX_DIGITS = 15
_INT_RE = r"^\d{1,9}$"
_WORD_RE = r"^[A-Za-z0-9_]+$"
_DEL = "\x7f"
_FAST = "_fast"
_NO_STATUS = "_no_status"
_STATUS_MISSING = "status missing, taken as paid"


def _fast_path(
    schema: TableSchema, header: list[str], config: StrataConfig, now: pd.Timestamp,
    typed: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[Column, dict[str, Column], Column | None]:
    """The SQL fast path of :func:`features.validation.validate_table`, for rows it surely accepts.

    A row takes the fast path only if every contract cell is in a plain form on which Spark SQL and
    pandas provably agree (no edge whitespace, canonical ISO-8601 timestamps, decimals of at most 15
    digits, ASCII event types and statuses) and passes every rule (required, ranges, known event
    type). Anything else (every bad row, and valid rows in unusual forms) is left to
    ``validate_table`` itself, so reasons are always its own.

    A column in ``typed`` (:func:`read_raw_table`) is checked as its values, as the embedded path checks typed
    Parquet: a timestamp present and within the bounds (a nanosecond one floored to Spark's microseconds, as
    the rows left to pandas are), a double not NaN (missing) and finite within the column's range, an integer
    within its range.

    Returns
    -------
    (condition, typed value per contract column in ``header`` (meaningful where the condition
    holds), "status was missing" flag or None).
    """
    from pyspark.sql import functions as F

    from features.cells import NULL_TOKENS

    rules = config.data
    ts_max = now + pd.Timedelta(hours=rules.future_tolerance_hours)
    ts_min = parse_as_of(rules.min_timestamp)
    # Whole microseconds inside [ts_min, ts_max]: exact integer comparisons, no rounding.
    us_max = (ts_max.value // 1000)
    us_min = -((-ts_min.value) // 1000)
    event_types = {t.lower(): t for t in rules.event_types}
    ascii_types = {k: v for k, v in event_types.items() if re.fullmatch(_WORD_RE, k)}
    nulls = sorted(NULL_TOKENS)

    ok = F.lit(True)
    values: dict[str, Column] = {}
    no_status: Column | None = None
    for col in schema.columns:
        if col not in header:
            continue
        kind = schema.kinds[col]
        required = col in schema.required
        if typed is not None and col in typed:
            cell_ok, values[col] = _typed_cell(F.col(f"`{typed[col][0]}`"), typed[col][1], col, required, rules,
                                               us_min, us_max)
            ok = ok & cell_ok
            continue
        raw = F.col(f"`{col}`")
        null = raw.isin(nulls)
        ascii_only = F.length(raw) == F.octet_length(raw)  # cheap; lets most checks skip regular expressions
        if kind == "timestamp":
            ts = raw.try_cast("timestamp")
            micros = F.unix_micros(ts)
            good = raw.rlike(_TS_RE) & ts.isNotNull() & (micros >= F.lit(us_min)) & (micros <= F.lit(us_max))
            value = ts
        elif kind == "float":
            pattern = _DEC_RE if col == "amount" else _SIGNED_DEC_RE
            num = raw.try_cast("double")
            good = (F.length(raw) <= _MAX_DIGITS) & raw.rlike(pattern)
            if col == "amount":
                good = good & (num <= F.lit(float(rules.max_amount)))
            value = F.when(~null, num)
        elif kind == "int":
            num = raw.try_cast("long")
            good = raw.rlike(_INT_RE) & (num >= 1) & (num <= F.lit(int(rules.max_quantity)))
            value = F.when(~null, num)
        elif col == "event_type":
            canon = F.create_map(*[F.lit(x) for kv in ascii_types.items() for x in kv]) if ascii_types else None
            mapped = F.element_at(canon, F.lower(raw)) if canon is not None else F.lit(None).cast("string")
            # An ASCII cell whose lower case is a (word-character) key is itself a word.
            good = ascii_only & mapped.isNotNull()
            value = F.when(~null, mapped)
        elif col == "status":
            lowered = F.lower(raw)
            good = ascii_only & lowered.isin(list(ORDER_STATUSES))
            value = F.when(null, F.lit("paid")).otherwise(lowered)
            no_status = null
        else:
            first, last = F.substring(raw, 1, 1), F.substring(raw, -1, 1)
            ascii_plain = ascii_only & (first > " ") & (first < _DEL) & (last > " ") & (last < _DEL)
            good = ~null & (ascii_plain | (~ascii_only & raw.rlike(_PLAIN_RE)))
            value = F.when(~null, raw)
        # The anchored patterns above admit no edge whitespace, and null tokens have none.
        cell_ok = (good & ~null) if required else (good | null)
        ok = ok & cell_ok
        values[col] = value.cast(_spark_type(kind))
    return ok, values, no_status


def _typed_cell(
    x: Column, form: str, col: str, required: bool, rules: Any, us_min: int, us_max: int
) -> tuple[Column, Column]:
    """The fast-path condition of one typed Parquet cell (see :func:`_fast_path`) and its value."""
    from pyspark.sql import functions as F

    if form in ("ts", "nanos"):
        if form == "nanos":
            ts = F.timestamp_micros(_nanos_to_micros(x))  # floored, as the rows left to pandas are (Spark's unit)
        else:
            ts = x.cast("timestamp")  # a zone-less timestamp is UTC (the session's time zone), as embedded
        micros = F.unix_micros(ts)
        null = x.isNull()
        good = ts.isNotNull() & (micros >= F.lit(us_min)) & (micros <= F.lit(us_max))
        value = ts
    elif form == "double":
        null = x.isNull() | F.isnan(x)  # NaN is missing, as its text "nan" is a null token
        good = ~null & (x != F.lit(float("inf"))) & (x != F.lit(float("-inf")))
        if col == "amount":
            good = good & (x >= F.lit(0.0)) & (x <= F.lit(float(rules.max_amount)))
        value = F.when(~null, x)
    else:  # int
        null = x.isNull()
        good = (x >= F.lit(1)) & (x <= F.lit(int(rules.max_quantity)))
        value = F.when(~null, x.cast("long"))
    ok = F.coalesce(good & ~null, F.lit(False)) if required else F.coalesce(good | null, F.lit(False))
    return ok, value


def _slow_schema(schema: TableSchema, header: list[str]) -> Any:
    from pyspark.sql import types as T

    fields = [
        T.StructField(_KIND, T.StringType(), False),
        T.StructField(_FILE, T.StringType(), True),
        T.StructField(_MID, T.LongType(), True),
        T.StructField(_REASON, T.StringType(), True),
        T.StructField(_RAW, T.StringType(), True),
        T.StructField(_NO_STATUS, T.BooleanType(), True),
    ]
    return T.StructType(fields + list(_contract_schema(schema, header).fields))


def _partition_validator(
    schema: TableSchema, header: list[str], config: StrataConfig, now: pd.Timestamp
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: :func:`features.validation.validate_table` on each Arrow batch.

    Runs on the rows the SQL fast path left (bad rows and unusual forms). Emits accepted rows (typed,
    with ``_no_status``) and rejected rows (``_reason`` and the original strings as ``_raw`` JSON).
    """
    typed_cols = [c for c in schema.columns if c in header]
    from features.cells import NULL_TOKENS  # resolved on the driver; shipped by value

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from features.validation import validate_table

        for batch in batches:
            if not len(batch):
                continue
            raw = batch[header].copy()
            raw.index = pd.Index(batch[_MID].to_numpy(dtype="int64"), name="row")  # file order
            files = pd.Series(batch[_FILE].to_numpy(), index=raw.index)
            res = validate_table(raw, schema, config, now, known_users=None)
            parts = []
            rej_rows = res.rejected["row"].to_numpy(dtype="int64") if len(res.rejected) else np.empty(0, "int64")
            if len(rej_rows):
                values = res.rejected[header].to_dict(orient="records")
                parts.append(pd.DataFrame({
                    _KIND: "rejected", _FILE: files.loc[rej_rows].to_numpy(), _MID: rej_rows,
                    _REASON: res.rejected["reason"].to_numpy(),
                    _RAW: [json.dumps(v, ensure_ascii=False) for v in values],
                }))
            acc_rows = raw.index.to_numpy()[~np.isin(raw.index.to_numpy(), rej_rows)]
            acc = res.accepted.reset_index(drop=True)
            if len(acc):
                frame = pd.DataFrame({_KIND: "accepted", _FILE: files.loc[acc_rows].to_numpy(), _MID: acc_rows,
                                      _REASON: None, _RAW: None})
                if "status" in header:
                    frame[_NO_STATUS] = raw.loc[acc_rows, "status"].astype(str).str.strip().isin(NULL_TOKENS).to_numpy()
                for c in typed_cols:
                    if schema.kinds[c] == "timestamp":
                        # Spark holds microseconds: a nanosecond part pandas read is floored, as the fast path
                        # floors typed nanoseconds (converting it as it is would fail the batch)
                        frame[c] = acc[c].dt.floor("us").to_numpy()
                    else:
                        frame[c] = acc[c].to_numpy() if c != "quantity" else acc[c].array
                parts.append(frame)
            if not parts:
                continue
            out = pd.concat(parts, ignore_index=True)
            for c in (_NO_STATUS, *typed_cols):
                if c not in out.columns:
                    out[c] = None
            yield out[[_KIND, _FILE, _MID, _REASON, _RAW, _NO_STATUS, *typed_cols]]

    return run


def validate_table_spark(
    spark: SparkSession,
    path: str,
    schema: TableSchema,
    config: StrataConfig,
    now: pd.Timestamp,
    known_users: DataFrame | None = None,
) -> SparkTableResult:
    """Read and validate one table on Spark with the rules of :func:`features.validation.validate_table`.

    Rows in plain, valid form are typed by Spark SQL (:func:`_fast_path`, no Python); the others go
    through ``validate_table`` itself in ``mapInPandas``; duplicate keys (the first in file order is
    kept) and users missing from ``users`` are global steps. Row numbers are computed only when
    some row is rejected.

    Parameters
    ----------
    path : the table's file or directory (any Hadoop file system).
    now : validation time; timestamps after ``now + future_tolerance_hours`` are rejected as future.
    known_users : accepted ``users`` (a frame with ``user_id``); rows of other users are kept and
        counted as a warning.

    Returns
    -------
    SparkTableResult with ``rows_in == n_accepted + n_rejected`` and the reasons of the embedded path.
    """
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from features.validation import MALFORMED, UNKNOWN_USER_WARNING

    now = parse_as_of(now)
    raw, header, typed_columns = read_raw_table(spark, path, schema)
    warnings: list[str] = []
    extra = [c for c in header if c not in schema.columns]
    if extra:
        warnings.append(f"ignored columns not in the {schema.name} contract: {', '.join(extra)}")
    typed_cols = [c for c in schema.columns if c in header]
    fast_ok, fast_values, no_status = _fast_path(schema, header, config, now, typed_columns)
    # The condition is evaluated once per row (a projection of its own: Spark does not inline an
    # expensive expression into the next projection), then typed values for fast rows and the
    # original strings only for the others.
    flagged = raw.select("*", (F.col(_CORRUPT).isNull() & fast_ok).alias(_FAST))
    fast = F.col(_FAST)
    checked = flagged.select(
        F.col(_FILE), F.col(_MID), F.col(_CORRUPT), fast,
        *[F.when(fast, v).alias(c) for c, v in fast_values.items()],
        (F.when(fast, no_status) if no_status is not None else F.lit(False)).alias(_NO_STATUS),
        *[F.when(~fast, F.col(f"`{c}`")).alias(f"_raw_{i}") for i, c in enumerate(header)],
    ).persist(StorageLevel.MEMORY_AND_DISK)

    slow_in = checked.where(~F.col(_FAST) & F.col(_CORRUPT).isNull()).select(
        F.col(_FILE), F.col(_MID), *[F.col(f"_raw_{i}").alias(c) for i, c in enumerate(header)]
    )
    if slow_in.limit(1).count():
        slow = slow_in.mapInPandas(_partition_validator(schema, header, config, now), _slow_schema(schema, header))
    else:  # clean input: no Python worker is started at all
        slow = spark.createDataFrame([], _slow_schema(schema, header))
    slow = slow.persist(StorageLevel.MEMORY_AND_DISK)
    accepted = checked.where(F.col(_FAST)).select(_FILE, _MID, _NO_STATUS, *typed_cols).unionByName(
        slow.where(F.col(_KIND) == "accepted").select(_FILE, _MID, _NO_STATUS, *typed_cols)
    )
    malformed = checked.where(F.col(_CORRUPT).isNotNull()).select(
        _FILE, _MID, F.lit(MALFORMED).alias("reason"), F.to_json(F.struct(F.col(_CORRUPT).alias("line"))).alias("values")
    )
    rejected = slow.where(F.col(_KIND) == "rejected").select(
        _FILE, _MID, F.col(_REASON).alias("reason"), F.col(_RAW).alias("values")
    ).unionByName(malformed)
    key = {"orders": "order_id", "users": "user_id"}.get(schema.name)
    if key is not None and key in typed_cols:
        # Global step: a later row repeating an accepted key is rejected (first in file order wins).
        rank = F.row_number().over(Window.partitionBy(key).orderBy(F.col(_FILE), F.col(_MID)))
        ranked = accepted.withColumn("_dup_rank", rank)
        dups = ranked.where(F.col("_dup_rank") > 1).select(_FILE, _MID)
        raw_values = F.to_json(F.struct(*[F.col(f"`{c}`") for c in header]))
        dup_rows = raw.join(dups, on=[_FILE, _MID], how="inner").select(
            _FILE, _MID, F.lit(f"duplicate {key}").alias("reason"), raw_values.alias("values")
        )
        rejected = rejected.unionByName(dup_rows)
        accepted = ranked.where(F.col("_dup_rank") == 1).drop("_dup_rank")
    accepted = accepted.select(*typed_cols, _NO_STATUS).persist(StorageLevel.MEMORY_AND_DISK)
    rejected = rejected.persist(StorageLevel.MEMORY_AND_DISK)
    agg = [F.count(F.lit(1)).alias("n")]
    if "status" in typed_cols:
        agg.append(F.sum(F.col(_NO_STATUS).cast("long")).alias("no_status"))
    stats = accepted.agg(*agg).collect()[0]
    n_accepted = int(stats["n"])
    reason_counts = {r["reason"]: int(r["count"]) for r in rejected.groupBy("reason").count().collect()}
    n_rejected = sum(reason_counts.values())
    if n_rejected:
        rejected_rows = _attach_rows(rejected, _row_offsets(checked)).select(
            F.col(_FILE).alias("file"), F.col(_ROW).alias("row"), "reason", "values"
        ).persist(StorageLevel.MEMORY_AND_DISK)
        rejected_rows.count()
    else:
        rejected_rows = rejected.select(F.col(_FILE).alias("file"), F.col(_MID).alias("row"), "reason", "values")
    rejected.unpersist()
    slow.unpersist()
    checked.unpersist()
    accepted_typed = accepted.select(*typed_cols)

    warning_counts: dict[str, int] = {}
    n_no_status = int(stats["no_status"] or 0) if "status" in typed_cols else 0
    if n_no_status:
        warnings.append(f"{n_no_status:,} orders without a status were taken as paid")
        warning_counts[_STATUS_MISSING] = n_no_status
    if known_users is not None and schema.name != "users" and "user_id" in typed_cols:
        unknown = accepted_typed.join(known_users.select("user_id").distinct(), on="user_id", how="left_anti")
        ustats = unknown.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("user_id").alias("u")).collect()[0]
        if int(ustats["n"]):
            n_users = int(ustats["u"])
            plural = "user" if n_users == 1 else "users"
            warnings.append(f"{int(ustats['n']):,} {schema.name} rows of {n_users:,} {plural} not in the users table (kept)")
            warning_counts[UNKNOWN_USER_WARNING] = int(ustats["n"])
    rows_in = n_accepted + n_rejected
    if rows_in == 0:
        warnings.append(f"the {schema.name} table has no data rows")
    return SparkTableResult(
        table=schema.name, path=path, rows_in=rows_in, n_accepted=n_accepted, n_rejected=n_rejected,
        accepted=accepted_typed, rejected=rejected_rows, reasons=reason_counts, warnings=warnings,
        warning_counts=warning_counts, header=header, _cached=[accepted, rejected_rows],
    )


def load_dataset_spark(
    spark: SparkSession,
    data_dir: str | Path | None = None,
    *,
    orders: str | Path | None = None,
    events: str | Path | None = None,
    users: str | Path | None = None,
    config: StrataConfig,
    now: pd.Timestamp | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[SparkDataset, SparkValidationReport]:
    """Find, read and validate the input tables on Spark (the counterpart of ``validation.load_dataset``).

    Parameters
    ----------
    data_dir : directory (any Hadoop file system) with ``orders.*`` and optional ``events.*``, ``users.*``.
    orders, events, users : explicit paths; they override files found in ``data_dir``.
    config : validation rules (``config.data``).
    now : validation time (default: the current time, UTC) for rejecting future timestamps.
    progress : optional callback told which table is being validated.

    Returns
    -------
    (SparkDataset of accepted rows, cached; absent tables are None), the validation report.
    """
    files = find_tables_spark(spark, data_dir, orders=orders, events=events, users=users)
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else parse_as_of(now)
    step = progress or (lambda _msg: None)
    results: dict[str, SparkTableResult] = {}
    known: DataFrame | None = None
    for name in ("users", "orders", "events"):
        path = files[name]
        if path is None:
            continue
        step(name)
        results[name] = validate_table_spark(spark, path, SCHEMAS[name], config, now_ts, known_users=known)
        if name == "users":
            known = results[name].accepted
    dataset = SparkDataset(
        orders_unique="order_id" in results["orders"].accepted.columns,  # duplicates were rejected
        orders=results["orders"].accepted,
        events=results["events"].accepted if "events" in results and results["events"].n_accepted else None,
        users=results["users"].accepted if "users" in results and results["users"].n_accepted else None,
    )
    ordered = {k: results[k] for k in TABLE_NAMES if k in results}
    return dataset, SparkValidationReport(tables=ordered, now=now_ts)


# ------------------------------------------------------------------------------------------ entry points


def write_features_spark(features: DataFrame, out: str, *, mode: str = "overwrite") -> str:
    """Write a Spark feature frame as Parquet part files under ``out`` (a directory); returns ``out``."""
    target = hadoop_path(out)
    features.write.mode(mode).parquet(target)
    return target


def sample_users_spark(
    dataset: SparkDataset, fraction: float, seed: int = 42
) -> SparkDataset:
    """A user-level sample of ``dataset``: every row of about ``fraction`` of the users, none of the others.

    Users are chosen by a hash of ``user_id`` and ``seed`` (deterministic, no shuffle), so a user's
    orders, events and profile stay together and repeated runs draw the same users. Use it to train on
    a sample of a large base: sample on Spark, collect or write it, then train on one machine.
    """
    from pyspark.sql import functions as F

    if not 0.0 < fraction <= 1.0:
        raise StrataError(f"--fraction: the share of users to sample must be in (0, 1], got {fraction}")
    buckets = 1_000_000
    threshold = int(round(fraction * buckets))

    def keep(frame: DataFrame | None) -> DataFrame | None:
        if frame is None:
            return None
        h = F.pmod(F.xxhash64(F.col(ENTITY_KEY), F.lit(int(seed))), F.lit(buckets))
        return frame.where(h < threshold)

    return SparkDataset(orders=keep(dataset.orders), events=keep(dataset.events), users=keep(dataset.users),  # type: ignore[arg-type]
                        orders_unique=dataset.orders_unique)


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


def export_user_sample(
    dataset: SparkDataset, out_dir: str | Path, fraction: float, seed: int = 42
) -> dict[str, Path]:
    """Sample whole users on Spark and write them as ``orders/events/users.parquet`` for ``strata train``.

    The sample (see :func:`sample_users_spark`) is collected to the driver, so ``out_dir`` is a local
    directory and the sample must fit in the driver's memory; ``strata train --data <out_dir>`` then
    builds its training set (cutoffs, labels) from it with the embedded engine.

    Returns
    -------
    Mapping table name -> written Parquet file.
    """
    from features.demo_data import write_dataset

    sample = collect_dataset(sample_users_spark(dataset, fraction, seed=seed))
    return write_dataset(sample, out_dir, "parquet")


@dataclass
class SparkFeaturesRun:
    """What :func:`run_features_spark` did: counts, timings (seconds) and where it wrote."""

    out: str
    as_of: str
    n_users: int
    n_prospects: int
    n_features: int
    validation: SparkValidationReport
    master: str
    seconds_start: float
    seconds_total: float

    def summary_line(self) -> str:
        """One line for the CLI: what was written, how many users, timings."""
        return (
            f"wrote {self.out} (Parquet part files): {self.n_users:,} users ({self.n_prospects:,} prospects) x "
            f"{self.n_features} features as of {self.as_of} on Spark {self.master} in {self.seconds_total:.1f}s "
            f"({self.seconds_start:.1f}s Spark start-up)"
        )


def run_features_spark(
    *,
    data_dir: str | Path | None,
    orders: str | Path | None,
    events: str | Path | None,
    users: str | Path | None,
    as_of: str | pd.Timestamp,
    out: str | Path,
    config: StrataConfig,
    master: str | None = None,
    now: str | pd.Timestamp | None = None,
    rejects_dir: str | Path | None = None,
    sample: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> SparkFeaturesRun:
    """``strata features --engine spark``: validate on Spark, build features as of ``as_of``, write Parquet.

    Parameters
    ----------
    out : output directory of Parquet part files (``user_id``, ``as_of``, features).
    master : Spark master URL (``--spark-master``); default ``config.spark.master`` or the launcher's.
    rejects_dir : if given, rejected rows are written there as ``<table>_rejected`` CSV directories.
    sample : if given, keep only this fraction of users (see :func:`sample_users_spark`).

    Returns
    -------
    SparkFeaturesRun with the user count, the validation report and timings (seconds).
    """
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    step("starting Spark")
    spark = spark_session(config, master=master, app_name="strata-features")
    t_start = time.perf_counter() - t0
    as_of_ts = parse_as_of(as_of)
    dataset, report = load_dataset_spark(spark, data_dir, orders=orders, events=events, users=users,
                                         config=config, now=now,
                                         progress=lambda name: step(f"validating {name}"))
    if rejects_dir is not None and report.rows_rejected:
        report.write_rejects(str(rejects_dir))
    if sample is not None:
        dataset = sample_users_spark(dataset, sample, seed=config.training.seed)
    step("building features")
    features = build_features_spark(spark, dataset, as_of_ts, config)
    target = write_features_spark(features, hadoop_path(out))
    from pyspark.sql import functions as F

    written = spark.read.parquet(target)
    counts = written.agg(F.count(F.lit(1)).alias("n"), F.sum("is_prospect").alias("p")).collect()[0]
    report.unpersist()
    return SparkFeaturesRun(
        out=target, as_of=as_of_ts.isoformat(), n_users=int(counts["n"]), n_prospects=int(counts["p"] or 0),
        n_features=len(written.columns) - 2, validation=report, master=str(spark.sparkContext.master),
        seconds_start=t_start, seconds_total=time.perf_counter() - t0,
    )


@dataclass
class SparkSampleRun:
    """What :func:`run_sample_spark` did: the sample drawn, its sizes and where it was written."""

    out: str
    fraction: float
    seed: int
    n_users_total: int
    n_users: int
    rows: dict[str, int]
    validation: SparkValidationReport
    master: str
    seconds_total: float

    def summary_line(self) -> str:
        """One line for the CLI: users sampled out of how many, rows per table, where."""
        rows = ", ".join(f"{n:,} {name}" for name, n in self.rows.items())
        return (
            f"wrote {self.out}: {self.n_users:,} of {self.n_users_total:,} users (fraction {self.fraction:.6g}, "
            f"seed {self.seed}) with every row of theirs ({rows}) on Spark {self.master} in {self.seconds_total:.1f}s"
        )


def count_users_spark(dataset: SparkDataset) -> int:
    """Distinct ``user_id`` over all present tables of ``dataset`` (users, buyers and prospects alike)."""
    from pyspark.sql import functions as F

    ids = None
    for frame in dataset.tables().values():
        part = frame.select(ENTITY_KEY)
        ids = part if ids is None else ids.unionByName(part)
    assert ids is not None
    return int(ids.where(F.col(ENTITY_KEY).isNotNull()).distinct().count())


def run_sample_spark(
    *,
    data_dir: str | Path | None,
    orders: str | Path | None,
    events: str | Path | None,
    users: str | Path | None,
    out: str | Path,
    config: StrataConfig,
    fraction: float | None = None,
    n_users: int | None = None,
    seed: int | None = None,
    fmt: str = "parquet",
    master: str | None = None,
    now: str | pd.Timestamp | None = None,
    rejects_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SparkSampleRun:
    """``strata sample``: validate on Spark, keep whole users (:func:`sample_users_spark`), write a data directory.

    Parameters
    ----------
    out : local directory that gets ``orders``, ``events``, ``users`` (``.parquet`` or ``.csv``) of the
        sampled users, ready for ``strata train --data <out>``.
    fraction : share of users to keep, in (0, 1]; or
    n_users : about this many users (the fraction is ``n_users`` over the distinct users of all tables).
    seed : hash seed (default ``config.training.seed``): the same seed and fraction give the same users,
        and a smaller fraction gives a subset of a larger one.
    rejects_dir : if given, rejected input rows are written there as ``<table>_rejected.csv``.

    Returns
    -------
    SparkSampleRun with the fraction used, users sampled of the total, and rows per table.
    """
    from features.demo_data import write_dataset

    if (fraction is None) == (n_users is None):
        raise StrataError("sample: give exactly one of --fraction F or --n-users N")
    if n_users is not None and n_users < 1:
        raise StrataError(f"--n-users: must be at least 1, got {n_users}")
    if fmt not in ("parquet", "csv"):
        raise StrataError(f"--format: expected parquet or csv, got {fmt!r}")
    step = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    step("starting Spark")
    spark = spark_session(config, master=master, app_name="strata-sample")
    dataset, report = load_dataset_spark(spark, data_dir, orders=orders, events=events, users=users, config=config,
                                         now=now, progress=lambda name: step(f"validating {name}"))
    if rejects_dir is not None:
        report.write_rejects(rejects_dir)
    step("counting users")
    total = count_users_spark(dataset)
    if fraction is None:
        assert n_users is not None
        fraction = min(1.0, n_users / total) if total else 1.0
    seed = config.training.seed if seed is None else int(seed)
    step(f"sampling {fraction:.6g} of {total:,} users")
    sample = collect_dataset(sample_users_spark(dataset, fraction, seed=seed))
    written = write_dataset(sample, out, fmt)  # type: ignore[arg-type]
    chosen = pd.concat([f[ENTITY_KEY] for f in (sample.orders, sample.events, sample.users) if f is not None])
    rows = {name: len(getattr(sample, name)) for name in written}
    report.unpersist()
    return SparkSampleRun(
        out=str(out), fraction=fraction, seed=seed, n_users_total=total, n_users=int(chosen.nunique()), rows=rows,
        validation=report, master=str(spark.sparkContext.master), seconds_total=time.perf_counter() - t0,
    )
