"""Cutoff times (``as_of``): parsing and the series of past cutoffs a training set is stacked over.

A cutoff is always explicit (never "the max date in the data"). A bare date means midnight UTC at the
start of that day; features see data with timestamps ``<= as_of``; labels look at ``(as_of, as_of + H]``.
"""

from __future__ import annotations

import pandas as pd

from features.errors import StrataError


def parse_as_of(value: str | pd.Timestamp) -> pd.Timestamp:
    """Parse an ISO date or timestamp into a tz-aware UTC :class:`pandas.Timestamp`."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise StrataError(f"--as-of: cannot parse {value!r} as a date or timestamp (use e.g. 2024-06-30)") from None
    if ts is pd.NaT:
        raise StrataError(f"--as-of: cannot parse {value!r} as a date or timestamp (use e.g. 2024-06-30)")
    try:  # every timestamp of the data is datetime64[ns]; a cutoff beyond it would overflow later
        ts.as_unit("ns")
    except (OverflowError, ValueError):
        raise StrataError(f"--as-of: {value!r} is out of the supported range (1677-09-22 .. 2262-04-11)") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
