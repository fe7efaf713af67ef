"""The cells of input columns, read and checked column-wise: text as codes of its distinct strings, timestamps
and numbers from text or from typed Parquet columns.

:mod:`features.validation` applies the contract's rules with these; nothing here knows about tables or
reasons. Everything is vectorised (pandas, numpy, Arrow compute): text is tested once per distinct string,
the common forms of timestamps and decimals are read from Arrow strings as they are, without a stripped copy
of every cell, and large text columns are hashed on both cores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

#: Cell values that mean "no value" (after stripping surrounding whitespace).
NULL_TOKENS: frozenset[str] = frozenset(
    {"", "null", "NULL", "Null", "none", "None", "NONE", "nan", "NaN", "NAN", "na", "NA", "N/A", "n/a", "<NA>", "NaT", "-"}
)


def is_arrow_string(s: pd.Series) -> bool:
    return isinstance(s.dtype, pd.ArrowDtype | pd.StringDtype)


def strip(s: pd.Series) -> pd.Series:
    """Cells as strings without surrounding whitespace (non-string cells become their text)."""
    if is_arrow_string(s):
        return s.str.strip()  # runs in Arrow
    return s.astype(str).str.strip()


def is_null(s: pd.Series) -> np.ndarray:
    return s.isin(NULL_TOKENS).to_numpy(dtype=bool, na_value=True)


def is_dictionary(s: pd.Series) -> bool:
    import pyarrow as pa

    return isinstance(s.dtype, pd.ArrowDtype) and pa.types.is_dictionary(s.dtype.pyarrow_dtype)


def _is_plain_arrow_text(s: pd.Series) -> bool:
    """An Arrow string column that is not a dictionary (ids, text read from CSV)."""
    import pyarrow as pa

    return isinstance(s.dtype, pd.ArrowDtype) and (
        pa.types.is_string(s.dtype.pyarrow_dtype) or pa.types.is_large_string(s.dtype.pyarrow_dtype)
    )


def _null_last(codes: np.ndarray, uniques: Any) -> tuple[np.ndarray, Any]:
    """Codes (-1 for a null) and distinct Arrow strings as ``pd.factorize(use_na_sentinel=False)`` gives them:
    a null, when there is one, is one more distinct cell, the last."""
    import pyarrow as pa

    if (codes < 0).any():
        codes = np.where(codes < 0, codes.dtype.type(len(uniques)), codes)
        uniques = pa.concat_arrays([uniques, pa.nulls(1, uniques.type)])
    return codes, pd.array(uniques, dtype=pd.ArrowDtype(uniques.type))


#: Arrow string columns of at least this many rows are hashed in two halves at once, one per core; an id
#: column this large that is only checked is first tested for repeats without hashing it here.
PARALLEL_HASH_ROWS = 2_000_000


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


def encode_strings(chunks: Any) -> tuple[np.ndarray, Any]:
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
    if n < PARALLEL_HASH_ROWS:
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
    return _null_last(codes, uniques)


def missing_if_all_distinct(column: pd.Series) -> np.ndarray | None:
    """For a large Arrow string column that is only checked: its missing cells (as :class:`TextColumn` finds them:
    null, or a null token once stripped) if every other stripped cell is distinct, else None.

    Stripping and the null tokens are Arrow's, exactly as :func:`strip` and :func:`is_null` apply them; the
    distinct count is DuckDB's, on both cores. For the 20M order ids of the 1M-user benchmark about 2.5 s,
    against 6 s to hash them into codes and look for repeated codes. With a repeated value (or a small or
    non-string column) the caller hashes the column as usual, to find which rows repeat.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) < PARALLEL_HASH_ROWS or not _is_plain_arrow_text(column):
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


def factorize_raw(column: pd.Series) -> tuple[np.ndarray, Any]:
    """Codes of ``column``'s distinct raw cells, and those cells (a null is a distinct cell of its own).

    An Arrow dictionary column (text read from Parquet) is factorized by its dictionaries, without hashing
    its rows; its distinct cells come back as plain Arrow strings. Other Arrow string columns are hashed
    in Arrow (:func:`encode_strings`), object columns by pandas.
    """
    import pyarrow as pa

    if _is_plain_arrow_text(column):
        return encode_strings(pa.chunked_array(column.array._pa_array))
    if not is_dictionary(column):
        return pd.factorize(column, use_na_sentinel=False)
    chunks = pa.chunked_array(column.array._pa_array)
    if sum(len(c.dictionary) for c in chunks.chunks) > len(column) // 2:
        # mostly distinct values (the ids are not read as dictionaries, but a column of the file may be all
        # distinct): unifying 20M dictionary entries took 20 s, hashing the strings 5
        return encode_strings(chunks.cast(pa.string()))
    combined = chunks.unify_dictionaries().combine_chunks()
    indices, dictionary = combined.indices, combined.dictionary.cast(pa.string())
    codes = indices.fill_null(-1).to_numpy(zero_copy_only=False) if indices.null_count else indices.to_numpy()
    return _null_last(codes, dictionary)


def _distinct_stripped(raw_uniques: Any, stripped: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(stripped)``: codes of the distinct raw cells into the distinct stripped strings.

    Stripping can only make two distinct cells equal by changing one of them, so when no Arrow string cell
    changes the stripped cells are distinct already and their codes are their positions (nulls -1): no second
    hashing of the strings (5 s for 20M order ids).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if is_arrow_string(stripped) and isinstance(raw_uniques, pd.api.extensions.ExtensionArray | pd.Index):
        before, after = pa.array(pd.Series(raw_uniques).array), pa.array(stripped.array)
        if pa.types.is_string(before.type) and pa.types.is_string(after.type) and not pc.any(
            pc.fill_null(pc.not_equal(before, after), False)
        ).as_py():
            valid = ~pd.isna(stripped).to_numpy(dtype=bool)
            codes = np.where(valid, np.cumsum(valid) - 1, -1)
            return codes, stripped.array[valid]
    return pd.factorize(stripped)


class TextColumn:
    """A text column as codes into its distinct stripped strings: per-row tests of the strings (null, known
    event type, status) are made once per distinct string, and no per-row stripped or lowered copy exists.

    ``codes`` (-1 for Arrow nulls) and ``null`` (missing: a null token after stripping) have one entry per
    row, ``distinct`` (object array, made on first use) one per distinct stripped string; equal stripped strings
    have equal codes (``" u1"`` and ``"u1"`` too), so duplicates are found on the codes.
    """

    def __init__(self, column: pd.Series) -> None:
        # distinct raw cells (non-string cells of an object column and nulls included, as their text)...
        raw_codes, raw_uniques = factorize_raw(column)
        stripped = strip(pd.Series(raw_uniques))
        null_u = is_null(stripped)
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
            dictionary = self.arrow_distinct()
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

    def arrow_distinct(self) -> Any:
        """The distinct stripped strings as one Arrow string array (no Python strings for an Arrow column)."""
        import pyarrow as pa

        if isinstance(getattr(self._uniques, "dtype", None), pd.ArrowDtype):
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
        arr = pa.array(s.array) if is_arrow_string(s) else pa.array(s.to_numpy(dtype=object), type=pa.string())
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


def parse_timestamps(s: pd.Series, null: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
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


def text_timestamps(column: pd.Series) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_timestamps` of a raw text column, with its missing cells: (timestamps, missing, unparseable,
    beyond max, before min).

    An Arrow column's cells in the common form ``2024-03-05T12:34:56Z`` are read straight from its bytes
    (:func:`_iso_z_seconds`): no stripped copy of 60M strings, no null-token lookup, no parsing and
    formatting back (the events of 1M users: 55 s and 5.7 GiB before). Only the other cells are stripped,
    null-tested and parsed as before.
    """
    import pyarrow as pa

    n = len(column)
    if not is_arrow_string(column) or is_dictionary(column):
        s = strip(column)
        null = is_null(s)
        ts, failed, too_big, too_small = parse_timestamps(s, null)
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
        s = strip(sub)
        null[rest] = is_null(s) | s.isna().to_numpy(dtype=bool)  # a null token, or an Arrow null
        ts_rest, failed[rest], too_big[rest], too_small[rest] = parse_timestamps(s, null[rest])
        ns[rest] = ts_rest.tz_convert(None).asi8
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC"), null, failed, too_big, too_small


#: A plain decimal number (no surrounding space, ASCII digits): Arrow parses it, correctly rounded.
PLAIN_DECIMAL = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"


def _plain_decimals(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """Which cells of an Arrow string array are plain decimals (:data:`PLAIN_DECIMAL`), and their values
    (NaN elsewhere), parsed by Arrow: correctly rounded, where pandas' ``to_numeric`` is off by one unit in
    the last place for about 4 in 10 numbers written with 17 significant digits."""
    import pyarrow as pa
    import pyarrow.compute as pc

    plain = pc.fill_null(pc.match_substring_regex(arr, PLAIN_DECIMAL), False)
    mask = plain.to_numpy(zero_copy_only=False)
    vals = np.full(len(arr), np.nan)
    if mask.any():
        try:
            vals[mask] = pc.cast(arr.filter(plain), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # e.g. an exponent beyond what Arrow parses: left to pandas
            mask[:] = False
    return mask, vals


def _parse_float(s: pd.Series, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse decimal numbers of stripped text (:func:`strip`: strings, or Arrow nulls). Returns (values,
    non-numeric mask); nulls give NaN and are not flagged.

    Plain decimals are parsed by Arrow (:func:`_plain_decimals`, correctly rounded), other cells by pandas.
    """
    import pyarrow as pa

    text = pa.array(s.array) if is_arrow_string(s) else pa.array(s.to_numpy(dtype=object), type=pa.string())
    plain, vals = _plain_decimals(pa.chunked_array(text))
    other = ~plain & ~null
    if other.any():
        vals[other] = pd.to_numeric(s[other], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    vals = np.where(null, np.nan, vals)
    non_numeric = ~null & ~np.isfinite(vals)
    return vals, non_numeric


def text_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_parse_float` of a raw text column, with its missing cells: (values, missing, non-numeric).

    An Arrow column's plain decimals and empty cells are recognised as they are; only the other cells are
    stripped, null-tested and parsed as before (no stripped copy of every cell).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not is_arrow_string(column) or is_dictionary(column) or not len(column):
        s = strip(column)
        null = is_null(s)
        vals, non_numeric = _parse_float(s, null)
        return vals, null, non_numeric
    arr = pa.chunked_array(pa.array(column.array))
    plain, vals = _plain_decimals(arr)
    empty = pc.fill_null(pc.equal(arr, ""), True).to_numpy(zero_copy_only=False)  # "" or an Arrow null
    null = empty & ~plain
    rest = ~plain & ~empty
    if rest.any():
        s = strip(pd.Series(pd.arrays.ArrowExtensionArray(arr.filter(pa.array(rest)))))
        null[rest] = is_null(s)  # (Arrow nulls are empty cells, never among these)
        vals[rest] = _parse_float(s, null[rest])[0]
    vals = np.where(null, np.nan, vals)
    return vals, null, ~null & ~np.isfinite(vals)


def typed_kind(s: pd.Series) -> str | None:
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


def typed_values(s: pd.Series) -> tuple[Any, np.ndarray]:
    """The Arrow values of a typed Parquet column and its missing cells: nulls, and NaN in a float column
    (its text, ``nan``, is a null token)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(s.array)
    null = arr.is_null()
    if pa.types.is_floating(arr.type):
        null = pc.or_(null, pc.fill_null(pc.is_nan(arr), False))
    return arr, np.asarray(null.to_numpy(zero_copy_only=False), dtype=bool)


def typed_timestamps(arr: Any, null: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_timestamps` of a typed Parquet timestamp column (in UTC): (timestamps, unparseable,
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


def typed_numbers(arr: Any, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_parse_float` of a typed Parquet number column: (values, non-numeric mask); missing cells give
    NaN and are not flagged, infinities are not numeric."""
    import pyarrow as pa
    import pyarrow.compute as pc

    vals = np.where(null, np.nan, pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    return vals, ~null & ~np.isfinite(vals)


def among(distinct: Any, values: Iterable[Any] | pd.Series | pd.Index) -> np.ndarray:
    """Per Arrow string of ``distinct``: whether it is one of ``values`` (strings: a list, an object column or an
    Arrow one, dictionaries too). Hashed in Arrow, with no Python string per distinct value; values that are
    not all strings are compared as pandas compares them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(values, pd.Series | pd.Index):
        values = list(values)  # read once: the fallback below needs them too
    try:
        if isinstance(values, pd.Series | pd.Index) and isinstance(values.dtype, pd.ArrowDtype):
            value_set = pa.chunked_array(pa.array(values.array)).cast(pa.string()).combine_chunks()
        else:
            value_set = pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.Index(np.asarray(distinct.to_pylist(), dtype=object)).isin(values)
    return pc.is_in(distinct, value_set=value_set).to_numpy(zero_copy_only=False)
