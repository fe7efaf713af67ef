"""Row-level validation of input tables: every row is accepted (typed) or rejected (with a reason).

Bad input is a normal day: validation never raises for bad rows. It returns the typed rows it accepts
(dtypes of :mod:`features.dataset`), the rejected rows with their original strings, a ``reason`` and
their 1-based ``row`` number in the file, and counts per reason, so that always
``rows_in == accepted + rejected``. Rows that are kept but worth a look (events of users unknown to the
users table, orders without a status taken as paid, ignored extra columns) are reported as warnings.

Each rejected row gets the first reason that applies, checking columns in contract order. Everything
is vectorised (pandas, numpy, Arrow compute); nothing loops over rows in Python. Text is checked once per
distinct string, and the common forms of timestamps and decimals are read from Arrow strings as they are,
without a stripped copy of every cell.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.config import DataConfig, StrataConfig
from features.contract import EVENTS, ORDER_STATUSES, ORDERS, USERS, TableSchema
from features.cutoffs import parse_as_of
from features.dataset import Dataset
from features.errors import InputFileError
from features.io import find_table_files, parquet_text, read_table, release_free_memory

#: Cell values that mean "no value" (after stripping surrounding whitespace).
NULL_TOKENS: frozenset[str] = frozenset(
    {"", "null", "NULL", "Null", "none", "None", "NONE", "nan", "NaN", "NAN", "na", "NA", "N/A", "n/a", "<NA>", "NaT", "-"}
)
MALFORMED = "wrong number of fields"
UNKNOWN_USER_WARNING = "unknown user"
_TS_BOUND = pd.Timestamp("2262-04-11", tz="UTC")  # beyond the range of datetime64[ns]


@dataclass
class TableResult:
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


def _is_arrow_string(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.ArrowDtype | pd.StringDtype)


def _strip(s: pd.Series) -> pd.Series:
    """Cells as strings without surrounding whitespace (non-string cells become their text)."""
    if _is_arrow_string(s):
        return s.str.strip()  # runs in Arrow
    return s.astype(str).str.strip()


def _is_null(s: pd.Series) -> np.ndarray:
    return s.isin(NULL_TOKENS).to_numpy(dtype=bool, na_value=True)


def _is_dictionary(s: pd.Series) -> bool:
    import pyarrow as pa

    return isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_dictionary(s.dtype.pyarrow_dtype)


#: Arrow string columns of at least this many rows are hashed in two halves at once, one per core; an id
#: column this large that is only checked is first tested for repeats without hashing it here.
_PARALLEL_HASH_ROWS = 2_000_000


def _encode_part(part: Any) -> tuple[np.ndarray, Any]:
    """``part`` (Arrow strings) dictionary-encoded: int32 codes (-1 for a null) and its distinct strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(part)
    if not isinstance(encoded, pa.ChunkedArray):
        encoded = pa.chunked_array([encoded])
    if encoded.num_chunks == 0:
        return np.empty(0, dtype=np.int32), pa.array([], type=part.type)
    dictionary = encoded.chunk(encoded.num_chunks - 1).dictionary
    # Arrow gives every chunk of the result the dictionary of the whole column; should one ever hold only
    # the strings seen up to its chunk, its codes still index the last (a memo table only appends), which
    # is checked rather than assumed
    for chunk in encoded.chunks:
        if len(chunk.dictionary) != len(dictionary) and not dictionary.slice(0, len(chunk.dictionary)).equals(
            chunk.dictionary
        ):
            encoded = encoded.unify_dictionaries()
            dictionary = encoded.chunk(0).dictionary
            break
    indices = pa.chunked_array([c.indices for c in encoded.chunks], pa.int32())
    codes = pc.fill_null(indices, -1).to_numpy() if indices.null_count else indices.to_numpy()
    return codes, dictionary


def _encode_strings(chunks: Any) -> tuple[np.ndarray, Any]:
    """``pd.factorize(use_na_sentinel=False)`` of an Arrow string column, in Arrow: int32 codes of the
    distinct cells, and those cells (a null, when there is one, is the last).

    A large column is hashed in two halves at once (Arrow releases the GIL, so one per core); the second
    half's distinct strings are then looked up among the first's, and the new ones appended (at 1M users,
    the 60M user ids of the events took 3.7 s in one piece and 2.5 s in halves, pandas' factorize 6.9 s;
    the 20M order ids 7.9 s in one piece, 5 s in halves).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(chunks)
    if n < _PARALLEL_HASH_ROWS:
        codes, uniques = _encode_part(chunks)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            (codes1, first), (codes2, second) = pool.map(_encode_part, [chunks.slice(0, n // 2), chunks.slice(n // 2)])
        # the first half's strings keep their codes; the second's are looked up among them (a hash set of
        # the first half's distinct strings, not another pass over the rows), the new ones appended
        position = pc.index_in(second, value_set=first)
        remap = pc.fill_null(position, -1).to_numpy(zero_copy_only=False).astype(np.int32)  # a writable copy
        new = remap < 0
        remap[new] = len(first) + np.arange(int(new.sum()), dtype=np.int32)
        uniques = pa.concat_arrays([first, second.filter(pa.array(new))]) if new.any() else first
        codes = np.concatenate([codes1, np.append(remap, np.int32(-1))[codes2]])
    if (codes < 0).any():  # a null is one more distinct cell, as pd.factorize(use_na_sentinel=False) makes it
        codes = np.where(codes < 0, np.int32(len(uniques)), codes)
        uniques = pa.concat_arrays([uniques, pa.nulls(1, uniques.type)])
    return codes, pd.array(uniques, dtype=pd.ArrowDtype(uniques.type))


def _missing_if_all_distinct(column: pd.Series) -> np.ndarray | None:
    """For a large Arrow string column that is only checked: its missing cells (as :class:`_Text` finds them:
    null, or a null token once stripped) if every other stripped cell is distinct, else None.

    Stripping and the null tokens are Arrow's, exactly as :func:`_strip` and :func:`_is_null` apply them; the
    distinct count is DuckDB's, on both cores. For the 20M order ids of the 1M-user benchmark about 2.5 s,
    against 6 s to hash them into codes and look for repeated codes. With a repeated value (or a small or
    non-string column) the caller hashes the column as usual, to find which rows repeat.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) < _PARALLEL_HASH_ROWS or not isinstance(column.dtype, pd.ArrowDtype):
        return None
    if not (pa.types.is_string(column.dtype.pyarrow_dtype) or pa.types.is_large_string(column.dtype.pyarrow_dtype)):
        return None
    import duckdb

    stripped = pc.utf8_trim_whitespace(pa.chunked_array(column.array._pa_array))
    missing = pc.or_kleene(pc.is_null(stripped), pc.is_in(stripped, value_set=pa.array(sorted(NULL_TOKENS), stripped.type)))
    with duckdb.connect() as con:
        con.register("ids", pa.table({"id": stripped, "missing": missing}))
        row = con.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM ids WHERE NOT missing").fetchone()
    if row is None or row[0] != 0:
        return None
    return np.asarray(missing.to_numpy(zero_copy_only=False), dtype=bool)


def _factorize_raw(column: pd.Series) -> tuple[np.ndarray, Any]:
    """Codes of ``column``'s distinct raw cells, and those cells (a null is a distinct cell of its own).

    An Arrow dictionary column (text read from Parquet) is factorized by its dictionaries, without hashing
    its rows; its distinct cells come back as plain Arrow strings. Other Arrow string columns are hashed
    in Arrow (:func:`_encode_strings`), object columns by pandas.
    """
    import pyarrow as pa

    if not _is_dictionary(column):
        if isinstance(column.dtype, pd.ArrowDtype) and (
            pa.types.is_string(column.dtype.pyarrow_dtype) or pa.types.is_large_string(column.dtype.pyarrow_dtype)
        ):
            return _encode_strings(pa.chunked_array(column.array._pa_array))
        return pd.factorize(column, use_na_sentinel=False)
    chunks = pa.chunked_array(column.array._pa_array)
    if sum(len(c.dictionary) for c in chunks.chunks) > len(column) // 2:
        # mostly distinct values (the ids are not read as dictionaries, but a column of the file may be all
        # distinct): unifying 20M dictionary entries took 20 s, hashing the strings 5
        return _encode_strings(chunks.cast(pa.string()))
    combined = chunks.unify_dictionaries().combine_chunks()
    indices, dictionary = combined.indices, combined.dictionary.cast(pa.string())
    codes = indices.fill_null(-1).to_numpy(zero_copy_only=False) if indices.null_count else indices.to_numpy()
    if indices.null_count:  # a null is one more distinct cell, as pd.factorize(use_na_sentinel=False) makes it
        codes = np.where(codes < 0, len(dictionary), codes)
        dictionary = pa.concat_arrays([dictionary, pa.nulls(1, pa.string())])
    return codes, pd.array(dictionary, dtype=pd.ArrowDtype(pa.string()))


def _distinct_stripped(raw_uniques: Any, stripped: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(stripped)``: codes of the distinct raw cells into the distinct stripped strings.

    Stripping can only make two distinct cells equal by changing one of them, so when no Arrow string cell
    changes the stripped cells are distinct already and their codes are their positions (nulls -1): no second
    hashing of the strings (5 s for 20M order ids).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if _is_arrow_string(stripped) and isinstance(raw_uniques, pd.api.extensions.ExtensionArray | pd.Index):
        before, after = pa.array(pd.Series(raw_uniques).array), pa.array(stripped.array)
        if pa.types.is_string(before.type) and pa.types.is_string(after.type) and not pc.any(
            pc.fill_null(pc.not_equal(before, after), False)
        ).as_py():
            valid = ~pd.isna(stripped).to_numpy(dtype=bool)
            codes = np.where(valid, np.cumsum(valid) - 1, -1)
            return codes, stripped.array[valid]
    return pd.factorize(stripped)


class _Text:
    """A text column as codes into its distinct stripped strings: per-row tests of the strings (null, known
    event type, status) are made once per distinct string, and no per-row stripped or lowered copy exists.

    ``codes`` (-1 for Arrow nulls) and ``null`` (missing: a null token after stripping) have one entry per
    row, ``distinct`` (object array, made on first use) one per distinct stripped string; equal stripped strings
    have equal codes (``" u1"`` and ``"u1"`` too), so duplicates are found on the codes.
    """

    def __init__(self, column: pd.Series) -> None:
        # distinct raw cells (non-string cells of an object column and nulls included, as their text)...
        raw_codes, raw_uniques = _factorize_raw(column)
        stripped = _strip(pd.Series(raw_uniques))
        null_u = _is_null(stripped)
        # ... then distinct stripped strings: stripping can make two raw cells equal
        codes_u, uniques = _distinct_stripped(raw_uniques, stripped)
        # 32-bit codes: half the memory of pandas' 64-bit ones (60M events at 1M users)
        self.codes = codes_u.astype(np.int32 if len(uniques) < 2**31 - 1 else np.int64)[raw_codes]
        self.null = null_u[raw_codes] | (self.codes < 0)
        del raw_codes
        self._uniques = uniques  # Arrow strings for an Arrow column: no Python string per distinct value yet

    @functools.cached_property
    def distinct(self) -> np.ndarray:
        """The distinct stripped strings (object array), made on first use: a column whose values are not
        kept (20M order ids only checked for duplicates) never turns them into Python strings."""
        return np.asarray(self._uniques, dtype=object)

    def values(self) -> np.ndarray:
        """Object array of the stripped strings (None where missing); equal strings share one object."""
        return self.per_distinct(self.distinct)

    def per_distinct(self, mapped: np.ndarray) -> np.ndarray:
        """``mapped[i]`` (one entry per distinct string) spread to the rows; None where missing."""
        table = np.empty(len(mapped) + 1, dtype=object)  # the last entry, None, for code -1 (a null)
        table[:-1] = mapped
        out = table[self.codes]
        out[self.null] = None
        return out

    def lookup_distinct(self, fn: Callable[[str], Any]) -> np.ndarray:
        """Object array of ``fn(lowered text)`` per distinct string (not spread to the rows)."""
        return np.array([fn(v.lower()) for v in self.distinct], dtype=object)

    def rows_where(self, mapped_is_none: np.ndarray) -> np.ndarray:
        """Per row: present, and its distinct string's entry of ``mapped_is_none`` is true."""
        return ~self.null & np.append(mapped_is_none, False)[self.codes]

    def arrow(self, mapped: np.ndarray | None = None, fill: str | None = None) -> Any:
        """The column as an Arrow dictionary of strings (``pd.ArrowDtype``), null where missing: the
        stripped strings, or ``mapped`` (one entry per distinct string; None is null) with ``fill`` in place
        of a missing cell. A 32-bit index per row and each string once, where :meth:`values` makes an object
        array (8 bytes a row) that DuckDB converts string by string."""
        import pyarrow as pa

        if mapped is None:
            dictionary = self._arrow_uniques()
            index = self.codes
        else:
            m_codes, m_uniques = pd.factorize(pd.Series(mapped, dtype=object))
            dictionary = pa.array(np.asarray(m_uniques, dtype=object), type=pa.string())
            index = np.append(m_codes, -1).astype(np.int32)[self.codes]
        if fill is not None:
            dictionary = pa.concat_arrays([dictionary, pa.array([fill], type=pa.string())])
            index = np.where(self.null, np.int32(len(dictionary) - 1), index)
            missing = index < 0
        else:
            missing = self.null | (index < 0)
        if missing.any():
            indices = pa.array(np.where(missing, 0, index).astype(np.int32), mask=missing)
        else:  # the usual case for a required column: its index as it is, no mask
            indices = pa.array(index.astype(np.int32, copy=False))
        return pd.arrays.ArrowExtensionArray(pa.DictionaryArray.from_arrays(indices, dictionary))

    def _arrow_uniques(self) -> Any:
        """The distinct stripped strings as one Arrow string array (no Python strings for an Arrow column)."""
        import pyarrow as pa

        if isinstance(self._uniques, pd.api.extensions.ExtensionArray) and isinstance(
            getattr(self._uniques, "dtype", None), pd.ArrowDtype
        ):
            arr = pa.array(self._uniques)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            return arr.cast(pa.string())
        return pa.array(np.asarray(self._uniques, dtype=object), type=pa.string())


_ISO_Z = "%Y-%m-%dT%H:%M:%SZ"
#: Whole seconds within datetime64[ns] (about 1677-09-21 to 2262-04-11).
_NS_MIN_SECONDS, _NS_MAX_SECONDS = -(2**63) // 10**9 + 1, (2**63 - 1) // 10**9


def _parse_iso(s: pd.Series, null: np.ndarray) -> pd.DatetimeIndex:
    """Timestamps of ISO-8601 strings (naive = UTC), NaT where null or unparseable.

    The common ``2024-03-05T12:34:56Z`` form is parsed in Arrow and kept only where formatting it back
    gives the same string (Arrow's parser rolls over impossible dates such as Feb 30); every other
    cell goes through pandas' strict ISO-8601 parser.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(s)
    result = np.full(n, np.datetime64("NaT", "ns"))
    todo = ~null
    if n:
        arr = pa.array(s.array) if _is_arrow_string(s) else pa.array(s.to_numpy(dtype=object), type=pa.string())
        parsed = pc.strptime(arr, format=_ISO_Z, unit="s", error_is_null=True)
        exact = pc.equal(pc.strftime(parsed, format=_ISO_Z), arr)
        # Years beyond datetime64[ns] (1677-2262) are left to the slow path, which reports them as future
        # or too old: cast to nanoseconds, they would overflow.
        seconds = pc.cast(parsed, pa.int64())
        exact = pc.and_(exact, pc.and_(pc.greater_equal(seconds, _NS_MIN_SECONDS), pc.less_equal(seconds, _NS_MAX_SECONDS)))
        parsed = pc.cast(pc.if_else(exact, parsed, pa.scalar(None, parsed.type)), pa.timestamp("ns"))
        fast = pc.fill_null(exact, False).to_numpy(zero_copy_only=False) & ~null
        if fast.any():
            result[fast] = parsed.to_numpy(zero_copy_only=False)[fast]
        todo = ~null & ~fast
    if todo.any():
        slow = pd.to_datetime(s[todo].astype(object), utc=True, errors="coerce", format="ISO8601")
        result[todo] = slow.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    return pd.DatetimeIndex(result).tz_localize("UTC")


def _parse_timestamps(s: pd.Series, null: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
    """Parse ISO-8601 strings (naive = UTC). Returns (timestamps, unparseable, beyond max, before min)."""
    ts = _parse_iso(s, null)
    failed = ts.isna() & ~null
    too_big = np.zeros(len(s), dtype=bool)
    too_small = np.zeros(len(s), dtype=bool)
    if failed.any():
        # Years outside datetime64[ns] (e.g. 2999-01-01) are future/too old, not unparseable.
        year = pd.to_numeric(s[failed].astype(object).str.extract(r"^(\d{4})-\d{2}-\d{2}", expand=False), errors="coerce")
        too_big[failed] = (year >= 2262).to_numpy()
        too_small[failed] = (year <= 1677).to_numpy()
        failed &= ~(too_big | too_small)
    return ts, failed, too_big, too_small


#: Characters of the common timestamp form ``2024-03-05T12:34:56Z``: digit positions and separators.
_ISO_Z_LEN = 20
_ISO_Z_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_ISO_Z_SEPARATORS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":"), 19: ord("Z")}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_ISO_Z_BATCH = 1 << 20  # rows per step (a step holds ~50 bytes per row of temporaries)


def _iso_z_seconds(chunk: Any) -> tuple[np.ndarray, np.ndarray]:
    """Epoch seconds of the cells of an Arrow string array in exactly the form ``YYYY-MM-DDTHH:MM:SSZ``, read
    from the array's bytes with numpy; and which cells are in that form, a real date and time, and within
    datetime64[ns] (years 1678 to 2261). Other cells are left to :func:`_parse_iso` (seconds 0 there)."""
    import pyarrow as pa

    n = len(chunk)
    _validity, offsets_buf, data_buf = chunk.buffers()
    off_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=off_type)[chunk.offset : chunk.offset + n + 1].astype(np.int64)
    ok = np.diff(offsets) == _ISO_Z_LEN
    if chunk.null_count:
        ok &= chunk.is_valid().to_numpy(zero_copy_only=False)
    seconds = np.zeros(n, dtype=np.int64)
    if not ok.any() or data_buf is None:
        return seconds, ok
    data = np.frombuffer(data_buf, dtype=np.uint8)
    where = np.flatnonzero(ok)
    rows = data[offsets[where][:, None] + np.arange(_ISO_Z_LEN)]  # one row of 20 bytes per candidate cell
    digits = rows[:, _ISO_Z_DIGITS].astype(np.int16) - ord("0")
    good = ((digits >= 0) & (digits <= 9)).all(axis=1)
    for pos, char in _ISO_Z_SEPARATORS.items():
        good &= rows[:, pos] == char
    del rows
    digits = digits.astype(np.int64)

    def field(i: int, width: int) -> np.ndarray:
        out = digits[:, i]
        for j in range(i + 1, i + width):
            out = out * 10 + digits[:, j]
        return out

    year, month, day = field(0, 4), field(4, 2), field(6, 2)
    hour, minute, second = field(8, 2), field(10, 2), field(12, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    last_day = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    good &= month_ok & (day >= 1) & (day <= last_day) & (hour <= 23) & (minute <= 59) & (second <= 59)
    good &= (year >= 1678) & (year <= 2261)
    # days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil; years are positive here)
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(month > 2, month - 3, month + 9) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    seconds[where] = days * 86400 + hour * 3600 + minute * 60 + second
    ok[where] = good
    return seconds, ok


def _text_timestamps(column: pd.Series) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_parse_timestamps` of a raw text column, with its missing cells: (timestamps, missing, unparseable,
    beyond max, before min).

    An Arrow column's cells in the common form ``2024-03-05T12:34:56Z`` are read straight from its bytes
    (:func:`_iso_z_seconds`): no stripped copy of 60M strings, no null-token lookup, no parsing and
    formatting back (the events of 1M users: 55 s and 5.7 GiB before). Only the other cells are stripped,
    null-tested and parsed as before.
    """
    import pyarrow as pa

    n = len(column)
    if not _is_arrow_string(column) or _is_dictionary(column):
        s = _strip(column)
        null = _is_null(s)
        ts, failed, too_big, too_small = _parse_timestamps(s, null)
        return ts, null, failed, too_big, too_small
    arr = pa.chunked_array(pa.array(column.array))
    ns = np.zeros(n, dtype=np.int64)
    fast = np.zeros(n, dtype=bool)
    pos = 0
    for chunk in arr.chunks:
        for start in range(0, len(chunk), _ISO_Z_BATCH):
            part = chunk.slice(start, _ISO_Z_BATCH)
            seconds, ok = _iso_z_seconds(part)
            fast[pos : pos + len(part)] = ok
            ns[pos : pos + len(part)] = np.where(ok, seconds * 10**9, 0)
            pos += len(part)
    rest = ~fast
    null = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    too_big = np.zeros(n, dtype=bool)
    too_small = np.zeros(n, dtype=bool)
    if rest.any():
        sub = pd.Series(pd.arrays.ArrowExtensionArray(arr.filter(pa.array(rest))))
        s = _strip(sub)
        null[rest] = _is_null(s) | s.isna().to_numpy(dtype=bool)  # a null token, or an Arrow null
        ts_rest, failed[rest], too_big[rest], too_small[rest] = _parse_timestamps(s, null[rest])
        ns[rest] = ts_rest.tz_convert(None).asi8
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"), null, failed, too_big, too_small


#: A plain decimal number (no surrounding space, ASCII digits): Arrow parses it, correctly rounded.
_PLAIN_DECIMAL = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _plain_decimals(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Which cells of an Arrow string array are plain decimals (:data:`_PLAIN_DECIMAL`), and their values
    (NaN elsewhere), parsed by Arrow: correctly rounded, where pandas' ``to_numeric`` is off by one unit in
    the last place for about 4 in 10 numbers written with 17 significant digits."""
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = pc.fill_null(pc.match_substring_regex(arr, _PLAIN_DECIMAL), False)
    mask = plain.to_numpy(zero_copy_only=False)
    vals = np.full(len(arr), np.nan)
    if mask.any():
        try:
            vals[mask] = pc.cast(arr.filter(plain), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # e.g. an exponent beyond what Arrow parses: left to pandas
            mask[:] = False
    return mask, vals


def _parse_float(s: pd.Series, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse decimal numbers of stripped text (:func:`_strip`: strings, or Arrow nulls). Returns (values,
    non-numeric mask); nulls give NaN and are not flagged.

    Plain decimals are parsed by Arrow (:func:`_plain_decimals`, correctly rounded), other cells by pandas.
    """
    import pyarrow as pa

    text = pa.array(s.array) if _is_arrow_string(s) else pa.array(s.to_numpy(dtype=object), type=pa.string())
    plain, vals = _plain_decimals(pa.chunked_array(text))
    other = ~plain & ~null
    if other.any():
        vals[other] = pd.to_numeric(s[other], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    vals = np.where(null, np.nan, vals)
    non_numeric = ~null & ~np.isfinite(vals)
    return vals, non_numeric


def _text_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_parse_float` of a raw text column, with its missing cells: (values, missing, non-numeric).

    An Arrow column's plain decimals and empty cells are recognised as they are; only the other cells are
    stripped, null-tested and parsed as before (no stripped copy of every cell).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _is_arrow_string(column) or _is_dictionary(column) or not len(column):
        s = _strip(column)
        null = _is_null(s)
        vals, non_numeric = _parse_float(s, null)
        return vals, null, non_numeric
    arr = pa.chunked_array(pa.array(column.array))
    plain, vals = _plain_decimals(arr)
    empty = pc.fill_null(pc.equal(arr, ""), True).to_numpy(zero_copy_only=False)  # "" or an Arrow null
    null = empty & ~plain
    rest = ~plain & ~empty
    if rest.any():
        s = _strip(pd.Series(pd.arrays.ArrowExtensionArray(arr.filter(pa.array(rest)))))
        null[rest] = _is_null(s)  # (Arrow nulls are empty cells, never among these)
        vals[rest] = _parse_float(s, null[rest])[0]
    vals = np.where(null, np.nan, vals)
    return vals, null, ~null & ~np.isfinite(vals)


def _typed_kind(s: pd.Series) -> str | None:
    """``timestamp``, ``float`` or ``int`` for a column read typed from Parquet (``read_table(typed_parquet=True)``)."""
    import pyarrow as pa

    if not isinstance(s.dtype, pd.ArrowDtype):
        return None
    t = s.dtype.pyarrow_dtype
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_integer(t):
        return "int"
    return "float" if pa.types.is_float64(t) else None


def _typed_values(s: pd.Series) -> tuple[Any, np.ndarray]:
    """The Arrow values of a typed Parquet column and its missing cells: nulls, and NaN in a float column
    (its text, ``nan``, is a null token)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(s.array)
    null = arr.is_null()
    if pa.types.is_floating(arr.type):
        null = pc.or_(null, pc.fill_null(pc.is_nan(arr), False))
    return arr, np.asarray(null.to_numpy(zero_copy_only=False), dtype=bool)


def _typed_timestamps(arr: Any, null: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_parse_timestamps` of a typed Parquet timestamp column (in UTC): (timestamps, unparseable,
    beyond max, before min). Values outside datetime64[ns] are beyond max or before min (as a year 3000 or
    1600 is in text), compared in the column's own unit, so that nothing overflows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[arr.type.unit]
    values = pc.cast(arr, pa.int64())
    too_big = pc.fill_null(pc.greater(values, (2**63 - 1) // per), False).to_numpy(zero_copy_only=False)
    too_small = pc.fill_null(pc.less(values, -((2**63 - 1) // per)), False).to_numpy(zero_copy_only=False)
    within = pa.array(~(null | too_big | too_small))
    ns = pc.cast(pc.if_else(within, arr, pa.scalar(None, arr.type)), pa.timestamp("ns", tz="UTC"))
    ts = pd.DatetimeIndex(ns.to_numpy(zero_copy_only=False)).tz_localize("UTC")
    return ts, np.zeros(len(null), dtype=bool), np.asarray(too_big, dtype=bool), np.asarray(too_small, dtype=bool)


def _typed_numbers(arr: Any, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_float` of a typed Parquet number column: (values, non-numeric mask); missing cells give
    NaN and are not flagged, infinities are not numeric."""
    import pyarrow as pa
    import pyarrow.compute as pc

    vals = np.where(null, np.nan, pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    return vals, ~null & ~np.isfinite(vals)


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
        if _typed_kind(rows[col]) is not None or _is_dictionary(rows[col]):
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
) -> tuple[Any, _Text | None]:
    """Check column ``col`` of ``raw``: flag its bad rows in ``rej``; return its accepted values (all rows)
    and, for a text column, its :class:`_Text` (codes of the distinct strings, missing cells). With
    ``keep_values=False`` a text column's values are not made (None): the caller does not keep them. With
    ``arrow_text`` a text column's values are an Arrow dictionary column (:meth:`_Text.arrow`), not objects."""
    kind = schema.kinds[col]
    column = raw[col]
    typed = _typed_kind(column)
    if typed is not None and typed != kind:  # typed, but not as the contract types it: checked as its text
        column, typed = _as_text(raw[[col]])[col], None
    if kind == "string":
        text = _Text(column)
        if col in schema.required:
            rej.flag(text.null, f"missing {col}")
        if col == "event_type":
            # looked up once per distinct lowered text, then spread to the rows by their codes
            event_types = {t.lower(): t for t in rules.event_types}
            canon = text.lookup_distinct(event_types.get)
            rej.flag(text.rows_where(canon == None), "unknown event_type")  # noqa: E711  (elementwise, object array)
            if not keep_values:
                return None, text
            return (text.arrow(canon) if arrow_text else text.per_distinct(canon)), text
        if col == "status":
            status = text.lookup_distinct(lambda v: v if v in ORDER_STATUSES else None)
            rej.flag(text.rows_where(status == None), "unknown status")  # noqa: E711
            if not keep_values:
                return None, text
            if arrow_text:
                return text.arrow(status, fill="paid"), text
            return np.where(text.null, "paid", text.per_distinct(status)).astype(object), text
        if not keep_values:
            return None, text
        return (text.arrow() if arrow_text else text.values()), text
    # a typed Parquet column (read_table(typed_parquet=True)) is checked as its values, not their text
    if kind == "timestamp":
        if typed is None:
            ts, null, failed, too_big, too_small = _text_timestamps(column)
        else:
            arr, null = _typed_values(column)
            ts, failed, too_big, too_small = _typed_timestamps(arr, null)
        if col in schema.required:
            rej.flag(null, f"missing {col}")
        rej.flag(failed, f"unparseable {col}")
        rej.flag(too_big | np.asarray(ts > ts_max), f"future {col}")
        rej.flag(too_small | np.asarray(ts < ts_min), f"too old {col}")
        return ts.array, None
    if typed is None:
        vals, null, non_numeric = _text_numbers(column)
    else:
        arr, null = _typed_values(column)
        vals, non_numeric = _typed_numbers(arr, null)
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
    malformed: list[tuple[int, str]] = list(raw.attrs.get("malformed_rows", []))
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
    extra = [c for c in raw.columns if c not in schema.columns]
    if extra:
        warnings.append(f"ignored columns not in the {schema.name} contract: {', '.join(map(str, extra))}")

    kept_columns = set(schema.columns if columns is None else columns)
    codes: dict[str, np.ndarray] = {}
    user_ids: np.ndarray | None = None  # the distinct user ids, for the unknown-user check
    key = {"orders": "order_id", "users": "user_id"}.get(schema.name)
    for col in schema.columns:
        if col not in raw.columns:
            continue
        if col == key and col not in kept_columns:
            # an id only checked (20M order ids): when its present values are all distinct, as they should be,
            # it is never hashed here; then no row is a duplicate
            missing = _missing_if_all_distinct(raw[col])
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
            user_ids = text.distinct
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
        extra_rows = pd.DataFrame({"row": [r for r, _ in malformed], "reason": MALFORMED,
                                   "line": [t for _, t in malformed]})
        rejected = pd.concat([rejected, extra_rows], ignore_index=True).sort_values("row", kind="stable")
    rejected = rejected.reset_index(drop=True)
    reasons = rejected["reason"].value_counts().to_dict() if len(rejected) else {}

    if known_users is not None and user_ids is not None and schema.name != "users":
        ku = known_users if isinstance(known_users, pd.Series | pd.Index) else pd.Index(list(known_users))
        # tested once per distinct user id, then spread to the rows by their codes
        known_ids = pd.Index(user_ids).isin(ku)
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
