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
