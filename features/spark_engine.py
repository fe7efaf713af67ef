"""The Apache Spark engine: the same validation and the same feature SQL, on data beyond one machine.

Nothing here re-implements a feature or a validation rule:

* **Features**: the Spark DataFrames are registered as temp views named ``orders``, ``events`` and
  ``users`` and the query of :func:`features.pipeline.feature_queries` (written once, DuckDB dialect)
  runs on them after SQLGlot transpiles it (:func:`transpile_for_spark`). Collected results go through
  :func:`features.pipeline.finalize_features`, exactly like the DuckDB path.
* **Validation**: every partition of a raw table (all strings, as :func:`features.io.read_table` gives)
  is validated by the very same :func:`features.validation.validate_table` inside ``mapInPandas``. The
  rules that need every row at once run as global Spark steps: duplicate ``order_id`` / ``user_id``
  (the first in file order is kept, as in pandas) and events/orders of users missing from ``users``.
  Every row is accounted for: ``rows_in == accepted + rejected``, with the same reasons as the
  embedded path.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.config import SparkConfig, StrataConfig
from features.contract import ENTITY_KEY, EVENTS, ORDERS, SCHEMAS, USERS, TableSchema
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
    if effective_master is not None:
        builder = builder.master(effective_master)
    for key, value in {**DEFAULT_CONF, **spark_cfg.conf, **REQUIRED_CONF}.items():
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
    ``UNIX_MICROS(ts) / 1e6`` instead, so ages in days agree to the microsecond with DuckDB.
    """
    import sqlglot
    from sqlglot import exp

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.TimeToUnix):
            arg = node.this.sql(dialect="spark")
            micros = sqlglot.parse_one(f"CAST(UNIX_MICROS({arg}) AS DOUBLE) / CAST(1000000 AS DOUBLE)", read="spark")
            return exp.Paren(this=micros)
        return node

    tree = sqlglot.parse_one(duckdb_sql, read="duckdb").transform(fix)
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


def _nanos_as_text(col: Column) -> Column:
    """INT64 nanoseconds since the epoch as ISO-8601 UTC, exactly (integer arithmetic, no float rounding)."""
    from pyspark.sql import functions as F

    billion = F.lit(1_000_000_000).cast("long")
    frac = F.pmod(col, billion)
    secs = ((col - frac) / billion).cast("long")
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


def read_raw_table(spark: SparkSession, path: str, schema: TableSchema) -> tuple[DataFrame, list[str]]:
    """Read one table as raw strings with ``_file`` and ``_mid`` (increasing in file order within a file).

    CSV rows with the wrong number of fields carry their text in ``_corrupt_record``. Missing values
    are empty strings, as in :func:`features.io.read_table`. ``_mid`` becomes the row number in the
    file with :func:`_row_offsets` and :func:`_attach_rows` (exact also for a directory of files).

    Returns
    -------
    (frame, the table's column names as in the file header).

    Raises
    ------
    InputFileError
        If the file cannot be read or lacks a required column (naming the file and the column).
    """
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

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
            frame = typed.select(*text, F.lit(None).cast("string").alias(_CORRUPT),
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
    return frame.withColumn(_MID, F.monotonically_increasing_id()), header


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

    def rejected_pandas(self, limit: int | None = None) -> pd.DataFrame:
        """Rejected rows as pandas: ``file``, ``row``, ``reason`` and one column per original value."""
        rows = self.rejected.orderBy("file", "row")
        if limit is not None:
            rows = rows.limit(limit)
        pdf = rows.toPandas()
        values = pd.DataFrame([json.loads(v) if v else {} for v in pdf["values"]], index=pdf.index)
        return pd.concat([pdf.drop(columns="values"), values], axis=1)


@dataclass
class SparkValidationReport(ValidationTotals):
    """Per-table Spark validation results and the time ``now`` future timestamps were judged by.

    Totals and ``to_dict`` come from :class:`features.validation.ValidationTotals`, so the JSON has the
    same keys as the embedded ``ValidationReport``.
    """

    tables: dict[str, SparkTableResult]
    now: pd.Timestamp

    def write_rejects(self, out_dir: str) -> dict[str, str]:
        """Write ``<table>_rejected`` (CSV part files: file, row, reason, values JSON) under ``out_dir``."""
        paths = {}
        for name, res in self.tables.items():
            target = f"{str(out_dir).rstrip('/')}/{name}_rejected"
            res.rejected.orderBy("file", "row").write.mode("overwrite").option("header", True).csv(target)
            paths[name] = target
        return paths

    def unpersist(self) -> None:
        """Release the cached frames."""
        for res in self.tables.values():
            res.accepted.unpersist()
            res.rejected.unpersist()


def _validation_schema(schema: TableSchema, header: list[str]) -> Any:
    from pyspark.sql import types as T

    fields = [
        T.StructField(_KIND, T.StringType(), False),
        T.StructField(_FILE, T.StringType(), True),
        T.StructField(_MID, T.LongType(), True),
        T.StructField(_REASON, T.StringType(), True),
        T.StructField(_RAW, T.StringType(), True),
    ]
    return T.StructType(fields + list(_contract_schema(schema, header).fields))


def _partition_validator(
    schema: TableSchema, header: list[str], config: StrataConfig, now: pd.Timestamp
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: :func:`features.validation.validate_table` on each Arrow batch.

    Emits accepted rows (typed), rejected rows (``_reason`` and ``_raw`` JSON) and one ``stats`` row
    per batch carrying the batch's warning counts (summed on the driver).
    """
    typed_cols = [c for c in schema.columns if c in header]
    from features.validation import MALFORMED  # resolved on the driver; shipped by value

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from features.validation import validate_table

        for batch in batches:
            corrupt = batch[_CORRUPT].notna().to_numpy()
            parts = []
            if corrupt.any():
                bad = batch.loc[corrupt]
                parts.append(pd.DataFrame({
                    _KIND: "rejected", _FILE: bad[_FILE].to_numpy(), _MID: bad[_MID].to_numpy(dtype="int64"),
                    _REASON: MALFORMED,
                    _RAW: [json.dumps({"line": t}, ensure_ascii=False) for t in bad[_CORRUPT]],
                }))
            good = batch.loc[~corrupt]
            raw = good[header].copy()
            raw.index = pd.Index(good[_MID].to_numpy(dtype="int64"), name="row")  # file order
            files = pd.Series(good[_FILE].to_numpy(), index=raw.index)
            res = validate_table(raw, schema, config, now, known_users=None)
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
                for c in typed_cols:
                    frame[c] = acc[c].to_numpy() if c != "quantity" else acc[c].array
                parts.append(frame)
            parts.append(pd.DataFrame({_KIND: ["stats"], _FILE: [None], _MID: [None], _REASON: [None],
                                       _RAW: [json.dumps(res.warning_counts)]}))
            out = pd.concat(parts, ignore_index=True)
            for c in typed_cols:
                if c not in out.columns:
                    out[c] = None
            yield out[[_KIND, _FILE, _MID, _REASON, _RAW, *typed_cols]]

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

    from features.validation import UNKNOWN_USER_WARNING

    now = parse_as_of(now)
    raw, header = read_raw_table(spark, path, schema)
    warnings: list[str] = []
    extra = [c for c in header if c not in schema.columns]
    if extra:
        warnings.append(f"ignored columns not in the {schema.name} contract: {', '.join(extra)}")
    typed_cols = [c for c in schema.columns if c in header]
    validated = raw.mapInPandas(_partition_validator(schema, header, config, now), _validation_schema(schema, header))
    validated = validated.persist(StorageLevel.MEMORY_AND_DISK)

    stats_rows = validated.where(F.col(_KIND) == "stats").select(_RAW).collect()
    warning_counts: dict[str, int] = {}
    for r in stats_rows:
        for k, v in json.loads(r[_RAW]).items():
            warning_counts[k] = warning_counts.get(k, 0) + int(v)
    warning_counts.pop(UNKNOWN_USER_WARNING, None)  # computed globally below

    offsets = _row_offsets(validated.where(F.col(_KIND) != "stats"))
    accepted = validated.where(F.col(_KIND) == "accepted")
    rejected = validated.where(F.col(_KIND) == "rejected").select(
        _FILE, _MID, F.col(_REASON).alias("reason"), F.col(_RAW).alias("values")
    )
    key = {"orders": "order_id", "users": "user_id"}.get(schema.name)
    if key is not None and key in typed_cols:
        # Global step: a duplicate key whose first occurrence is in another batch (first in file order wins).
        rank = F.row_number().over(Window.partitionBy(key).orderBy(F.col(_FILE), F.col(_MID)))
        ranked = accepted.withColumn("_dup_rank", rank)
        dups = ranked.where(F.col("_dup_rank") > 1).select(_FILE, _MID)
        raw_values = F.to_json(F.struct(*[F.col(f"`{c}`") for c in header]))
        dup_rows = raw.join(dups, on=[_FILE, _MID], how="inner").select(
            _FILE, _MID, F.lit(f"duplicate {key}").alias("reason"), raw_values.alias("values")
        )
        rejected = rejected.unionByName(dup_rows)
        accepted = ranked.where(F.col("_dup_rank") == 1).drop("_dup_rank")
    accepted = accepted.select(*typed_cols).persist(StorageLevel.MEMORY_AND_DISK)
    rejected = _attach_rows(rejected, offsets).select(
        F.col(_FILE).alias("file"), F.col(_ROW).alias("row"), "reason", "values"
    ).persist(StorageLevel.MEMORY_AND_DISK)
    n_accepted = accepted.count()
    reason_counts = {r["reason"]: int(r["count"]) for r in rejected.groupBy("reason").count().collect()}
    n_rejected = sum(reason_counts.values())
    validated.unpersist()

    if "status" in typed_cols and warning_counts.get("status missing, taken as paid"):
        n = warning_counts["status missing, taken as paid"]
        warnings.append(f"{n:,} orders without a status were taken as paid")
    if known_users is not None and schema.name != "users" and "user_id" in typed_cols:
        unknown = accepted.join(known_users.select("user_id").distinct(), on="user_id", how="left_anti")
        stats = unknown.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("user_id").alias("u")).collect()[0]
        if int(stats["n"]):
            warnings.append(f"{int(stats['n']):,} {schema.name} rows of {int(stats['u']):,} users not in the users table (kept)")
            warning_counts[UNKNOWN_USER_WARNING] = int(stats["n"])
    rows_in = n_accepted + n_rejected
    if rows_in == 0:
        warnings.append(f"the {schema.name} table has no data rows")
    return SparkTableResult(
        table=schema.name, path=path, rows_in=rows_in, n_accepted=n_accepted, n_rejected=n_rejected,
        accepted=accepted, rejected=rejected, reasons=reason_counts, warnings=warnings, warning_counts=warning_counts,
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
        raise StrataError(f"--sample: must be a fraction in (0, 1], got {fraction}")
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
