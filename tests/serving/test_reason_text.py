"""Reason text kernels: ranking contributions per row, joining the JSON pieces, extreme feature values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serving.reason_text import extreme_columns, join_reasons
from serving.reasons import number_strings, reason_codes


def _oracle(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    m = np.where(np.isnan(matrix), 0.0, matrix)
    # Stable sorts: among equal values the lower column comes first.
    return np.argsort(-m, axis=1, kind="stable")[:, :k], np.argsort(m, axis=1, kind="stable")[:, :k]


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(0, 12), st.integers(1, 9)),
           elements=st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, np.nan])),
    st.integers(0, 10),
)
def test_extreme_columns_match_a_stable_sort(matrix: np.ndarray, k: int) -> None:
    up, down = extreme_columns(matrix, k)
    want_up, want_down = _oracle(matrix, min(k, matrix.shape[1]))
    np.testing.assert_array_equal(up, want_up)
    np.testing.assert_array_equal(down, want_down)


def test_extreme_columns_on_a_subset_of_columns() -> None:
    rng = np.random.default_rng(42)
    m = rng.normal(size=(50, 6))
    cols = np.array([5, 0, 2])
    up, down = extreme_columns(m, 2, cols)
    want_up, want_down = _oracle(m[:, cols], 2)
    np.testing.assert_array_equal(up, want_up)
    np.testing.assert_array_equal(down, want_down)


def test_join_reasons_equals_python_join() -> None:
    rng = np.random.default_rng(42)
    n, width = 40, 4
    prefixes = ['{"feature": "a", "label": "最近一次购买", "value": ', '{"feature": "b", "label": "B", "value": ']
    feature = rng.integers(0, 2, size=(n, width))
    keep = rng.random((n, width)) < 0.6
    values = [f"{v:.3f}" for v in rng.normal(size=n * width)]
    contribs = [repr(v) for v in rng.normal(size=n * width)]
    got = join_reasons(feature, keep, prefixes, pa.array(values), pa.array(contribs, type=pa.large_string()),
                       ", mid: ", " UP}", " DOWN}")
    for i in range(n):
        items = [
            prefixes[feature[i, s]] + values[i * width + s] + ", mid: " + contribs[i * width + s]
            + (" UP}" if s < width // 2 else " DOWN}")
            for s in range(width) if keep[i, s]
        ]
        assert got[i] == "[" + ", ".join(items) + "]"


def test_extreme_feature_values_give_no_warning_and_exact_text() -> None:
    values = [1e-310, 5e-324, -1.7976931348623157e308, 1.23456789012e-300, 1e300, 2.5, np.inf]
    names = [f"f{i}" for i in range(len(values))]
    features = pd.DataFrame([values], columns=names)
    contrib = pd.DataFrame([[0.1 * (i + 1) for i in range(len(values))] + [0.0]], columns=[*names, "bias"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = reason_codes(contrib, features, top_n=len(values))[0]
        numbers = number_strings(np.array(values), 10).to_pylist()
    shown = {r["feature"]: r["value"] for r in json.loads(text)}
    assert shown == {"f0": 1e-310, "f1": 5e-324, "f2": -1.7976931348623157e308, "f3": 1.23456789e-300,
                     "f4": 1e300, "f5": 2.5, "f6": None}
    assert numbers == ["1e-310", "5e-324", "-1.7976931348623157e+308", "1.23456789e-300", "1e+300", "2.5", "null"]


@pytest.mark.parametrize("top_n", [0, 1, 3, 10])
def test_reason_codes_edge_shapes(top_n: int) -> None:
    features = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", None, "y"], "c": [np.nan, 0.001, 5.0]})
    contrib = pd.DataFrame({"a": [0.5, np.nan, 0.0], "b": [-0.2, 0.3, 0.0], "c": [0.1, -0.1, 0.0],
                            "bias": [1.0, 1.0, 1.0]})
    out = [json.loads(s) for s in reason_codes(contrib, features, top_n=top_n)]
    assert out[2] == []  # all-zero contributions: no reason
    if top_n == 0:
        assert out == [[], [], []]
        return
    ups = [[r["feature"] for r in row if r["direction"] == "up"] for row in out]
    assert ups[0] == ["a", "c"][:top_n] and ups[1] == ["b"]
    assert [r["value"] for r in out[1]] == [None, 0.001][: len(out[1])]
