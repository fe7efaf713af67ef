"""A validated data set: typed ``orders`` and optional ``events`` and ``users`` frames.

Column dtypes follow :mod:`features.contract`: ``user_id``/``order_id``/strings as pandas ``object``
strings, timestamps ``datetime64[ns, UTC]``, ``amount``/``value`` float64, ``quantity`` Int64. With
``load_dataset(..., arrow_text=True)`` (``strata features``, which only hands the frames to DuckDB) the text
columns are Arrow dictionaries of strings instead (``pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string()))``),
with the same values and nulls.
Optional columns absent from the input are absent here too (consumers must not assume them), and so are
columns a caller of :func:`features.validation.load_dataset` did not ask to keep (``columns=``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Dataset:
    orders: pd.DataFrame
    events: pd.DataFrame | None = None
    users: pd.DataFrame | None = None

    @property
    def has_events(self) -> bool:
        return self.events is not None and len(self.events) > 0

    @property
    def has_users(self) -> bool:
        return self.users is not None and len(self.users) > 0

    def first_activity(self) -> pd.Timestamp | None:
        """The earliest order, event or join time (UTC); None when the data has none."""
        stamps = [self.orders["ordered_at"].min()] if len(self.orders) else []
        if self.events is not None and len(self.events):
            stamps.append(self.events["occurred_at"].min())
        if self.users is not None and "joined_at" in self.users.columns and len(self.users):
            stamps.append(self.users["joined_at"].min())
        return _utc(min(s for s in stamps if pd.notna(s))) if any(pd.notna(s) for s in stamps) else None

    def last_activity(self) -> pd.Timestamp | None:
        """The latest order or event time (UTC); None when the data has none. Joins are not activity: a user
        who only joined has done nothing yet."""
        stamps = [self.orders["ordered_at"].max()] if len(self.orders) else []
        if self.events is not None and len(self.events):
            stamps.append(self.events["occurred_at"].max())
        return _utc(max(s for s in stamps if pd.notna(s))) if any(pd.notna(s) for s in stamps) else None


def _utc(value: object) -> pd.Timestamp:
    ts = pd.Timestamp(value)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
