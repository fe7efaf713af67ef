"""Cutoff times (``as_of``): parsing and the series of past cutoffs a training set is stacked over.

A cutoff is always explicit (never "the max date in the data"). A bare date means midnight UTC at the
start of that day; features see data with timestamps ``<= as_of``; labels look at ``(as_of, as_of + H]``.
"""

from __future__ import annotations

import pandas as pd

from features.errors import StrataError

#: The dates a timestamp can hold (pandas' datetime64[ns], which every timestamp of the data is).
TIME_RANGE = "1677-09-22 .. 2262-04-11"


def parse_as_of(value: str | pd.Timestamp, option: str = "--as-of") -> pd.Timestamp:
    """Parse an ISO date or timestamp into a tz-aware UTC :class:`pandas.Timestamp`.

    Errors (unparseable, or outside :data:`TIME_RANGE`) name ``option``, the command-line option the value
    came from.
    """
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise StrataError(f"{option}: cannot parse {value!r} as a date or timestamp (use e.g. 2024-06-30)") from None
    if ts is pd.NaT:
        raise StrataError(f"{option}: cannot parse {value!r} as a date or timestamp (use e.g. 2024-06-30)")
    try:  # a cutoff beyond datetime64[ns] would overflow later
        ts.as_unit("ns")
    except (OverflowError, ValueError):
        raise StrataError(f"{option}: {value!r} is out of the supported range ({TIME_RANGE})") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
