"""Validation on Spark with the rules of :func:`features.validation.validate_table`, and loading a data set."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.config import StrataConfig
from features.contract import ORDER_STATUSES, SCHEMAS, TableSchema
from features.cutoffs import parse_as_of
from features.spark.frames import TABLE_NAMES, SparkDataset, contract_schema, spark_type
from features.spark.reading import (
    CORRUPT_COL,
    FILE_COL,
    MID_COL,
    ROW_COL,
    attach_rows,
    find_tables_spark,
    hadoop_fs,
    hadoop_path,
    nanos_to_micros,
    read_raw_table,
    row_offsets,
)
from features.spark.session import SparkEngineError
from features.validation import TableSummary, ValidationTotals

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

_KIND = "_kind"
_REASON = "_reason"
_RAW = "_raw"


@dataclass
class SparkTableResult(TableSummary):
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
            fs, hstage = hadoop_fs(spark, staging)
            parts = [st.getPath() for st in fs.listStatus(hstage) if str(st.getPath().getName()).startswith("part-")]
            final = f"{target_dir}/{name}_rejected.csv"
            _, hfinal = hadoop_fs(spark, final)
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

    A column in ``typed`` (:func:`features.spark.reading.read_raw_table`) is checked as its values, as the embedded path checks typed
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
        values[col] = value.cast(spark_type(kind))
    return ok, values, no_status


def _typed_cell(
    x: Column, form: str, col: str, required: bool, rules: Any, us_min: int, us_max: int
) -> tuple[Column, Column]:
    """The fast-path condition of one typed Parquet cell (see :func:`_fast_path`) and its value."""
    from pyspark.sql import functions as F

    if form in ("ts", "nanos"):
        if form == "nanos":
            ts = F.timestamp_micros(nanos_to_micros(x))  # floored, as the rows left to pandas are (Spark's unit)
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
        T.StructField(FILE_COL, T.StringType(), True),
        T.StructField(MID_COL, T.LongType(), True),
        T.StructField(_REASON, T.StringType(), True),
        T.StructField(_RAW, T.StringType(), True),
        T.StructField(_NO_STATUS, T.BooleanType(), True),
    ]
    return T.StructType(fields + list(contract_schema(schema, header).fields))


def _partition_validator(
    schema: TableSchema, header: list[str], config: StrataConfig, now: pd.Timestamp
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The ``mapInPandas`` function: :func:`features.validation.validate_table` on each Arrow batch.

    Runs on the rows the SQL fast path left (bad rows and unusual forms). Emits accepted rows (typed,
    with ``_no_status``) and rejected rows (``_reason`` and the original strings as ``_raw`` JSON).
    """
    typed_cols = [c for c in schema.columns if c in header]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from features.cells import is_null, strip
        from features.validation import validate_table

        for batch in batches:
            if not len(batch):
                continue
            raw = batch[header].copy()
            raw.index = pd.Index(batch[MID_COL].to_numpy(dtype="int64"), name="row")  # file order
            files = pd.Series(batch[FILE_COL].to_numpy(), index=raw.index)
            res = validate_table(raw, schema, config, now, known_users=None)
            parts = []
            rej_rows = res.rejected["row"].to_numpy(dtype="int64") if len(res.rejected) else np.empty(0, "int64")
            if len(rej_rows):
                values = res.rejected[header].to_dict(orient="records")
                parts.append(pd.DataFrame({
                    _KIND: "rejected", FILE_COL: files.loc[rej_rows].to_numpy(), MID_COL: rej_rows,
                    _REASON: res.rejected["reason"].to_numpy(),
                    _RAW: [json.dumps(v, ensure_ascii=False) for v in values],
                }))
            acc_rows = raw.index.to_numpy()[~np.isin(raw.index.to_numpy(), rej_rows)]
            acc = res.accepted.reset_index(drop=True)
            if len(acc):
                frame = pd.DataFrame({_KIND: "accepted", FILE_COL: files.loc[acc_rows].to_numpy(), MID_COL: acc_rows,
                                      _REASON: None, _RAW: None})
                if "status" in header:
                    frame[_NO_STATUS] = is_null(strip(raw.loc[acc_rows, "status"]))
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
            yield out[[_KIND, FILE_COL, MID_COL, _REASON, _RAW, _NO_STATUS, *typed_cols]]

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
    flagged = raw.select("*", (F.col(CORRUPT_COL).isNull() & fast_ok).alias(_FAST))
    fast = F.col(_FAST)
    checked = flagged.select(
        F.col(FILE_COL), F.col(MID_COL), F.col(CORRUPT_COL), fast,
        *[F.when(fast, v).alias(c) for c, v in fast_values.items()],
        (F.when(fast, no_status) if no_status is not None else F.lit(False)).alias(_NO_STATUS),
        *[F.when(~fast, F.col(f"`{c}`")).alias(f"_raw_{i}") for i, c in enumerate(header)],
    ).persist(StorageLevel.MEMORY_AND_DISK)

    slow_in = checked.where(~F.col(_FAST) & F.col(CORRUPT_COL).isNull()).select(
        F.col(FILE_COL), F.col(MID_COL), *[F.col(f"_raw_{i}").alias(c) for i, c in enumerate(header)]
    )
    if slow_in.limit(1).count():
        slow = slow_in.mapInPandas(_partition_validator(schema, header, config, now), _slow_schema(schema, header))
    else:  # clean input: no Python worker is started at all
        slow = spark.createDataFrame([], _slow_schema(schema, header))
    slow = slow.persist(StorageLevel.MEMORY_AND_DISK)
    accepted = checked.where(F.col(_FAST)).select(FILE_COL, MID_COL, _NO_STATUS, *typed_cols).unionByName(
        slow.where(F.col(_KIND) == "accepted").select(FILE_COL, MID_COL, _NO_STATUS, *typed_cols)
    )
    malformed = checked.where(F.col(CORRUPT_COL).isNotNull()).select(
        FILE_COL, MID_COL, F.lit(MALFORMED).alias("reason"), F.to_json(F.struct(F.col(CORRUPT_COL).alias("line"))).alias("values")
    )
    rejected = slow.where(F.col(_KIND) == "rejected").select(
        FILE_COL, MID_COL, F.col(_REASON).alias("reason"), F.col(_RAW).alias("values")
    ).unionByName(malformed)
    key = {"orders": "order_id", "users": "user_id"}.get(schema.name)
    if key is not None and key in typed_cols:
        # Global step: a later row repeating an accepted key is rejected (first in file order wins).
        rank = F.row_number().over(Window.partitionBy(key).orderBy(F.col(FILE_COL), F.col(MID_COL)))
        ranked = accepted.withColumn("_dup_rank", rank)
        dups = ranked.where(F.col("_dup_rank") > 1).select(FILE_COL, MID_COL)
        raw_values = F.to_json(F.struct(*[F.col(f"`{c}`") for c in header]))
        dup_rows = raw.join(dups, on=[FILE_COL, MID_COL], how="inner").select(
            FILE_COL, MID_COL, F.lit(f"duplicate {key}").alias("reason"), raw_values.alias("values")
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
        rejected_rows = attach_rows(rejected, row_offsets(checked)).select(
            F.col(FILE_COL).alias("file"), F.col(ROW_COL).alias("row"), "reason", "values"
        ).persist(StorageLevel.MEMORY_AND_DISK)
        rejected_rows.count()
    else:
        rejected_rows = rejected.select(F.col(FILE_COL).alias("file"), F.col(MID_COL).alias("row"), "reason", "values")
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
