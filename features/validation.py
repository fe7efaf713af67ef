"""Row-level validation of input tables: every row is accepted (typed) or rejected (with a reason).

Bad input is a normal day: validation never raises for bad rows. It returns the typed rows it accepts
(dtypes of :mod:`features.dataset`), the rejected rows with their original strings, a ``reason`` and
their 1-based ``row`` number in the file, and counts per reason, so that always
``rows_in == accepted + rejected``. Rows that are kept but worth a look (events of users unknown to the
users table, orders without a status taken as paid, ignored extra columns) are reported as warnings.

Each rejected row gets the first reason that applies, checking columns in contract order. The cells are
read by :mod:`features.cells` (vectorised: text once per distinct string, timestamps and decimals from the
Arrow strings as they are); this module applies the contract's rules to them, row by row in effect but
never in a Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.cells import (
    TextColumn,
    among,
    is_dictionary,
    missing_if_all_distinct,
    text_numbers,
    text_timestamps,
    typed_kind,
    typed_numbers,
    typed_timestamps,
    typed_values,
)
from features.config import DataConfig, StrataConfig
from features.contract import EVENTS, ORDER_STATUSES, ORDERS, USERS, TableSchema
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InputFileError
from features.io import find_table_files, parquet_text, read_table, release_free_memory

MALFORMED = "wrong number of fields"
UNKNOWN_USER_WARNING = "unknown user"


class TableSummary:
    """The JSON summary shared by the embedded and the Spark per-table results (:class:`TableResult`,
    :class:`features.spark.validation.SparkTableResult`): counts, reasons, warnings; not the rows."""

    table: str
    path: str | None
    rows_in: int
    reasons: dict[str, int]
    warnings: list[str]
    warning_counts: dict[str, int]
    if TYPE_CHECKING:  # a property of TableResult, a field of SparkTableResult

        @property
        def n_accepted(self) -> int: ...

        @property
        def n_rejected(self) -> int: ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (counts, reasons, warnings; not the rows)."""
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


@dataclass
class TableResult(TableSummary):
    """Outcome of validating one table.

    ``accepted`` is typed per :mod:`features.dataset`; ``rejected`` holds ``row`` (1-based data row
    number in the file), ``reason`` and the row's original string values; ``reasons`` counts rejected
    rows per reason; ``warnings`` are sentences about rows that were kept.
    """

    table: str
    path: str | None
    rows_in: int
    accepted: pd.DataFrame
    rejected: pd.DataFrame
    reasons: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    warning_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_accepted(self) -> int:
        return len(self.accepted)

    @property
    def n_rejected(self) -> int:
        return len(self.rejected)



class ValidationTotals:
    """Totals and the JSON form shared by the embedded and the Spark validation reports.

    Subclasses hold ``tables`` (name -> per-table result with ``rows_in``, ``n_accepted``, ``n_rejected`` and
    ``to_dict()``) and ``now``.
    """

    tables: Mapping[str, Any]
    now: pd.Timestamp

    @property
    def rows_in(self) -> int:
        return sum(t.rows_in for t in self.tables.values())

    @property
    def rows_rejected(self) -> int:
        return sum(t.n_rejected for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report: ``now`` (ISO UTC), totals and one entry per table."""
        return {
            "now": self.now.isoformat(),
            "rows_in": self.rows_in,
            "rows_accepted": sum(t.n_accepted for t in self.tables.values()),
            "rows_rejected": self.rows_rejected,
            "tables": {name: t.to_dict() for name, t in self.tables.items()},
        }


@dataclass
class ValidationReport(ValidationTotals):
    """Per-table validation results of one load, and the time ``now`` future timestamps were judged by."""

    tables: dict[str, TableResult]
    now: pd.Timestamp

    def write_rejects(self, out_dir: Path | str) -> dict[str, Path]:
        """Write ``<table>_rejected.csv`` (row, reason, original values) per table into ``out_dir``.

        Returns
        -------
        Mapping table name -> written path (one file per validated table, header only if none rejected).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, res in self.tables.items():
            paths[name] = out / f"{name}_rejected.csv"
            res.rejected.to_csv(paths[name], index=False)
        return paths


#: Tables of at least this many rows give free memory back between validation steps
#: (:func:`features.io.release_free_memory`): it saves gigabytes on tens of millions of rows, but a full
#: garbage collection costs about 0.2 s in a large process, 100 times the validation of a few rows (the test
#: suite validates thousands of small tables).
_RELEASE_ROWS = 1_000_000


class _Rejector:
    """Collects the first reason per row (as a small code per row: an object array of reasons would take
    8 bytes a row, 480 MB for 60M events)."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self._code = np.zeros(n, dtype=np.uint16)
        self._reasons: dict[str, int] = {}

    def flag(self, mask: np.ndarray | pd.Series, reason: str) -> None:
        m = np.asarray(mask, dtype=bool) & ~self.bad
        if m.any():
            self._code[m] = self._reasons.setdefault(reason, len(self._reasons))
            self.bad |= m

    def reasons(self) -> np.ndarray:
        """The reason of each rejected row (object array, in row order)."""
        return np.asarray(list(self._reasons), dtype=object)[self._code[self.bad]] if self._reasons else np.array([], dtype=object)


def _rows(raw: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``raw.loc[mask]``, filtering Arrow-backed columns chunk by chunk: pandas takes rows of a chunked
    Arrow column by concatenating its chunks first (1.1 GiB more for the 60M events, for no row at all)."""
    import pyarrow as pa

    keep = pa.array(mask)
    cols = {}
    for col in raw.columns:
        s = raw[col]
        if isinstance(s.dtype, pd.ArrowDtype):
            cols[col] = pd.arrays.ArrowExtensionArray(pa.chunked_array(pa.array(s.array)).filter(keep))
        else:
            cols[col] = s.array[mask]
    return pd.DataFrame(cols, index=raw.index[mask])


def _as_text(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of a raw table with typed Parquet columns turned into the text the string path reads."""
    import pyarrow as pa

    out = rows.copy()
    for col in rows.columns:
        if typed_kind(rows[col]) is not None or is_dictionary(rows[col]):
            text = parquet_text(pa.array(rows[col].array))
            out[col] = pd.Series(pd.arrays.ArrowExtensionArray(text), index=rows.index)
    return out


def _check_column(
    raw: pd.DataFrame,
    col: str,
    schema: TableSchema,
    rules: DataConfig,
    rej: _Rejector,
    ts_min: pd.Timestamp,
    ts_max: pd.Timestamp,
    keep_values: bool = True,
    arrow_text: bool = False,
) -> tuple[Any, TextColumn | None]:
    """Check column ``col`` of ``raw``: flag its bad rows in ``rej``; return its accepted values (all rows)
    and, for a text column, its :class:`TextColumn` (codes of the distinct strings, missing cells). With
    ``keep_values=False`` a text column's values are not made (None): the caller does not keep them. With
    ``arrow_text`` a text column's values are an Arrow dictionary column (:meth:`TextColumn.arrow`), not objects."""
    kind = schema.kinds[col]
    column = raw[col]
    typed = typed_kind(column)
    if typed is not None and typed != kind:  # typed, but not as the contract types it: checked as its text
        column, typed = _as_text(raw[[col]])[col], None
    if kind == "string":
        text = TextColumn(column)
        if col in schema.required:
            rej.flag(text.null, f"missing {col}")
        # event types and statuses are looked up once per distinct lowered text (None: unknown), then spread
        # to the rows by their codes; a missing status is taken as paid
        mapped: np.ndarray | None = None
        fill: str | None = None
        if col == "event_type":
            event_types = {t.lower(): t for t in rules.event_types}
            mapped = text.lookup_distinct(event_types.get)
            rej.flag(text.rows_where(mapped == None), "unknown event_type")  # noqa: E711  (elementwise, object array)
        elif col == "status":
            mapped, fill = text.lookup_distinct(lambda v: v if v in ORDER_STATUSES else None), "paid"
            rej.flag(text.rows_where(mapped == None), "unknown status")  # noqa: E711
        if not keep_values:
            return None, text
        if arrow_text:
            return text.arrow(mapped, fill), text
        values = text.values() if mapped is None else text.per_distinct(mapped)
        return (values if fill is None else np.where(text.null, fill, values).astype(object)), text
    # a typed Parquet column (read_table(typed_parquet=True)) is checked as its values, not their text
    if kind == "timestamp":
        if typed is None:
            ts, null, failed, too_big, too_small = text_timestamps(column)
        else:
            arr, null = typed_values(column)
            ts, failed, too_big, too_small = typed_timestamps(arr, null)
        if col in schema.required:
            rej.flag(null, f"missing {col}")
        rej.flag(failed, f"unparseable {col}")
        rej.flag(too_big | np.asarray(ts > ts_max), f"future {col}")
        rej.flag(too_small | np.asarray(ts < ts_min), f"too old {col}")
        return ts.array, None
    if typed is None:
        vals, null, non_numeric = text_numbers(column)
    else:
        arr, null = typed_values(column)
        vals, non_numeric = typed_numbers(arr, null)
    if col in schema.required:
        rej.flag(null, f"missing {col}")
    if kind == "float":
        rej.flag(non_numeric, f"non-numeric {col}")
        if col == "amount":
            rej.flag(vals < 0, "negative amount")
            rej.flag(vals > rules.max_amount, "implausible amount")
        return vals, None
    with np.errstate(invalid="ignore"):
        bad = non_numeric | (~null & ((vals != np.round(vals)) | (vals < 1) | (vals > rules.max_quantity)))
    rej.flag(bad, f"bad {col}")
    return pd.array(np.where(null | bad, np.nan, vals), dtype="Float64").astype("Int64"), None


def validate_table(
    raw: pd.DataFrame,
    schema: TableSchema,
    config: StrataConfig,
    now: pd.Timestamp,
    known_users: Iterable[str] | pd.Series | None = None,
    *,
    path: str | Path | None = None,
    columns: Iterable[str] | None = None,
    arrow_text: bool = False,
) -> TableResult:
    """Validate one raw string table (as :func:`features.io.read_table` returns) against ``schema``.

    Parameters
    ----------
    raw : string columns; indexed by 1-based data row number (index named ``row``), or by position.
    schema : the contract table (``ORDERS``, ``EVENTS`` or ``USERS``).
    config : rules (``config.data``: event types, max amount/quantity, timestamp bounds).
    now : validation time; timestamps after ``now + future_tolerance_hours`` are rejected as future.
    known_users : user ids of the users table; rows of other users are kept and counted as a warning.
    path : the file the table came from, for the report.
    columns : the columns the accepted frame keeps (default: every contract column present). Every column
        is validated either way, so the same rows are accepted; a caller that reads only some columns
        (the feature pipeline) saves the memory of the rest, e.g. 20M distinct ``order_id`` strings.
    arrow_text : accepted text columns as Arrow dictionaries of strings (``pd.ArrowDtype``), not ``object``
        (see :mod:`features.dataset`).

    Returns
    -------
    TableResult with ``rows_in == n_accepted + n_rejected``.
    """
    rules = config.data
    now = parse_as_of(now)
    n = len(raw)
    malformed: list[tuple[Any, ...]] = list(raw.attrs.get("malformed_rows", []))  # (row, text[, reason])
    rows = raw.index.to_numpy() if raw.index.name == "row" else np.arange(1, n + 1)
    rej = _Rejector(n)
    accepted: dict[str, Any] = {}
    no_status = np.zeros(n, dtype=bool)
    warnings: list[str] = []
    warning_counts: dict[str, int] = {}
    ts_max = now + pd.Timedelta(hours=rules.future_tolerance_hours)
    ts_min = parse_as_of(rules.min_timestamp)

    missing_required = [c for c in schema.required if c not in raw.columns]
    if missing_required:
        raise InputFileError(
            f"{path or schema.name}: missing required column {missing_required[0]!r} "
            f"(found columns: {', '.join(map(str, raw.columns))})"
        )
    extra = [c for c in raw.columns if c not in schema.columns] + list(raw.attrs.get("ignored_columns", []))
    if extra:
        warnings.append(f"ignored columns not in the {schema.name} contract: {', '.join(map(str, extra))}")

    kept_columns = set(schema.columns if columns is None else columns)
    codes: dict[str, np.ndarray] = {}
    user_ids: Any = None  # the distinct user ids (Arrow strings), for the unknown-user check
    key = {"orders": "order_id", "users": "user_id"}.get(schema.name)
    for col in schema.columns:
        if col not in raw.columns:
            continue
        if col == key and col not in kept_columns:
            # an id only checked (20M order ids): when its present values are all distinct, as they should be,
            # it is never hashed here; then no row is a duplicate
            missing = missing_if_all_distinct(raw[col])
            if missing is not None:
                if col in schema.required:
                    rej.flag(missing, f"missing {col}")
                continue
        values, text = _check_column(raw, col, schema, rules, rej, ts_min, ts_max, keep_values=col in kept_columns,
                                     arrow_text=arrow_text)
        if col in kept_columns:
            accepted[col] = values
        del values
        # the codes of the ids serve the duplicate and unknown-user checks below
        if text is not None and col in ("user_id", "order_id"):
            codes[col] = text.codes
        if text is not None and col == "user_id" and known_users is not None:
            user_ids = text.arrow_distinct()
        if text is not None and col == "status":
            no_status = text.null
        del text
        if n >= _RELEASE_ROWS:
            release_free_memory()  # the column's temporaries (tens of millions of rows at scale), before the next's

    if key is not None and key in codes:
        dup = np.zeros(n, dtype=bool)
        ok = ~rej.bad
        # the same rows as duplicated() of the strings, found on their integer codes (several times faster)
        dup[ok] = pd.Series(codes[key][ok]).duplicated(keep="first").to_numpy()
        rej.flag(dup, f"duplicate {key}")

    keep = ~rej.bad
    all_kept = bool(keep.all())
    # no copy of the columns when every row is kept, and none to consolidate them into 2-D blocks either
    # (each would briefly double the table: tens of millions of rows)
    kept = accepted if all_kept else {c: v[keep] for c, v in accepted.items()}
    acc = pd.DataFrame(kept, copy=False, index=pd.RangeIndex(int(keep.sum())) if not kept else None)
    n_no_status = int((no_status & keep).sum())
    if n_no_status:
        warnings.append(f"{n_no_status:,} orders without a status were taken as paid")
        warning_counts["status missing, taken as paid"] = n_no_status

    rejected = _as_text(_rows(raw, rej.bad)).astype(object)
    rejected.insert(0, "reason", rej.reasons())
    rejected.insert(0, "row", rows[rej.bad])
    if malformed:
        extra_rows = pd.DataFrame({"row": [m[0] for m in malformed],
                                   "reason": [m[2] if len(m) > 2 else MALFORMED for m in malformed],
                                   "line": [m[1] for m in malformed]})
        rejected = pd.concat([rejected, extra_rows], ignore_index=True).sort_values("row", kind="stable")
    rejected = rejected.reset_index(drop=True)
    reasons = rejected["reason"].value_counts().to_dict() if len(rejected) else {}

    if known_users is not None and user_ids is not None and schema.name != "users":
        # tested once per distinct user id, then spread to the rows by their codes
        known_ids = among(user_ids, known_users)
        kept_codes = codes["user_id"] if all_kept else codes["user_id"][keep]
        unknown = ~known_ids[kept_codes]
        n_unknown = int(unknown.sum())
        if n_unknown:
            n_users = len(np.unique(kept_codes[unknown]))
            plural = "user" if n_users == 1 else "users"
            warnings.append(f"{n_unknown:,} {schema.name} rows of {n_users:,} {plural} not in the users table (kept)")
            warning_counts[UNKNOWN_USER_WARNING] = n_unknown
    if n == 0 and not malformed:
        warnings.append(f"the {schema.name} table has no data rows")

    return TableResult(
        table=schema.name,
        path=str(path) if path is not None else None,
        rows_in=n + len(malformed),
        accepted=acc,
        rejected=rejected,
        reasons={str(k): int(v) for k, v in reasons.items()},
        warnings=warnings,
        warning_counts=warning_counts,
    )


def load_dataset(
    data_dir: Path | str | None = None,
    *,
    orders: Path | str | None = None,
    events: Path | str | None = None,
    users: Path | str | None = None,
    config: StrataConfig,
    now: pd.Timestamp | str | None = None,
    progress: Callable[[str], None] | None = None,
    columns: Mapping[str, Iterable[str]] | None = None,
    arrow_text: bool = False,
) -> tuple[Dataset, ValidationReport]:
    """Find, read and validate the input tables; return the valid data and the validation report.

    Parameters
    ----------
    data_dir : directory with ``orders.csv|parquet`` and optional ``events.*``, ``users.*``.
    orders, events, users : explicit file paths; they override files found in ``data_dir``.
    config : validation rules (``config.data``).
    now : validation time (default: the current time, UTC) for rejecting future timestamps.
    progress : optional callback told which table is being read.
    columns : per table name, the columns its accepted frame keeps (``user_id`` always; a table not named
        keeps all). Every column is still validated, so the accepted rows are the same whatever is kept;
        e.g. :data:`features.pipeline.VALIDATED_FEATURE_INPUT_COLUMNS` for a caller that only computes
        features (at 1M users, 20M order ids alone take over 1 GiB as Python strings).
    arrow_text : text columns as Arrow dictionaries of strings instead of ``object`` strings (see
        :mod:`features.dataset`): for a caller that hands the frames to DuckDB, which scans Arrow columns
        without converting each Python string (at 1M users the feature query took 14 s instead of 17).

    Returns
    -------
    (Dataset of accepted rows; ``events``/``users`` are None when no such file was given), report.

    Raises
    ------
    InputFileError
        For file-level problems (missing/unreadable/empty file, wrong delimiter or encoding,
        missing required column).
    """
    files = find_table_files(
        Path(data_dir) if data_dir is not None else None,
        Path(orders) if orders is not None else None,
        Path(events) if events is not None else None,
        Path(users) if users is not None else None,
    )
    now_ts = pd.Timestamp.now(tz="UTC") if now is None else parse_as_of(now)
    step = progress or (lambda _msg: None)
    results: dict[str, TableResult] = {}
    known: pd.Series | None = None
    for name, schema in (("users", USERS), ("orders", ORDERS), ("events", EVENTS)):
        path = files[name]
        if path is None:
            continue
        step(name)
        raw = read_table(path, schema, arrow_strings=True, typed_parquet=True, dictionary_text=True)
        big = len(raw) >= _RELEASE_ROWS
        if big:
            release_free_memory()  # the reader's buffers
        keep = None if columns is None or name not in columns else {"user_id", *columns[name]}
        results[name] = validate_table(raw, schema, config, now_ts, known_users=known, path=path, columns=keep,
                                       arrow_text=arrow_text)
        del raw
        if big:
            release_free_memory()
        if name == "users":
            known = results[name].accepted["user_id"]
    dataset = Dataset(
        orders=results["orders"].accepted,
        events=results["events"].accepted if "events" in results else None,
        users=results["users"].accepted if "users" in results else None,
    )
    ordered: dict[str, TableResult] = {k: results[k] for k in ("orders", "events", "users") if k in results}
    return dataset, ValidationReport(tables=ordered, now=now_ts)
