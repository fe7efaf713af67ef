"""Cells read column-wise (features.cells): timestamps and decimals read from the bytes of Arrow strings
match the full parsers, Arrow text is hashed as pandas factorizes it, ids are looked up in any form."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_EDGE_STAMPS = ["2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T12:00:00Z",
                "2024-04-31T00:00:00Z", "2024-12-31T24:00:00Z", "2024-06-01T23:60:00Z", "2024-06-01T23:59:60Z",
                "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "2024-06-00T00:00:00Z", "1677-09-22T00:00:00Z",
                "1678-01-01T00:00:00Z", "2261-12-31T23:59:59Z", "2262-04-11T00:00:00Z", "1970-01-01T00:00:00Z",
                "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2024-06-01 10:00:00Z",
                "2024-06-01T10:00:00z", "2024-06-01T10:00:00", "2024-06-01T10:00:00.5Z", " 2024-06-01T10:00:00Z",
                "2024-06-01T10:00:00Z ", "２024-06-01T10:00:00Z", "2024-6-01T10:00:00Z", "NA", "", "-", "null"]


@st.composite
def _stamp_like(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.sampled_from(_EDGE_STAMPS))
    if kind == 1:
        return None
    when = draw(st.datetimes(min_value=pd.Timestamp("1600-01-01").to_pydatetime(),
                             max_value=pd.Timestamp("2300-01-01").to_pydatetime()))
    text = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == 2:
        return text
    # one to three characters replaced (digits, separators, letters, a multi-byte character)
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        chars[draw(st.integers(0, len(chars) - 1))] = draw(st.sampled_from(list("0123456789-:TZ t/é")))
    return "".join(chars)


def test_edge_timestamps_read_from_the_bytes_match_the_parser() -> None:
    _bytes_match_parser([*_EDGE_STAMPS, None], 4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_stamp_like(), min_size=1, max_size=40), st.integers(1, 7))
def test_timestamps_read_from_the_bytes_match_the_parser(cells: list[str | None], chunk: int) -> None:
    _bytes_match_parser(cells, chunk)


def _bytes_match_parser(cells: list[str | None], chunk: int) -> None:
    import features.cells as fc

    column = pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(
        [pa.array(cells[i : i + chunk], pa.string()) for i in range(0, len(cells), chunk)])))
    ts, null, failed, too_big, too_small = fc.text_timestamps(column)
    # the reference: every cell stripped, null-tested and parsed (Arrow's strptime checked by formatting back,
    # then pandas' strict ISO-8601 parser)
    stripped = fc.strip(pd.Series(cells, dtype=object).where(pd.notna(pd.Series(cells, dtype=object)), ""))
    want_null = fc.is_null(stripped)
    want_ts, want_failed, want_big, want_small = fc.parse_timestamps(stripped, want_null)
    assert null.tolist() == want_null.tolist()
    assert ts.equals(want_ts), (cells, ts, want_ts)
    assert failed.tolist() == np.asarray(want_failed).tolist()
    assert (too_big.tolist(), too_small.tolist()) == (want_big.tolist(), want_small.tolist())


_NUMBER_CELLS = ["1.5", "+1.5", "-2", ".5", "5.", "1e5", "1E+05", "-0", "00012", "1_000", "0x10", " 1.25", "7 ", "inf",
                 "-inf", "nan", "-nan", "Infinity", "1e400", "1e-400", "1.2.3", "", "  ", "NA", "null", "-", "1,5", "١٢",
                 "e5", "1e", "+", "."]


@st.composite
def _number_like(draw: st.DrawFn) -> str | None:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(_NUMBER_CELLS))
    if kind == 1:
        return None
    x = draw(st.floats(allow_nan=False, allow_infinity=False))
    text = draw(st.sampled_from(["{!r}", "{:.17g}", "{:.3f}", "{:.6e}", " {!r} "])).format(x)
    return text


def _numbers_match_parser(cells: list[str | None]) -> None:
    import features.cells as fc

    column = pd.Series(pd.arrays.ArrowExtensionArray(pa.array(cells, pa.string())))
    vals, null, non_numeric = fc.text_numbers(column)
    texts = pd.Series(cells, dtype=object).where(pd.notna(pd.Series(cells, dtype=object)), "")
    stripped = fc.strip(texts)
    want_null = fc.is_null(stripped)
    assert null.tolist() == want_null.tolist()
    want = pd.to_numeric(stripped.where(~want_null, None), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    assert non_numeric.tolist() == (~want_null & ~np.isfinite(want)).tolist()
    for text, got, ok in zip(stripped, vals, ~want_null & ~non_numeric, strict=True):
        if ok:  # a plain decimal is parsed correctly rounded: Python's float() of its text
            expected = float(text) if re.fullmatch(fc.PLAIN_DECIMAL.strip("^$"), text) else pd.to_numeric(text)
            assert got == expected, (text, got, expected)


def test_edge_numbers_read_by_arrow_match_the_parser() -> None:
    _numbers_match_parser([*_NUMBER_CELLS, None])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_number_like(), min_size=1, max_size=30))
def test_numbers_read_by_arrow_match_the_parser(cells: list[str | None]) -> None:
    _numbers_match_parser(cells)


def _encodes_like_pandas(cells: list[str | None], chunk: int) -> None:
    import features.cells as fc

    column = pa.chunked_array([pa.array(cells[i : i + chunk], pa.string()) for i in range(0, len(cells), chunk)],
                              type=pa.string())
    codes, uniques = fc.encode_strings(column)
    # the same partition of the rows as pandas' factorize, each code naming its cell's text (a null the null)
    want_codes, want_uniques = pd.factorize(pd.Series(cells, dtype=object), use_na_sentinel=False)
    assert len(uniques) == len(want_uniques)
    assert [None if pd.isna(uniques[c]) else uniques[c] for c in codes] == cells
    assert pd.Series(codes).duplicated().tolist() == pd.Series(want_codes).duplicated().tolist()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", " a", "", "ü", "x" * 30]), st.text(max_size=3)),
                max_size=40), st.integers(1, 7), st.booleans())
def test_arrow_text_is_hashed_like_pandas_in_one_piece_or_two_halves(
    cells: list[str | None], chunk: int, halves: bool
) -> None:
    """Large Arrow text columns are hashed in two halves at once and unified; small ones in one piece. Both
    give every row the code of its own text, as pandas' factorize does (the halves forced here on any size)."""
    import features.cells as fc

    threshold = fc.PARALLEL_HASH_ROWS
    fc.PARALLEL_HASH_ROWS = 0 if halves else threshold
    try:
        _encodes_like_pandas(cells, chunk)
    finally:
        fc.PARALLEL_HASH_ROWS = threshold


def test_known_users_are_looked_up_in_any_form() -> None:
    """The unknown-user check looks the distinct ids up among the users' ids however they come: a list, an
    object column, an Arrow column or Arrow dictionary (what ``arrow_text`` keeps), or values not all strings."""
    import features.cells as fc

    distinct = pa.array(["u1", "u2", "u3", "7"])
    users = ["u2", "u3", "u9"]
    want = [False, True, True, False]
    forms = [users, pd.Series(users, dtype=object), pd.Index(users), pd.Series(users, dtype=pd.ArrowDtype(pa.string())),
             pd.Series(pd.arrays.ArrowExtensionArray(pa.array(users).dictionary_encode()))]
    for form in forms:
        assert fc.among(distinct, form).tolist() == want, type(form)
    assert fc.among(distinct, ["u1", 7, None]).tolist() == [True, False, False, False]  # as pandas: 7 is not "7"
    assert fc.among(distinct, iter(["u1", 7, None])).tolist() == [True, False, False, False]  # an iterator, read once
    assert fc.among(pa.array([], pa.string()), users).tolist() == []
