"""Churn and value metrics: hand-computed cases and independent oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from training.metrics import (
    MetricInputError,
    calibration_table,
    churn_metrics,
    expected_calibration_error,
    lift_top_decile,
    normalized_gini,
    value_deciles,
    value_metrics,
)


def kaggle_normalized_gini(actual: np.ndarray, pred: np.ndarray) -> float:
    """The classic Kaggle implementation (sort by prediction, cumulative share of actual), for untied preds."""

    def gini(a: np.ndarray, p: np.ndarray) -> float:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(a[order]) / a.sum()
        n = len(a)
        return float((cum - np.arange(1, n + 1) / n).sum() / n)

    return gini(actual, pred) / gini(actual, actual)


# ----------------------------------------------------------------------------- churn


def test_churn_metrics_tiny_hand_computed_case() -> None:
    y = [0, 0, 1, 1]
    p = [0.1, 0.4, 0.35, 0.8]
    m = churn_metrics(y, p)
    # 4 positive-negative pairs, 3 ordered correctly
    assert m["auc"] == pytest.approx(0.75)
    # ranked 0.8(1) 0.4(0) 0.35(1) 0.1(0): AP = 0.5 * 1 + 0.5 * 2/3
    assert m["pr_auc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # bins (0, .1] {0.1: y 0}, (.3, .4] {0.35: y 1, 0.4: y 0}, (.7, .8] {0.8: y 1}
    assert m["ece"] == pytest.approx(1 / 4 * 0.1 + 2 / 4 * abs(0.375 - 0.5) + 1 / 4 * 0.2)
    # top decile = ceil(0.4) = 1 row (p = 0.8, a positive): 1 / 0.5
    assert m["lift_top_decile"] == pytest.approx(2.0)
    assert m["positive_rate"] == 0.5 and m["n"] == 4


def test_ece_matches_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(42)
    p = rng.beta(2, 3, size=5000)
    p[:7] = [0.0, 1.0, 0.1, 0.2, 0.5, 0.9, 0.999]  # bin edges and ends
    y = (rng.random(5000) < np.clip(p * 1.2, 0, 1)).astype(float)
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    table = calibration_table(y, p).query("n > 0")
    np.testing.assert_allclose(table["frac_pos"], frac_pos)
    np.testing.assert_allclose(table["mean_pred"], mean_pred)
    edges = np.linspace(0, 1, 11)
    counts = np.array([np.sum((p > lo) & (p <= hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    counts[0] += np.sum(p == 0)
    assert counts.sum() == len(p)
    counts = counts[counts > 0]
    oracle = float(np.sum(counts / counts.sum() * np.abs(frac_pos - mean_pred)))
    assert expected_calibration_error(y, p) == pytest.approx(oracle)


def test_perfectly_calibrated_probabilities_have_small_ece() -> None:
    rng = np.random.default_rng(42)
    p = rng.random(200_000)
    y = (rng.random(len(p)) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1)) > 0.15


def test_lift_with_ties_is_order_invariant() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    p = np.array([0.9, 0.9, 0.9, 0.9] + [0.1] * 16)
    # top 2 rows come from the 4 tied at 0.9 (2 of them positive): expected 1 positive in 2 rows
    assert lift_top_decile(y, p) == pytest.approx((1 / 2) / (3 / 20))
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(y))
    assert lift_top_decile(y[perm], p[perm]) == pytest.approx(lift_top_decile(y, p))
    # constant scores carry no information: lift 1
    assert lift_top_decile(y, np.full(len(y), 0.3)) == pytest.approx(1.0)


def test_single_class_gives_nan_auc_not_an_error() -> None:
    m = churn_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
    assert m["brier"] == pytest.approx((0.64 + 0.25 + 0.01) / 3)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.2], "same length"),
        ([0, 2], [0.2, 0.3], "y_true: row 1: value 2.0 is not a 0/1 label"),
        ([0, 1], [0.2, 1.3], r"p: row 1: value 1.3 is not a probability in \[0, 1\]"),
        ([0, 1], [np.nan, 0.5], "p: row 0: value nan is not a finite number"),
        ([], [], "no rows"),
    ],
)
def test_churn_metric_inputs_are_validated(y: list, p: list, message: str) -> None:
    with pytest.raises(MetricInputError, match=message):
        churn_metrics(y, p)


# ----------------------------------------------------------------------------- value


def test_normalized_gini_reference_points() -> None:
    rng = np.random.default_rng(42)
    y = rng.gamma(0.5, 100, size=20_000) * (rng.random(20_000) < 0.4)
    assert normalized_gini(y, y) == pytest.approx(1.0)
    assert normalized_gini(y, -y) == pytest.approx(-1.0)
    assert abs(normalized_gini(y, rng.random(len(y)))) < 0.03
    # any increasing transform of a perfect prediction is still perfect
    assert normalized_gini(y, np.log1p(y)) == pytest.approx(1.0)


def test_normalized_gini_matches_kaggle_implementation_without_ties() -> None:
    rng = np.random.default_rng(42)
    y = rng.gamma(1.0, 50, size=500)
    pred = y + rng.normal(0, 40, size=500)
    assert normalized_gini(y, pred) == pytest.approx(kaggle_normalized_gini(y, pred), abs=1e-12)


def test_normalized_gini_on_binary_outcomes_is_2auc_minus_1_with_ties() -> None:
    rng = np.random.default_rng(42)
    y = (rng.random(3000) < 0.3).astype(float)
    pred = np.round(y * 0.3 + rng.random(3000), 1)  # heavy ties
    assert normalized_gini(y, pred) == pytest.approx(2 * roc_auc_score(y, pred) - 1, abs=1e-12)
    perm = rng.permutation(len(y))
    assert normalized_gini(y[perm], pred[perm]) == pytest.approx(normalized_gini(y, pred), abs=1e-12)


def test_normalized_gini_undefined_cases() -> None:
    assert math.isnan(normalized_gini([0, 0, 0], [1, 2, 3]))
    assert math.isnan(normalized_gini([5, 5, 5], [1, 2, 3]))


def test_value_metrics_tiny_hand_computed_case() -> None:
    y = [0.0, 10.0, 30.0]
    pred = [5.0, 10.0, 20.0]
    m = value_metrics(y, pred)
    assert m["mae"] == pytest.approx(5.0)
    assert m["rmse"] == pytest.approx(math.sqrt(125 / 3))
    assert m["spearman"] == pytest.approx(1.0)
    assert m["normalized_gini"] == pytest.approx(1.0)
    assert m["total_spend_error_pct"] == pytest.approx(-12.5)
    # top decile = 1 row, the one predicted 20, which holds 30 of the 40 actual
    assert m["top_decile_capture"] == pytest.approx(0.75)


def test_value_metrics_constant_prediction() -> None:
    m = value_metrics([0.0, 10.0, 30.0], [10.0, 10.0, 10.0])
    assert math.isnan(m["spearman"])
    assert m["normalized_gini"] == pytest.approx(0.0)
    assert m["total_spend_error_pct"] == pytest.approx(-25.0)
    assert m["top_decile_capture"] == pytest.approx((40 / 3) / 40)


def test_value_deciles_table() -> None:
    y = np.arange(1.0, 21.0)
    table = value_deciles(y, y)
    assert list(table["decile"]) == list(range(1, 11))
    assert list(table["n"]) == [2] * 10
    # decile 1 holds the two highest predictions, 20 and 19
    assert table.loc[0, "actual_sum"] == 39.0 and table.loc[0, "pred_mean"] == 19.5
    assert table["actual_share"].sum() == pytest.approx(1.0)
    assert table["actual_sum"].sum() == pytest.approx(y.sum())


def test_value_deciles_keep_ties_together() -> None:
    y = np.array([0.0] * 15 + [1.0, 2.0, 3.0, 4.0, 50.0])
    pred = np.array([0.0] * 15 + [1.0, 2.0, 3.0, 4.0, 5.0])
    table = value_deciles(y, pred)
    assert table["n"].sum() == 20
    tied = table[table["pred_mean"] == 0.0]
    assert len(tied) == 1 and tied["n"].iloc[0] == 15
    assert (table["n"] == 0).sum() > 0  # some groups empty, reported with n = 0
