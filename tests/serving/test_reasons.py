"""Reason codes: top contributions up and down, readable labels, and exact additivity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serving.reasons import contributions_total, feature_labels, reason_codes


def test_top_three_each_way_in_order() -> None:
    contrib = pd.DataFrame(
        {
            "a": [0.5, 0.0],
            "b": [-0.2, 0.1],
            "c": [0.9, np.nan],
            "d": [-0.7, -0.3],
            "e": [0.1, 0.0],
            "f": [-0.05, 0.0],
            "g": [0.3, 0.0],
            "bias": [-1.0, -1.0],
        }
    )
    features = pd.DataFrame(
        {"a": [1.0, 2.0], "b": [np.nan, 3.0], "c": [5.0, 6.0], "d": [7.5, 8.0], "e": [0.0, 0.0],
         "f": [1.0, 1.0], "g": ["wecom", "ad"]}
    )
    out = [json.loads(s) for s in reason_codes(contrib, features, labels={"c": "Label C"})]
    first = out[0]
    assert [(r["feature"], r["direction"]) for r in first] == [
        ("c", "up"), ("a", "up"), ("g", "up"), ("d", "down"), ("b", "down"), ("f", "down"),
    ]
    assert first[0]["label"] == "Label C" and first[0]["value"] == 5.0
    assert first[0]["contribution"] == pytest.approx(0.9)
    assert first[2]["value"] == "wecom"
    assert first[4]["value"] is None  # NaN feature value -> null
    assert all(r["score"] == "churn_risk" for r in first)
    # Zero and NaN contributions are never reasons: one up, one down.
    assert [(r["feature"], r["direction"]) for r in out[1]] == [("b", "up"), ("d", "down")]


def test_prospect_rows_without_contributions_get_empty_list() -> None:
    contrib = pd.DataFrame({"a": [np.nan], "bias": [np.nan]})
    assert reason_codes(contrib, pd.DataFrame({"a": [1.0]})) == ["[]"]
    assert reason_codes(contrib.iloc[:0], pd.DataFrame({"a": []})) == []


def test_labels_come_from_the_feature_catalog() -> None:
    labels = feature_labels(["days_since_last_order", "not_in_catalog_x"])
    assert labels["days_since_last_order"] == "Days from the last paid order to as_of"
    assert labels["not_in_catalog_x"] == "Not in catalog x"


def test_contributions_add_up_to_the_raw_lightgbm_score() -> None:
    """pred_contrib of a real booster: per-row sum (features + bias) equals the raw score."""
    import lightgbm as lgb

    rng = np.random.default_rng(42)
    X = pd.DataFrame(rng.normal(size=(500, 5)), columns=[f"x{i}" for i in range(5)])
    y = (X["x0"] + 0.5 * X["x1"] ** 2 + rng.normal(scale=0.5, size=500) > 0.5).astype(float)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 7}, lgb.Dataset(X, y), 30)
    contrib = pd.DataFrame(booster.predict(X, pred_contrib=True), columns=[*X.columns, "bias"])
    np.testing.assert_allclose(contributions_total(contrib), booster.predict(X, raw_score=True), atol=1e-9)
    reasons = [json.loads(s) for s in reason_codes(contrib, X)]
    # Every reason's contribution is the row's real contribution of that feature.
    for i in (0, 17, 499):
        for r in reasons[i]:
            assert r["contribution"] == pytest.approx(contrib.loc[i, r["feature"]], rel=1e-5)
            assert (r["direction"] == "up") == (r["contribution"] > 0)


# ---------------------------------------------------------------- texts of a few values (the online path)


def _awkward_floats(seed: int, n: int) -> np.ndarray:
    """Random magnitudes over the whole double range, powers of ten and their neighbours, integers,
    ties at 4 decimals, subnormals, signed zeros, NaN and infinities."""
    rng = np.random.default_rng(seed)
    p10 = 10.0 ** np.arange(-307, 300, dtype=float)
    return np.concatenate([
        10.0 ** rng.uniform(-323, 308, n), -(10.0 ** rng.uniform(-300, 300, n // 2)), rng.standard_normal(n) * 1e3,
        p10, -p10, np.nextafter(p10, 0), np.nextafter(p10, np.inf),
        rng.integers(-10**12, 10**12, n // 4).astype(float), rng.integers(-10**6, 10**6, n // 2) / 100,
        rng.integers(-10**5, 10**5, n // 2) / 10**4 + 0.00005, rng.integers(-10**6, 10**6, n // 2) * 0.00005,
        [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
         1e-6, 1e-7, 999999999.5, 1e10, 1.5e10, 0.1 + 0.2],
    ])


def _chunks(values: np.ndarray, seed: int) -> list[np.ndarray]:
    """``values`` cut into pieces of 1 to SMALL_TEXTS values (the Python path)."""
    from serving.reasons import SMALL_TEXTS

    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(1, SMALL_TEXTS + 1, len(values)))
    return np.split(values, cuts[cuts < len(values)])


def test_float_texts_of_a_few_values_are_arrows_texts() -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from serving.reasons import float_text, float_texts

    values = _awkward_floats(1, 100_000)
    want = pc.cast(pa.array(values), pa.string()).to_pylist()
    assert [float_text(x) for x in values.tolist()] == want
    assert [t for chunk in _chunks(values, 2) for t in float_texts(chunk)] == want
    assert float_texts(values[:100]) == want[:100]  # more than SMALL_TEXTS: Arrow itself
    assert [float_text(x) for x in (3.0, -0.0, 1e-7, 1500000000.0, 1.5e10, 0.000001)] == [
        "3", "-0", "1e-7", "1500000000", "1.5e+10", "0.000001"]


def test_number_texts_of_a_few_values_are_number_strings() -> None:
    from serving.reasons import VALUE_DIGITS, number_strings, number_texts

    values = _awkward_floats(3, 100_000)
    for digits in (VALUE_DIGITS, 4, None):
        want = number_strings(values, digits).to_pylist()
        got = [t for chunk in _chunks(values, 4) for t in number_texts(chunk, digits)]
        assert got == want, digits
    assert number_texts(np.array([1234.5678, np.nan, -np.inf, 0.0]), 3) == ["1230", "null", "null", "0"]


def test_rounded_texts_of_a_few_values_are_arrows_rounding() -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    from serving.reasons import rounded_texts

    values = _awkward_floats(5, 100_000)
    values = values[~(np.abs(values) > 1e300)]  # Arrow refuses to round those at 4 decimals (overflow)
    want = pc.cast(pc.round(pa.array(values), 4), pa.string()).to_pylist()
    assert [t for chunk in _chunks(values, 6) for t in rounded_texts(chunk, 4)] == want
    # ties go to even; 0.00015 is 1.4999999999999998 ten-thousandths in binary, so it rounds down
    assert rounded_texts(np.array([0.00005, 0.00025, 0.00015, -0.00001, 12.34567]), 4) == [
        "0", "0.0002", "0.0001", "-0", "12.3457"]
    with pytest.raises(ValueError, match="overflow"):
        rounded_texts(np.array([1e305]), 4)
