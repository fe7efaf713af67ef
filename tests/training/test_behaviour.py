"""Behavioural tests of the fitted models (in the manner of Made-With-ML's ``tests/model``).

Counterfactual inputs are built from the raw data and passed through the real feature pipeline, so
they test what a user of the product would see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from training_fixtures import DEMO_END, demo_data, demo_fit, fast_config

from features.dataset import Dataset
from training.bundle import ModelBundle
from training.metrics import churn_metrics


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return demo_fit().bundle


def _features(ds: Dataset, as_of: pd.Timestamp) -> pd.DataFrame:
    from features.pipeline import build_features

    return build_features(ds, as_of, fast_config()).set_index("user_id", drop=False)


def test_a_user_who_stops_buying_gets_a_higher_churn_risk(bundle: ModelBundle) -> None:
    ds = demo_data()
    o = ds.orders
    recent = (o["ordered_at"] > DEMO_END - pd.Timedelta(days=60)) & (o["ordered_at"] <= DEMO_END)
    recent_buyers = o.loc[recent, "user_id"].unique()
    # the same users with the same engagement, but without their purchases of the last 60 days
    stopped = Dataset(orders=o[~(recent & o["user_id"].isin(recent_buyers))], events=ds.events, users=ds.users)
    before = _features(ds, DEMO_END).loc[recent_buyers]
    after = _features(stopped, DEMO_END).loc[recent_buyers]
    still_buyers = after["is_prospect"].to_numpy() == 0.0  # those with an older purchase
    assert still_buyers.sum() > 200
    r0 = bundle.predict(before[still_buyers].reset_index(drop=True))["churn_risk"].to_numpy()
    r1 = bundle.predict(after[still_buyers].reset_index(drop=True))["churn_risk"].to_numpy()
    # history changes (fewer orders change gap statistics too), so not every single user moves up,
    # but the large majority must, and clearly on average
    assert (r1 > r0).mean() >= 0.85
    assert (r1 - r0).mean() >= 0.05


def test_all_else_equal_a_longer_silence_never_lowers_churn_risk(bundle: ModelBundle) -> None:
    feats = _features(demo_data(), DEMO_END)
    buyers = feats[feats["is_prospect"] == 0.0].reset_index(drop=True)
    later = buyers.copy()
    for col in ("days_since_last_order", "days_since_last_interaction"):
        later[col] = later[col] + 45.0
    later["overdue_ratio"] = later["days_since_last_order"] / later["gap_mean_days"]
    r0 = bundle.predict(buyers)["churn_risk"].to_numpy()
    r1 = bundle.predict(later)["churn_risk"].to_numpy()
    assert (r1 >= r0 - 1e-12).all()
    assert (r1 > r0).mean() > 0.3  # and it does move


def test_doubling_all_past_spend_does_not_lower_predicted_value(bundle: ModelBundle) -> None:
    ds = demo_data()
    doubled_ds = Dataset(orders=ds.orders.assign(amount=ds.orders["amount"] * 2), events=ds.events, users=ds.users)
    base = _features(ds, DEMO_END).reset_index(drop=True)
    doubled = _features(doubled_ds, DEMO_END).reset_index(drop=True)
    v0 = bundle.predict(base)["predicted_value"].to_numpy()
    v1 = bundle.predict(doubled)["predicted_value"].to_numpy()
    assert v1.sum() > 1.3 * v0.sum()
    # every non-currency feature is scale-free (trend_spend_ratio included), so doubling moves only the
    # monetary features, in which the value model is monotone: no prediction may drop
    np.testing.assert_allclose(doubled["trend_spend_ratio"], base["trend_spend_ratio"], rtol=1e-9)
    assert (v1 >= v0 - 1e-9).all()


def _labels(ds: Dataset, users: pd.Series, as_of: pd.Timestamp, horizon_days: int) -> np.ndarray:
    """1.0 if no paid order in (as_of, as_of + H] (computed here, independently of features.labels)."""
    o = ds.orders
    paid = o if "status" not in o.columns else o[o["status"] == "paid"]
    window = paid[(paid["ordered_at"] > as_of) & (paid["ordered_at"] <= as_of + pd.Timedelta(days=horizon_days))]
    return (~users.isin(set(window["user_id"]))).to_numpy(dtype=float)


def test_calibration_holds_on_held_out_data(bundle: ModelBundle) -> None:
    from features.demo_data import generate_dataset

    # users the model never saw, from the same kind of shop
    fresh = generate_dataset(n_users=3000, end=DEMO_END, seed=99)
    as_of = DEMO_END - pd.Timedelta(days=bundle.horizon_days)
    feats = _features(fresh, as_of).reset_index(drop=True)
    churned = _labels(fresh, feats["user_id"], as_of, bundle.horizon_days)
    scores = bundle.predict(feats)
    buyer = feats["is_prospect"].to_numpy() == 0.0
    churn = churn_metrics(churned[buyer], scores["churn_risk"].to_numpy()[buyer])
    assert churn["ece"] < 0.05
    assert abs(churn["mean_pred"] - churn["positive_rate"]) < 0.04
    assert churn["auc"] > 0.85
    conv = churn_metrics(1.0 - churned[~buyer], scores["conversion_prob"].to_numpy()[~buyer])
    assert conv["ece"] < 0.03
    assert abs(conv["mean_pred"] - conv["positive_rate"]) < 0.02
    # and on the training run's own untouched evaluation half
    assert bundle.metrics["churn_ece"] < 0.06
