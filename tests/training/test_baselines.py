"""Baselines: BG/NBD + Gamma-Gamma from a Dataset at a cutoff, and the recency/spend rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.dataset import Dataset
from features.errors import InsufficientDataError, StrataError
from training.baselines import (
    BGNBD_COLUMNS,
    RULE_COLUMNS,
    bgnbd_baseline,
    fit_bgnbd_baseline,
    rfm_summary,
    rule_baseline,
)
from training.metrics import churn_metrics, value_metrics

CDNOW_SAMPLE = Path("/work/shared/data/cdnow/CDNOW_sample.txt")
CAL_END = pd.Timestamp("1997-09-30", tz="UTC")
HOLDOUT_DAYS = 273  # 39 weeks: 1997-10-01 .. 1998-06-30


def ts(value: str) -> pd.Timestamp:
    return pd.Timestamp(value, tz="UTC")


def orders_frame(rows: list[tuple[str, str, float]], status: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([r[0] for r in rows], dtype=object),
            "order_id": pd.Series([f"o{i}" for i in range(len(rows))], dtype=object),
            "ordered_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "amount": np.array([r[2] for r in rows], dtype=float),
        }
    )
    if status is not None:
        frame["status"] = pd.Series(status, dtype=object)
    return frame


@pytest.fixture(scope="module")
def cdnow_dataset() -> Dataset:
    """The 2,357-customer CDNOW sample as a Dataset: one order per line, at 00:00 UTC, all of 1997-1998."""
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["master_id", "sample_id", "date", "cds", "dollars"],
        dtype=str,
    )
    orders = pd.DataFrame(
        {
            "user_id": raw["sample_id"].astype(object),
            "order_id": pd.Series([f"o{i}" for i in range(len(raw))], dtype=object),
            "ordered_at": pd.to_datetime(raw["date"], format="%Y%m%d").dt.tz_localize("UTC"),
            "amount": raw["dollars"].astype(float),
        }
    )
    return Dataset(orders=orders)


@pytest.fixture(scope="module")
def cdnow_fit(cdnow_dataset: Dataset):  # type: ignore[no-untyped-def]
    return fit_bgnbd_baseline(cdnow_dataset, "1997-09-30")


def test_cdnow_conventions_reproduce_published_estimates(cdnow_fit) -> None:  # type: ignore[no-untyped-def]
    # the holdout orders are in the Dataset too: only orders <= as_of may be used
    assert len(cdnow_fit.summary) == 2357
    bg = cdnow_fit.bgnbd.params_
    assert [round(bg[k], 3) for k in ("r", "alpha", "a", "b")] == [0.243, 4.414, 0.793, 2.426]
    assert round(cdnow_fit.bgnbd.loglik_, 1) == -9582.4
    gg = cdnow_fit.gamma_gamma.params_
    assert [round(gg[k], 2) for k in ("p", "q", "v")] == [6.25, 3.74, 15.44]


def test_cdnow_holdout_quality(cdnow_dataset: Dataset, cdnow_fit) -> None:  # type: ignore[no-untyped-def]
    """Scores against what the 2,357 customers really did in the next 39 weeks (labels computed here)."""
    scores = cdnow_fit.predict(HOLDOUT_DAYS)
    orders = cdnow_dataset.orders
    window = orders[
        (orders["ordered_at"] > CAL_END) & (orders["ordered_at"] <= CAL_END + pd.Timedelta(days=HOLDOUT_DAYS))
    ]
    spend = window.groupby("user_id")["amount"].sum().reindex(scores["user_id"]).fillna(0.0).to_numpy()
    churned = (spend == 0).astype(float)
    churn = churn_metrics(churned, scores["churn_prob"])
    assert churn["auc"] > 0.72  # measured 0.757
    assert abs(churn["mean_pred"] - churn["positive_rate"]) < 0.05  # measured 0.738 vs 0.710
    assert churn["ece"] < 0.08  # measured 0.043
    value = value_metrics(spend, scores["expected_value"])
    assert value["normalized_gini"] > 0.55  # measured 0.638
    assert abs(value["total_spend_error_pct"]) < 25  # measured -15.6%


def test_orders_after_as_of_change_nothing(cdnow_dataset: Dataset, cdnow_fit) -> None:  # type: ignore[no-untyped-def]
    orders = cdnow_dataset.orders
    truncated = Dataset(orders=orders[orders["ordered_at"] <= CAL_END].reset_index(drop=True))
    pd.testing.assert_frame_equal(bgnbd_baseline(truncated, CAL_END, 90), cdnow_fit.predict(90))


def test_time_unit_does_not_change_predictions(cdnow_dataset: Dataset, cdnow_fit) -> None:  # type: ignore[no-untyped-def]
    days = fit_bgnbd_baseline(cdnow_dataset, CAL_END, time_unit="days")
    assert days.bgnbd.alpha_ == pytest.approx(7 * cdnow_fit.bgnbd.alpha_, rel=1e-5)
    a, b = days.predict(90), cdnow_fit.predict(90)
    np.testing.assert_allclose(a["churn_prob"], b["churn_prob"], atol=1e-6)
    np.testing.assert_allclose(a["expected_value"], b["expected_value"], rtol=1e-4, atol=1e-8)


def test_doubling_past_spend_doubles_value_and_keeps_churn(cdnow_dataset: Dataset, cdnow_fit) -> None:  # type: ignore[no-untyped-def]
    doubled = Dataset(orders=cdnow_dataset.orders.assign(amount=lambda o: 2 * o["amount"]))
    a, b = fit_bgnbd_baseline(doubled, CAL_END).predict(90), cdnow_fit.predict(90)
    np.testing.assert_allclose(a["expected_value"], 2 * b["expected_value"], rtol=1e-4)
    np.testing.assert_allclose(a["churn_prob"], b["churn_prob"])


def test_a_buyer_who_stops_gets_higher_churn_and_lower_value(cdnow_dataset: Dataset) -> None:
    extra = orders_frame(
        [
            ("steady", "1997-03-01", 20.0),
            ("steady", "1997-06-01", 20.0),
            ("steady", "1997-09-15", 20.0),
            ("stopped", "1997-03-01", 20.0),
            ("stopped", "1997-04-01", 20.0),
            ("stopped", "1997-05-01", 20.0),
        ]
    )
    data = Dataset(orders=pd.concat([cdnow_dataset.orders, extra], ignore_index=True))
    scores = bgnbd_baseline(data, CAL_END, 90, user_ids=["steady", "stopped"]).set_index("user_id")
    assert scores.loc["stopped", "churn_prob"] > scores.loc["steady", "churn_prob"]
    assert scores.loc["stopped", "expected_value"] < scores.loc["steady", "expected_value"]
    assert scores.loc["stopped", "p_alive"] < scores.loc["steady", "p_alive"]


def test_rfm_summary_hand_computed() -> None:
    orders = orders_frame(
        [
            ("a", "2024-01-01 09:00", 10.0),
            ("a", "2024-01-01 18:00", 5.0),  # same day: one transaction of 15
            ("a", "2024-01-08 12:00", 30.0),
            ("a", "2024-01-15 10:00", 50.0),
            ("a", "2024-01-20 10:00", 99.0),  # refunded: ignored
            ("a", "2024-02-01 10:00", 70.0),  # after as_of: ignored
            ("b", "2024-01-22 23:00", 40.0),
        ],
        status=["paid", "paid", "paid", None, "refunded", "paid", "paid"],
    )
    summary = rfm_summary(orders, ts("2024-01-29"), time_unit="weeks").set_index("user_id")
    assert summary.loc["a", "frequency"] == 2
    assert summary.loc["a", "recency"] == pytest.approx(2.0)  # Jan 1 -> Jan 15
    assert summary.loc["a", "T"] == pytest.approx(4.0)  # Jan 1 -> Jan 29
    assert summary.loc["a", "monetary_value"] == pytest.approx(40.0)  # mean of 30 and 50; first day left out
    assert summary.loc["a", "first_day_spend"] == pytest.approx(15.0)
    assert summary.loc["b", "frequency"] == 0 and summary.loc["b", "recency"] == 0
    assert summary.loc["b", "T"] == pytest.approx(1.0)
    assert math.isnan(summary.loc["b", "monetary_value"])
    days = rfm_summary(orders, "2024-01-29 12:00", time_unit="days").set_index("user_id")
    assert days.loc["a", "T"] == pytest.approx(28.5)  # as_of may fall inside a day


def test_prospects_and_row_order() -> None:
    rng = np.random.default_rng(42)
    rows = []
    for i in range(40):
        first = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 60)))
        for k in range(int(rng.integers(1, 5))):
            rows.append(
                (
                    f"u{i:02d}",
                    str(first + pd.Timedelta(days=7 * k * int(rng.integers(1, 4)))),
                    float(rng.gamma(2, 20)),
                )
            )
    orders = orders_frame(rows)
    users = pd.DataFrame(
        {
            "user_id": pd.Series(["u00", "p1", "p2", "late"], dtype=object),
            "joined_at": pd.to_datetime(["2023-12-01", "2024-02-01", None, "2024-12-01"], utc=True),
        }
    )
    events = pd.DataFrame(
        {
            "user_id": pd.Series(["e1", "e2"], dtype=object),
            "occurred_at": pd.to_datetime(["2024-03-01", "2024-09-01"], utc=True),
            "event_type": pd.Series(["page_view", "page_view"], dtype=object),
        }
    )
    data = Dataset(orders=orders, events=events, users=users)
    as_of = ts("2024-06-30")
    scores = bgnbd_baseline(data, as_of, 90, time_unit="days")
    assert list(scores.columns) == BGNBD_COLUMNS
    # known at as_of: every buyer, users joined by then (or without a date), and users with earlier events
    expected_ids = sorted({f"u{i:02d}" for i in range(40)} | {"p1", "p2", "e1"})
    assert list(scores["user_id"]) == expected_ids
    prospects = scores.set_index("user_id").loc[["p1", "p2", "e1"]]
    assert (prospects["churn_prob"] == 1.0).all() and (prospects["expected_value"] == 0.0).all()
    assert prospects["p_alive"].isna().all()
    buyers = scores[~scores["user_id"].isin(["p1", "p2", "e1"])]
    assert buyers["churn_prob"].between(0, 1).all() and (buyers["expected_value"] >= 0).all()
    # explicit ids fix rows and order; an id never seen is a prospect
    picked = bgnbd_baseline(data, as_of, 90, time_unit="days", user_ids=pd.Series(["u05", "zz", "u01"]))
    assert list(picked["user_id"]) == ["u05", "zz", "u01"]
    assert picked["churn_prob"].iloc[1] == 1.0


def test_no_repeat_buyers_is_insufficient_data() -> None:
    orders = orders_frame([("a", "2024-01-01", 10.0), ("b", "2024-01-02", 5.0), ("c", "2024-03-01", 7.0)])
    with pytest.raises(InsufficientDataError, match="1 repeat buyer"):
        bgnbd_baseline(Dataset(orders=orders), ts("2024-02-01"), 90)


def test_without_gamma_gamma_every_buyer_gets_the_fallback_spend() -> None:
    # a single repeat buyer: BG/NBD fits, Gamma-Gamma does not (needs 2); spend = that buyer's repeat mean
    orders = orders_frame(
        [
            ("a", "2024-01-01", 10.0),
            ("a", "2024-01-10", 30.0),
            ("b", "2024-01-02", 5.0),
            ("c", "2024-01-05", 7.0),
        ]
    )
    fitted = fit_bgnbd_baseline(Dataset(orders=orders), ts("2024-02-01"), time_unit="days")
    assert fitted.gamma_gamma is None and fitted.fallback_spend == pytest.approx(30.0)
    scores = fitted.predict(30)
    np.testing.assert_allclose(scores["expected_spend"], 30.0)
    np.testing.assert_allclose(scores["expected_value"], 30.0 * scores["expected_purchases"])


def test_bad_horizon_and_missing_column_are_reported() -> None:
    orders = orders_frame([("a", "2024-01-01", 10.0), ("a", "2024-01-10", 30.0), ("b", "2024-01-02", 5.0)])
    fitted = fit_bgnbd_baseline(Dataset(orders=orders), ts("2024-02-01"))
    with pytest.raises(StrataError, match="horizon_days: value 0"):
        fitted.predict(0)
    with pytest.raises(StrataError, match="orders: missing column 'amount'"):
        rfm_summary(orders.drop(columns="amount"), ts("2024-02-01"))


# ----------------------------------------------------------------------------- rule


def test_rule_baseline_hand_computed() -> None:
    features = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d", "e"],
            "days_since_last_order": [10.0, 50.0, np.nan, 50.0, 5.0],
            "spend_90d": [100.0, np.nan, 30.0, -5.0, 0.0],
            "is_prospect": [0.0, 0.0, 1.0, 0.0, 0.0],
        }
    )
    out = rule_baseline(features)
    assert list(out.columns) == RULE_COLUMNS
    assert list(out["user_id"]) == ["a", "b", "c", "d", "e"]
    # ranks by days: e 1, a 2, b and d tie at 3.5, the prospect c last (5)
    np.testing.assert_allclose(out["churn_score"], [2 / 5, 3.5 / 5, 1.0, 3.5 / 5, 1 / 5])
    np.testing.assert_allclose(out["value_score"], [100.0, 0.0, 0.0, 0.0, 0.0])


def test_rule_baseline_other_value_window_and_errors() -> None:
    features = pd.DataFrame(
        {"user_id": ["a", "b"], "days_since_last_order": [1.0, 2.0], "spend_30d": [5.0, 7.0]}
    )
    np.testing.assert_allclose(rule_baseline(features, value_column="spend_30d")["value_score"], [5.0, 7.0])
    with pytest.raises(StrataError, match="missing column.*spend_90d"):
        rule_baseline(features)
    empty = rule_baseline(features.iloc[:0].assign(spend_90d=[]))
    assert list(empty.columns) == RULE_COLUMNS and len(empty) == 0
