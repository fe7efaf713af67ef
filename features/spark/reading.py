"""Reading input tables on Spark: finding them on any Hadoop file system, raw strings, row numbers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.contract import TableSchema
from features.errors import InputFileError
from features.io import TABLE_FILE_SUFFIXES

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

#: Column of the 1-based data row number in the input file.
ROW_COL = "_row"
#: Column of ``monotonically_increasing_id()``, increasing in file order within a file.
MID_COL = "_mid"
#: Column holding the text of a CSV row with the wrong number of fields.
CORRUPT_COL = "_corrupt_record"
#: Column of the input file a row was read from.
FILE_COL = "_file"
_POS_BITS = 33  # monotonically_increasing_id(): partition id in the upper bits, position in the lower 33


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


def hadoop_fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """The Hadoop ``FileSystem`` holding ``path`` and ``path`` as a Hadoop ``Path`` (JVM objects)."""
    jvm: Any = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    return fs, hpath


def path_exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` (local, ``hdfs://``, ``s3a://``, ``dbfs:/``...) exists, asked through Hadoop."""
    fs, hpath = hadoop_fs(spark, path)
    return bool(fs.exists(hpath))


def _is_dir(spark: SparkSession, path: str) -> bool:
    fs, hpath = hadoop_fs(spark, path)
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
    fs, hpath = hadoop_fs(spark, path)
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
        hits = [f"{root}/{name}{sfx}" for sfx in (*TABLE_FILE_SUFFIXES, "")]
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


def nanos_to_micros(col: Column) -> Column:
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
    file with :func:`row_offsets` and :func:`attach_rows` (exact also for a directory of files).
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
            frame = typed.select(*text, *kept_typed, F.lit(None).cast("string").alias(CORRUPT_COL),
                                 F.col("_metadata.file_path").alias(FILE_COL))
        else:
            first = spark.read.option("header", True).option("enforceSchema", False).csv(path)
            header = [c.replace("\ufeff", "").strip() for c in first.columns]
            _check_header(path, schema, header)
            fields = [T.StructField(c, T.StringType(), True) for c in header]
            fields.append(T.StructField(CORRUPT_COL, T.StringType(), True))
            csv = (
                spark.read.schema(T.StructType(fields))
                .option("header", True)
                .option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT_COL)
                .option("escape", '"')
                .option("encoding", "UTF-8")
                .csv(path)
            )
            frame = csv.select(*[F.coalesce(F.col(f"`{c}`"), F.lit("")).alias(c) for c in header],
                               F.col(CORRUPT_COL), F.col("_metadata.file_path").alias(FILE_COL))
    except (PySparkException, Py4JJavaError) as err:
        message = str(err).strip()
        msg = message.splitlines()[0] if message else type(err).__name__
        if isinstance(err, Py4JJavaError):  # the Java message, without the stack trace
            msg = str(err.java_exception.getMessage() or msg).splitlines()[0]
        raise InputFileError(f"{path}: cannot be read by Spark ({msg})") from None
    return frame.withColumn(MID_COL, F.monotonically_increasing_id()), header, typed_columns


def row_offsets(frame: DataFrame) -> DataFrame:
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
        frame.select(F.shiftright(F.col(MID_COL), _POS_BITS).alias("_pid"), F.col(MID_COL).bitwiseAND(F.lit(mask)).alias("_pos"),
                     F.col(FILE_COL))
        .groupBy("_pid", FILE_COL)
        .agg(F.min("_pos").alias("_min_pos"), F.count(F.lit(1)).alias("_n"))
        .collect()
    )
    by_file: dict[str, list[tuple[int, int, int]]] = {}
    for seg in segments:
        by_file.setdefault(seg[FILE_COL], []).append((int(seg["_pid"]), int(seg["_min_pos"]), int(seg["_n"])))
    rows = []
    for file, segs in by_file.items():
        start = 0
        for pid, min_pos, n in sorted(segs):
            rows.append((pid, file, start - min_pos + 1))
            start += n
    return frame.sparkSession.createDataFrame(rows, f"_pid long, {FILE_COL} string, _offset long")


def attach_rows(frame: DataFrame, offsets: DataFrame) -> DataFrame:
    """Replace ``_mid`` by ``_row`` (1-based data row number in ``_file``) using :func:`row_offsets`."""
    from pyspark.sql import functions as F

    mask = (1 << _POS_BITS) - 1
    keyed = frame.withColumn("_pid", F.shiftright(F.col(MID_COL), _POS_BITS))
    return (
        keyed.join(F.broadcast(offsets), on=["_pid", FILE_COL], how="left")
        .withColumn(ROW_COL, F.col(MID_COL).bitwiseAND(F.lit(mask)) + F.col("_offset"))
        .drop("_pid", "_offset", MID_COL)
    )
