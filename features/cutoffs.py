"""Cutoff times (``as_of``): parsing and the series of past cutoffs a training set is stacked over.

A cutoff is always explicit (never "the max date in the data"). A bare date means midnight UTC at the
start of that day; features see data with timestamps ``<= as_of``; labels look at ``(as_of, as_of + H]``.
"""

from __future__ import annotations

import re

import pandas as pd

from features.errors import StrataError

#: The dates a timestamp can hold (pandas' datetime64[ns], which every timestamp of the data is).
TIME_RANGE = "1677-09-22 .. 2262-04-11"


#: The text forms of a cutoff: an ISO 8601 date, or date and time with an optional UTC offset (``Z``, ``+08:00``).
#: Nothing else, so that nothing is guessed: ``1/2/2025`` (month or day first?), a zone name such as ``PST``
#: (pandas drops it and reads UTC) and ``now`` / ``today`` (a run could not be repeated) are refused.
ISO_TIME = re.compile(
    r"^\s*\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?\s*(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?\s*$"
)
_ISO_HINT = ("use an ISO 8601 date or timestamp, e.g. 2024-06-30, 2024-06-30T18:00:00Z or 2024-06-30T18:00:00+08:00 "
             "(UTC when no offset is given; offsets, not zone names)")


def parse_as_of(value: str | pd.Timestamp, option: str = "--as-of") -> pd.Timestamp:
    """Parse an ISO date or timestamp into a tz-aware UTC :class:`pandas.Timestamp`.

    Text must match :data:`ISO_TIME`. Errors (another form, a date that does not exist, or outside
    :data:`TIME_RANGE`) name ``option``, the command-line option or configuration key the value came from.
    """
    if isinstance(value, str) and not ISO_TIME.match(value):
        raise StrataError(f"{option}: cannot parse {value!r} as a date or timestamp: {_ISO_HINT}")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise StrataError(f"{option}: cannot parse {value!r} as a date or timestamp: {_ISO_HINT}") from None
    if ts is pd.NaT:
        raise StrataError(f"{option}: cannot parse {value!r} as a date or timestamp: {_ISO_HINT}")
    try:  # a cutoff beyond datetime64[ns] would overflow later
        ts.as_unit("ns")
    except (OverflowError, ValueError):
        raise StrataError(f"{option}: {value!r} is out of the supported range ({TIME_RANGE})") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
