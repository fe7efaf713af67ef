"""Leakage audit: prove that features as of ``as_of`` use no data from after ``as_of``.

Recompute the features on two altered copies of the data and report every feature whose values move:

* **truncated**: every row dated after ``as_of`` removed (and users who joined after it);
* **future copies appended**: every row at or before ``as_of`` copied to the mirror-image time after
  it (``2 * as_of - t + 1 s``, so a feature that peeks even one second past the cutoff sees new rows),
  once for the same users and once under new user ids (so a user known only from future data would
  appear).

A correct feature function gives identical tables for all three.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from features.config import StrataConfig
from features.contract import ENTITY_KEY
from features.cutoffs import parse_as_of
from features.dataset import Dataset

FeatureFn = Callable[[Dataset, pd.Timestamp, StrataConfig], pd.DataFrame]
FUTURE_SUFFIX = "~future"


def truncate_dataset(dataset: Dataset, as_of: pd.Timestamp) -> Dataset:
    """The data as it was at ``as_of``: rows dated after it dropped (users with unknown ``joined_at`` kept)."""
    as_of = parse_as_of(as_of)
    orders = dataset.orders[dataset.orders["ordered_at"] <= as_of]
    events = dataset.events[dataset.events["occurred_at"] <= as_of] if dataset.events is not None else None
    users = dataset.users
    if users is not None and "joined_at" in users.columns:
        users = users[users["joined_at"].isna() | (users["joined_at"] <= as_of)]
    return Dataset(orders=orders.reset_index(drop=True), events=None if events is None else events.reset_index(drop=True),
                   users=None if users is None else users.reset_index(drop=True))


def _mirror(ts: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    return (as_of + (as_of - ts)) + pd.Timedelta(seconds=1)


def _future_copy(frame: pd.DataFrame, ts_col: str, as_of: pd.Timestamp, rename_users: bool, id_col: str | None) -> pd.DataFrame:
    past = frame[frame[ts_col] <= as_of].copy()
    past[ts_col] = _mirror(past[ts_col], as_of)
    if rename_users:
        past[ENTITY_KEY] = past[ENTITY_KEY].astype(str) + FUTURE_SUFFIX
    if id_col is not None and id_col in past.columns:
        past[id_col] = past[id_col].astype(str) + (FUTURE_SUFFIX + ("-u" if rename_users else "-s"))
    return past


def append_future_copies(dataset: Dataset, as_of: pd.Timestamp) -> Dataset:
    """``dataset`` plus mirror-image copies (after ``as_of``) of its rows, for the same and for new users."""
    as_of = parse_as_of(as_of)

    def extend(frame: pd.DataFrame, ts_col: str, id_col: str | None) -> pd.DataFrame:
        copies = [_future_copy(frame, ts_col, as_of, rename, id_col) for rename in (False, True)]
        return pd.concat([frame, *copies], ignore_index=True)

    orders = extend(dataset.orders, "ordered_at", "order_id")
    events = extend(dataset.events, "occurred_at", None) if dataset.events is not None else None
    users = dataset.users
    if users is not None:
        new = users.copy()
        new[ENTITY_KEY] = new[ENTITY_KEY].astype(str) + FUTURE_SUFFIX
        if "joined_at" in new.columns:
            joined = new["joined_at"]
            new["joined_at"] = joined.where(joined > as_of, _mirror(joined, as_of))
        users = pd.concat([users, new], ignore_index=True)
    return Dataset(orders=orders, events=events, users=users)


def compare_feature_tables(
    expected: pd.DataFrame, actual: pd.DataFrame, scenario: str, *, rtol: float = 1e-9, atol: float = 1e-9
) -> list[str]:
    """One sentence per difference between two feature tables (users, columns, values); empty if equal."""
    problems = []
    exp_users, act_users = set(expected[ENTITY_KEY]), set(actual[ENTITY_KEY])
    if exp_users != act_users:
        extra, missing = sorted(act_users - exp_users), sorted(exp_users - act_users)
        problems.append(
            f"users known at as_of changed when {scenario}: {len(extra)} added (e.g. {extra[:3]}), "
            f"{len(missing)} removed (e.g. {missing[:3]})"
        )
    common = sorted(exp_users & act_users)
    e = expected.set_index(ENTITY_KEY).loc[common]
    a = actual.set_index(ENTITY_KEY).loc[common]
    for col in e.columns:
        if col not in a.columns:
            problems.append(f"{col}: missing when {scenario}")
            continue
        x, y = e[col], a[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            same = (np.isnan(xv) & np.isnan(yv)) | np.isclose(xv, yv, rtol=rtol, atol=atol)
        else:
            same = ((x == y) | (x.isna() & y.isna())).to_numpy()
        if not same.all():
            bad = np.flatnonzero(~same)
            i = bad[0]
            problems.append(
                f"{col}: changed for {len(bad)} of {len(common)} users when {scenario} "
                f"(e.g. user {common[i]}: {x.iloc[i]!r} -> {y.iloc[i]!r})"
            )
    return problems


def audit_leakage(dataset: Dataset, feature_fn: FeatureFn, as_of: pd.Timestamp, config: StrataConfig) -> list[str]:
    """Recompute ``feature_fn`` on truncated and on future-augmented data; list every feature that moved.

    Returns
    -------
    Problems found, one sentence each naming the feature, the scenario, how many users changed and an
    example; an empty list means no leak was detected.
    """
    as_of = parse_as_of(as_of)
    base = feature_fn(dataset, as_of, config)
    problems = compare_feature_tables(
        base, feature_fn(truncate_dataset(dataset, as_of), as_of, config), "data after as_of was removed"
    )
    problems += compare_feature_tables(
        base, feature_fn(append_future_copies(dataset, as_of), as_of, config), "future copies were appended"
    )
    return problems
