"""Migration matrices: exact counts, appearing/disappearing users, sums equal both populations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.errors import StrataError
from features.migrations import GONE_COLUMN, NEW_ROW, migration_matrix, migration_shares, migration_summary


def layers(pairs: dict[str, str], column: str = "lifecycle") -> pd.DataFrame:
    return pd.DataFrame({"user_id": list(pairs), column: list(pairs.values())})


def test_exact_counts_with_new_and_gone() -> None:
    prev = layers({"a": "new", "b": "new", "c": "growth", "d": "mature", "e": "potential"})
    curr = layers({"a": "growth", "b": "new", "c": "growth", "d": "churned", "f": "potential", "g": "new"})
    m = migration_matrix(prev, curr, "lifecycle")
    # Known codes in lifecycle order, only those seen at either cutoff, then the extras.
    assert list(m.index) == ["potential", "new", "growth", "mature", "churned", NEW_ROW]
    assert list(m.columns) == ["potential", "new", "growth", "mature", "churned", GONE_COLUMN]
    assert m.loc["new", "growth"] == 1 and m.loc["new", "new"] == 1
    assert m.loc["growth", "growth"] == 1
    assert m.loc["mature", "churned"] == 1
    assert m.loc["potential", GONE_COLUMN] == 1  # e disappeared
    assert m.loc[NEW_ROW, "potential"] == 1 and m.loc[NEW_ROW, "new"] == 1  # f, g appeared
    assert m.loc[NEW_ROW, GONE_COLUMN] == 0
    assert int(m.to_numpy().sum()) == 7  # union of both populations
    assert migration_summary(m) == {"stayed": 2, "moved": 2, "new": 2, "gone": 1}


def test_shares_are_row_normalised() -> None:
    prev = layers({"a": "new", "b": "new", "c": "new", "d": "growth"})
    curr = layers({"a": "growth", "b": "new", "c": "new", "d": "growth"})
    s = migration_shares(migration_matrix(prev, curr, "lifecycle"))
    assert s.loc["new", "new"] == pytest.approx(2 / 3)
    assert s.loc["new", "growth"] == pytest.approx(1 / 3)
    assert np.isnan(s.loc[NEW_ROW, "new"])  # nobody appeared


def test_unknown_codes_are_kept_after_known_ones() -> None:
    prev = layers({"a": "zeta", "b": "new"})
    curr = layers({"a": "alpha", "b": "new"})
    m = migration_matrix(prev, curr, "lifecycle")
    assert list(m.index) == ["new", "alpha", "zeta", NEW_ROW]
    assert m.loc["zeta", "alpha"] == 1


def test_empty_previous_population() -> None:
    curr = layers({"a": "new", "b": "potential"})
    m = migration_matrix(layers({}), curr, "lifecycle")
    assert m.loc[NEW_ROW].sum() == 2 and m.drop(index=NEW_ROW).to_numpy().sum() == 0


def test_duplicate_user_is_an_error_naming_it() -> None:
    prev = pd.DataFrame({"user_id": ["a", "b", "a"], "lifecycle": ["new", "new", "growth"]})
    with pytest.raises(StrataError, match=r"previous layers: column user_id .* 'a' at row 3"):
        migration_matrix(prev, layers({"a": "new"}), "lifecycle")


def test_missing_column_is_named() -> None:
    with pytest.raises(StrataError, match="rfm_segment"):
        migration_matrix(layers({"a": "new"}), layers({"a": "new"}), "rfm_segment")


codes = st.sampled_from(["potential", "new", "growth", "mature", "declining", "churned"])


@settings(max_examples=60, deadline=None)
@given(
    prev=st.dictionaries(st.integers(0, 60).map(str), codes, max_size=40),
    curr=st.dictionaries(st.integers(0, 60).map(str), codes, max_size=40),
)
def test_sums_match_both_populations(prev: dict[str, str], curr: dict[str, str]) -> None:
    m = migration_matrix(layers(prev), layers(curr), "lifecycle")
    prev_sizes = pd.Series(list(prev.values()), dtype=object).value_counts()
    curr_sizes = pd.Series(list(curr.values()), dtype=object).value_counts()
    row_sums = m.drop(index=NEW_ROW).sum(axis=1)
    col_sums = m.drop(columns=GONE_COLUMN).sum(axis=0)
    for code, n in row_sums.items():
        assert n == prev_sizes.get(code, 0)
    for code, n in col_sums.items():
        assert n == curr_sizes.get(code, 0)
    assert m.loc[NEW_ROW].sum() == len(set(curr) - set(prev))
    assert m[GONE_COLUMN].sum() == len(set(prev) - set(curr))
    assert m.to_numpy().sum() == len(set(prev) | set(curr))
