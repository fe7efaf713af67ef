"""Reading input tables as raw strings, finding them in a data directory, and writing files durably.

Readers never coerce values: every cell comes back as the string in the file (Parquet values are
rendered as strings, timestamps as ISO-8601 UTC), so validation can name the offending value. Problems
with a whole file (missing, unreadable, empty, wrong delimiter or encoding, missing required column)
raise :class:`features.errors.InputFileError` with one line naming the file and what to fix.

The returned frame is indexed by the 1-based data row number in the file (the header is not a data
row). Rows with the wrong number of fields cannot be split into columns; they are left out of the
frame and listed in ``frame.attrs["malformed_rows"]`` as ``(row, text)`` pairs so that validation
can count them as rejected (nothing is dropped silently). A quote opened and never closed would make the
CSV reader put every later line into one value: that row is listed as ``(row, first line,
UNTERMINATED_QUOTE)`` and the lines after it are read as rows again.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import TableSchema
from features.errors import InputFileError

CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: The names a table may have in a data directory (``orders.csv``, ``orders.parquet``...), here, on Spark
#: (:mod:`features.spark.reading`, which also takes a directory of part files) and for the CLI's writers.
TABLE_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_SNIFF_BYTES = 1 << 16
_OTHER_DELIMITERS = {";": "';' (semicolon)", "\t": "tab", "|": "'|' (pipe)"}


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(PARQUET_SUFFIXES)


def _check_file(path: Path, schema: TableSchema) -> None:
    if not path.exists():
        raise InputFileError(f"{path}: file not found (the {schema.name} table)")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected a CSV or Parquet file with the {schema.name} table")
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as err:
        raise InputFileError(f"{path}: cannot be read ({err.strerror or err})") from None
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: empty file (expected a header line with columns {', '.join(schema.required)})")


def _check_columns(path: Path, schema: TableSchema, columns: list[str], delimiter_hint: str | None = None) -> None:
    seen: set[str] = set()
    dupes = [c for c in columns if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
    if dupes:
        raise InputFileError(f"{path}: duplicate column name {dupes[0]!r} in the header")
    missing = [c for c in schema.required if c not in columns]
    if not missing:
        return
    if delimiter_hint:
        raise InputFileError(
            f"{path}: wrong delimiter: the header looks {delimiter_hint}-separated; "
            f"Strata reads comma-separated CSV (re-export with ',' as the delimiter)"
        )
    found = ", ".join(repr(c) for c in columns) if columns else "none"
    lower = {c.lower(): c for c in columns}
    hint = ""
    near = [f"{lower[m.lower()]!r} for {m!r}" for m in missing if m.lower() in lower]
    if near:
        hint = f"; column names are case-sensitive ({', '.join(near)}?)"
    what = "column" if len(missing) == 1 else "columns"
    raise InputFileError(
        f"{path}: missing required {what} {', '.join(repr(m) for m in missing)} of the {schema.name} table "
        f"(found columns: {found}){hint}"
    )


def _open_bytes(path: Path) -> Any:
    """The file opened for reading bytes, decompressed when its name ends in ``.gz``."""
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _sniff_text(path: Path) -> str:
    """The beginning of the file decoded as UTF-8; encoding problems raise InputFileError."""
    try:
        with _open_bytes(path) as fh:
            head = fh.read(_SNIFF_BYTES)
    except (OSError, EOFError) as err:  # EOFError: a gzip file cut short
        raise InputFileError(f"{path}: cannot be read ({err})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputFileError(f"{path}: encoding is UTF-16, not UTF-8; re-save the file as UTF-8")
    if b"\x00" in head:
        raise InputFileError(f"{path}: not a text CSV file (binary content); expected UTF-8 CSV or Parquet")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 4:  # a multi-byte character cut by the sniff window
            text = head[: err.start].decode("utf-8-sig")
        else:
            guess = ""
            try:
                head.decode("gb18030")
                guess = " (looks like GBK/GB18030)"
            except UnicodeDecodeError:
                pass
            line = head.count(b"\n", 0, err.start) + 1
            raise InputFileError(
                f"{path}: encoding is not UTF-8{guess}: byte 0x{head[err.start]:02x} on line {line} "
                f"(byte offset {err.start}); "
                f"re-save the file as UTF-8"
            ) from None
    if not text.strip():
        raise InputFileError(f"{path}: empty file (only whitespace; expected a header line)")
    return text


def _read_csv(path: Path, schema: TableSchema, arrow_strings: bool, dictionary_text: bool = False) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text = _sniff_text(path)
    first_line = text.splitlines()[0]
    if not first_line.strip():
        raise InputFileError(f"{path}: line 1 is empty; expected the header line ({', '.join(schema.required)}, ...)")
    header = [c.strip() for c in next(csv.reader(io.StringIO(first_line)), [])]
    hint = None
    if any(c not in header for c in schema.required):
        for delim, label in _OTHER_DELIMITERS.items():
            parts = [c.strip().strip('"') for c in first_line.split(delim)]
            if len(parts) > len(header) and any(c in parts for c in schema.required):
                hint = label
                break
    _check_columns(path, schema, header, hint)

    malformed: list[tuple[Any, ...]] = []  # (physical line or None, text[, reason])

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append((row.number, row.text))
        return "skip"

    dictionary = set(_dictionary_columns(schema, header)) if dictionary_text else set()
    types = {c: pa.dictionary(pa.int32(), pa.string()) if c in dictionary else pa.string() for c in header}

    def read(threads: bool, source: Any = path, skip_rows: int = 1) -> pa.Table:
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=skip_rows, use_threads=threads,
                                           encoding="utf8"),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        table = read(threads=True)
        if malformed and any(n is None for n, _ in malformed):
            malformed.clear()  # line numbers are only known when reading on one thread
            table = read(threads=False)
        # A quote that is never closed swallows every later line into the last row's value (the reader accepts
        # it at the end of the file): reject that row and read the lines after its first one as rows again.
        tail: str | None = None  # the text whose end the last row reached (the file, then each remainder)
        while table.num_rows and (value := _multiline_last_value(table)) is not None:
            tail = _whole_text(path) if tail is None else tail
            cut = _unterminated_quote(tail, value)
            if cut is None:
                break
            first_line, tail = cut
            position = table.num_rows + len(malformed)  # the broken row's place among all rows (1-based)
            table = table.slice(0, table.num_rows - 1)
            malformed.append((position + 1, first_line, UNTERMINATED_QUOTE))  # stored as "line", row + 1
            if not tail.strip():
                break
            before = len(malformed)
            more = read(threads=False, source=pa.BufferReader(tail.encode("utf-8")), skip_rows=0)
            # line k of the remainder is row position + k
            malformed[before:] = [(None if m[0] is None else m[0] + position + 1, *m[1:]) for m in malformed[before:]]
            table = pa.concat_tables([table, more])
    except (pa.ArrowInvalid, OSError) as err:
        msg = str(err).splitlines()[0]
        if "UTF8" in msg or "utf8" in msg.lower():
            raise InputFileError(f"{path}: encoding is not UTF-8 ({msg}); re-save the file as UTF-8") from None
        raise InputFileError(f"{path}: cannot be parsed as CSV ({msg})") from None
    df = table.to_pandas(types_mapper=pd.ArrowDtype) if arrow_strings else table.to_pandas()
    df.columns = header
    # Physical line numbers count the header as line 1; data row = line - 1.
    bad_rows = sorted((int(m[0]) - 1 if m[0] is not None else -1, *m[1:]) for m in malformed)
    df.index = _row_numbers(len(df), [m[0] for m in bad_rows])
    df.attrs["malformed_rows"] = bad_rows
    return df


#: Reason of a row whose quoted value is never closed (it would swallow every later line).
UNTERMINATED_QUOTE = "unterminated quote (a quoted value that is never closed; the lines after it were read as rows)"


def _multiline_last_value(table: Any) -> str | None:
    """The last row's first value with a line break, or None: the only way an unclosed quote shows (cheap)."""
    last = table.slice(table.num_rows - 1, 1).to_pylist()[0]
    return next((v for v in last.values() if isinstance(v, str) and ("\n" in v or "\r" in v)), None)


def _whole_text(path: Path) -> str:
    with _open_bytes(path) as fh:
        return str(fh.read().decode("utf-8-sig"))


def _unterminated_quote(text: str, value: str) -> tuple[str, str] | None:
    """If ``text`` ends inside the quoted ``value`` (a quote opened and never closed, so the value runs to the end
    of the text): the physical line where that quote opens, and the text of the lines after it. Else None.

    A closed quote leaves its closing quote (and maybe more fields) after the value, so the text cannot end with
    the opening quote and the value; a value with doubled quotes in it is not recognised (left as it is)."""
    tail = '"' + value
    if not text.endswith(tail):
        return None
    start = len(text) - len(tail)
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", start)
    return text[line_start:line_end].rstrip("\r"), text[line_end + 1:]


def _row_numbers(n_good: int, skipped: list[int]) -> pd.Index:
    """1-based data row numbers of the ``n_good`` kept rows when rows ``skipped`` were left out."""
    import numpy as np

    if not skipped:
        return pd.RangeIndex(1, n_good + 1, name="row")
    total = n_good + len(skipped)
    keep = np.ones(total, dtype=bool)
    idx = np.asarray([s - 1 for s in skipped if 1 <= s <= total], dtype=np.int64)
    keep[idx] = False
    rows = np.flatnonzero(keep)[:n_good] + 1
    return pd.Index(rows, name="row")


#: Text columns of (nearly) one distinct value per user or order, never read as dictionaries.
_ID_COLUMNS = frozenset({"user_id", "order_id"})


def _dictionary_columns(schema: TableSchema, columns: list[str]) -> list[str]:
    """The columns of ``columns`` read as Arrow dictionaries (``read_table(dictionary_text=True)``): the contract's
    text columns of few distinct values. Not the ids: a dictionary of millions of values costs more to build
    and unify than hashing the strings (60M user ids: 12.1 against 7.3 s)."""
    return [c for c in columns if schema.kinds.get(c) == "string" and c not in _ID_COLUMNS]


def _read_parquet(
    path: Path, schema: TableSchema, arrow_strings: bool, typed: bool = False, dictionary_text: bool = False
) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file_schema = pq.read_schema(path)
        _check_columns(path, schema, list(file_schema.names))
        # columns outside the contract are not read (validation names them in a warning): a list or struct
        # column there has no text form, and would have refused the whole file
        ignored = [n for n in file_schema.names if n not in schema.columns]
        dictionary: list[str] = []
        if dictionary_text:  # string columns only (a typed column keeps its type)
            text = [f.name for f in file_schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
            dictionary = _dictionary_columns(schema, text)
        table = pq.read_table(path, columns=[n for n in file_schema.names if n in schema.columns],
                              read_dictionary=dictionary or None)
    except (pa.ArrowException, OSError) as err:
        raise InputFileError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        kind = schema.kinds.get(name)
        if name in dictionary and pa.types.is_dictionary(t):
            # nulls stay nulls: validation reads them as missing, as it does the text path's ""
            cols[name] = pd.Series(pd.arrays.ArrowExtensionArray(col))
            continue
        if typed and ((pa.types.is_timestamp(t) and kind == "timestamp") or (pa.types.is_float64(t) and kind == "float")
                      or (pa.types.is_integer(t) and kind == "int")):
            # kept typed (the text is made only for rejected rows, by parquet_text): parsing 60M timestamps
            # back from their text took longer than everything else of validation
            col = _utc(col) if pa.types.is_timestamp(t) else col
            cols[name] = pd.Series(pd.arrays.ArrowExtensionArray(col))
            continue
        try:
            col = parquet_text(col)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            raise InputFileError(f"{path}: column {name!r} has type {t} that cannot be read as text") from None
        cols[name] = pd.Series(pd.arrays.ArrowExtensionArray(col)) if arrow_strings else col.to_pandas()
    df = pd.DataFrame(cols)
    df.index = pd.RangeIndex(1, len(df) + 1, name="row")
    df.attrs["malformed_rows"] = []
    df.attrs["ignored_columns"] = ignored
    return df


def _utc(col: Any) -> Any:
    """A timestamp column in UTC, its unit kept (naive timestamps mean UTC; the zone is only metadata)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(col, pa.timestamp(col.type.unit, tz="UTC"))


def parquet_text(col: Any) -> Any:
    """A Parquet column as the text validation reads: timestamps as ISO-8601 in UTC (``2024-03-05T12:34:56Z``,
    fractional seconds kept), other types as Arrow casts them to string, nulls as ``""``.

    Raises ``pyarrow.ArrowNotImplementedError`` or ``ArrowInvalid`` for a type without a text form.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.strftime(_utc(col), format="%Y-%m-%dT%H:%M:%S")
        col = pc.replace_substring_regex(col, pattern=r"\.0+$", replacement="")
        col = pc.binary_join_element_wise(col, pa.scalar("Z"), "")
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        col = pc.cast(col, pa.string())  # dictionary-encoded strings and numbers alike
    return pc.fill_null(col, "")


def read_table(
    path: Path, schema: TableSchema, *, arrow_strings: bool = False, typed_parquet: bool = False,
    dictionary_text: bool = False,
) -> pd.DataFrame:
    """Read one input table (CSV or Parquet) as raw strings, indexed by 1-based data row number.

    CSV must be UTF-8 (a BOM is fine) and comma-separated with a header line; ``.parquet``/``.pq``
    files are read as Parquet. Every column of the file is returned as ``object`` strings (empty
    string for a missing value); nothing is coerced. With ``arrow_strings`` the columns are
    Arrow-backed strings (``pd.ArrowDtype(pa.string())``) instead: the same values, several times
    faster to read and validate and far smaller in memory for tens of millions of rows.
    With ``typed_parquet``, a Parquet file's timestamp columns of contract timestamps, float64 columns of
    contract decimals and integer columns of contract integers stay typed (Arrow-backed, timestamps in UTC,
    nulls as nulls); :func:`features.validation.validate_table` checks them as they are and gives rejected
    rows the text :func:`parquet_text` makes, as the string path would. With ``dictionary_text`` (and
    ``arrow_strings``), the contract's text columns other than the ids (event types, statuses, categories,
    channels) are Arrow dictionaries (Parquet nulls as nulls, CSV cells as their text): a 32-bit index per
    row instead of the string, and validation factorizes them by their dictionaries.

    Raises
    ------
    InputFileError
        If the file is missing, unreadable, empty, not UTF-8, separated by another delimiter,
        or lacks a required column of ``schema`` (the message names the file and the column).
    """
    path = Path(path)
    _check_file(path, schema)
    dictionary = dictionary_text and arrow_strings
    if _is_parquet(path):
        return _read_parquet(path, schema, arrow_strings, typed_parquet, dictionary)
    return _read_csv(path, schema, arrow_strings, dictionary)


def _find_one(data_dir: Path, name: str) -> Path | None:
    hits = [data_dir / f"{name}{suffix}" for suffix in TABLE_FILE_SUFFIXES]
    hits = [p for p in hits if p.exists()]
    if len(hits) > 1:
        found = ", ".join(p.name for p in hits)
        raise InputFileError(f"{data_dir}: several {name} files ({found}); keep one or pass --{name} FILE")
    return hits[0] if hits else None


def find_table_files(
    data_dir: Path | None,
    orders: Path | None = None,
    events: Path | None = None,
    users: Path | None = None,
) -> dict[str, Path | None]:
    """Resolve the input files: explicit paths win over ``<data_dir>/<table>.csv|parquet``.

    Returns
    -------
    ``{"orders": Path, "events": Path | None, "users": Path | None}``.

    Raises
    ------
    InputFileError
        If ``data_dir`` does not exist, or no orders file is given or found (orders are required).
    """
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise InputFileError(f"{data_dir}: data directory not found")
        if not data_dir.is_dir():
            raise InputFileError(f"{data_dir}: --data expects a directory (use --orders FILE for a single file)")
    explicit = {"orders": orders, "events": events, "users": users}
    found: dict[str, Path | None] = {}
    for name, path in explicit.items():
        if path is not None:
            found[name] = Path(path)
        elif data_dir is not None:
            found[name] = _find_one(data_dir, name)
        else:
            found[name] = None
    if found["orders"] is None:
        if data_dir is None:
            raise InputFileError("no input data: pass --data DIR (with orders.csv or orders.parquet) or --orders FILE")
        raise InputFileError(f"{data_dir}: no orders file (expected orders.csv or orders.parquet, or pass --orders FILE)")
    return found


def table_as_strings(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as the strings a CSV export holds: ISO-8601 UTC timestamps, empty string for missing."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for col in df.columns:
        s = df[col]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
            ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
            arr = pc.cast(pa.array(ts.dt.floor("s"), from_pandas=True), pa.timestamp("s", tz="UTC"))
            vals = pc.fill_null(pc.strftime(arr, format="%Y-%m-%dT%H:%M:%SZ"), "")
            out[col] = vals.to_numpy(zero_copy_only=False)
        elif s.dtype == object:
            v = s.to_numpy()
            out[col] = np.where(pd.isna(v), "", v)
        else:
            arr = pc.cast(pa.array(s, from_pandas=True), pa.string())
            out[col] = pc.fill_null(arr, "").to_numpy(zero_copy_only=False)
    return pd.DataFrame(out)


def arrow_to_frame(table: Any) -> pd.DataFrame:
    """A pyarrow Table as pandas the way feature tables are handed over: one block per column and the
    Arrow buffers freed as they are converted (no consolidation copy; do not use ``table`` afterwards).

    The pandas arrays come from the system allocator, not Arrow's default pool (mimalloc): mimalloc asks
    for transparent huge pages, and where the kernel compacts memory for them at fault time (THP defrag
    "madvise", the default) first-touching the 700 MB feature table of 1M users after the feature query
    took 1.5 s instead of 0.5.
    """
    import pyarrow as pa

    return table.to_pandas(split_blocks=True, self_destruct=True, memory_pool=pa.system_memory_pool())


def read_feature_table(path: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """A feature table written by ``strata features --out``, checked to be as of ``as_of``.

    Converted from Arrow as the feature pipeline hands its table over (:func:`arrow_to_frame`).

    Raises
    ------
    InputFileError
        If the file is not a readable Parquet file, lacks ``user_id`` or ``as_of``, or holds rows of another
        cutoff (the first such row and its value are named).
    """
    import pyarrow.parquet as pq

    try:
        table = arrow_to_frame(pq.read_table(path))
    except Exception as err:  # noqa: BLE001 - any reader error becomes one clear message
        raise InputFileError(f"{path}: not a readable Parquet feature table ({type(err).__name__}: {err})") from None
    for col in ("user_id", "as_of"):
        if col not in table.columns:
            raise InputFileError(f"{path}: column {col!r} is missing; expected a table from `strata features --out`")
    stamps = pd.to_datetime(table["as_of"], utc=True)
    other = stamps != as_of
    if other.any():
        row = int(other.to_numpy().argmax())
        raise InputFileError(f"{path}: column 'as_of', row {row + 1}: {stamps.iloc[row].isoformat()} is not --as-of "
                             f"{as_of.isoformat()} (score a feature table with the cutoff it was built for)")
    return table


def write_table(df: pd.DataFrame, path: Path | str) -> Path:
    """Write one table as CSV (``.csv``: ISO-8601 UTC timestamps, quoted strings) or Parquet (``.parquet``).

    Returns
    -------
    The written path.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    if _is_parquet(path):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    else:
        table = pa.Table.from_pandas(table_as_strings(df), preserve_index=False)
        pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    return path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (after an ``os.replace`` into it), where the platform allows it.

    A directory that cannot be opened for reading (some platforms and file systems) is left as it is.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def release_free_memory() -> None:
    """Give memory that is free but still held by the allocators back to the system.

    Dropped pandas frames often sit in reference cycles until the cycle collector runs, and Arrow's default
    pool (mimalloc) and glibc's malloc keep freed blocks for reuse: after validating the 60M events of the
    1M-user benchmark data, 3.8 GiB of Arrow memory waited for the collector and 7 GiB of the process's
    12 GiB were free blocks of Arrow's pool (with the system pool, as many sat in malloc's arenas).
    Called between the large steps of loading a large data set (each table, each column) so that one
    step's temporaries do not add to the next step's peak; a full collection costs about 0.2 s in a
    large process, so not for small tables.
    """
    import ctypes
    import ctypes.util
    import gc

    import pyarrow as pa

    gc.collect()  # pandas objects form reference cycles: a dropped frame's columns wait for the collector
    pa.default_memory_pool().release_unused()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)  # glibc only
        if trim is not None:
            trim(0)
