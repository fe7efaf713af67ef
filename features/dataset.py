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
