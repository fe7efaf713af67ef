"""Training sets: cutoffs, stacking, and refusing data too short for one label window."""

from __future__ import annotations

import pandas as pd
import pytest

from features.config import StrataConfig, config_from_dict
from features.dataset import Dataset
from features.errors import InsufficientDataError
from features.labels import build_labels
from features.pipeline import build_features
from features.training_set import build_training_set, training_cutoffs

END = pd.Timestamp("2024-12-31", tz="UTC")


def test_cutoffs_step_back_from_end_minus_horizon() -> None:
    cfg = config_from_dict({"labels": {"horizon_days": 90, "cutoff_step_days": 30, "n_cutoffs": 3}})
    got = training_cutoffs(END, cfg)
    assert got == [pd.Timestamp(d, tz="UTC") for d in ("2024-08-03", "2024-09-02", "2024-10-02")]
    assert all(c + pd.Timedelta(days=90) <= END for c in got)


def test_training_set_stacks_the_scoring_path(demo_dataset: Dataset) -> None:
    cfg = config_from_dict({"labels": {"horizon_days": 60, "cutoff_step_days": 45, "n_cutoffs": 3}})
    got = build_training_set(demo_dataset, cfg, END)
    cutoffs = training_cutoffs(END, cfg)
    assert sorted(got["cutoff"].unique()) == cutoffs
    assert (got["cutoff"] == got["as_of"]).all()
    assert not got.duplicated(["user_id", "cutoff"]).any()
    assert list(got.columns[-4:]) == ["label_churn", "label_value", "label_convert", "cutoff"]
    # each slice equals what scoring would compute at that cutoff, and the labels of build_labels
    last = got[got["cutoff"] == cutoffs[-1]].reset_index(drop=True)
    feats = build_features(demo_dataset, cutoffs[-1], cfg)
    pd.testing.assert_frame_equal(last[feats.columns], feats)
    labels = build_labels(demo_dataset, cutoffs[-1], 60)
    pd.testing.assert_frame_equal(last[labels.columns], labels)
    assert 0 < got["label_churn"].mean() < 1
    assert got.groupby("cutoff").size().is_monotonic_increasing  # the pool grows


def test_too_short_data_raises_with_dates() -> None:
    orders = pd.DataFrame({"user_id": ["a"], "order_id": ["1"], "ordered_at": [pd.Timestamp("2024-11-01", tz="UTC")],
                           "amount": [5.0]})
    with pytest.raises(InsufficientDataError, match=r"2024-11-01.*2024-12-31.*2024-10-02"):
        build_training_set(Dataset(orders=orders), StrataConfig(), END)


@pytest.mark.parametrize(("last", "advice"), [
    # the data itself is shorter than the horizon: a later end would be refused as after the data
    ("2024-11-01", "provide a history longer than 90 days; "),
    ("2024-12-30", "provide a history longer than 90 days, or a horizon shorter than 59 days (--horizon-days"),
])
def test_too_short_data_advises_what_can_work(last: str, advice: str) -> None:
    orders = pd.DataFrame({"user_id": ["a", "b"], "order_id": ["1", "2"],
                           "ordered_at": pd.to_datetime(["2024-11-01", last], utc=True), "amount": [5.0, 6.0]})
    end = pd.Timestamp(last, tz="UTC").ceil("D") + pd.Timedelta(days=1)
    with pytest.raises(InsufficientDataError) as err:
        build_training_set(Dataset(orders=orders), StrataConfig(), end)
    assert (str(err.value) + "; ").count(advice) == 1, str(err.value)
    assert "use an end after" not in str(err.value)


def test_a_later_end_is_advised_when_the_data_reaches_it() -> None:
    orders = pd.DataFrame({"user_id": ["a", "b"], "order_id": ["1", "2"],
                           "ordered_at": pd.to_datetime(["2024-06-01", "2024-12-30"], utc=True), "amount": [5.0, 6.0]})
    with pytest.raises(InsufficientDataError, match=r"use an end after 2024-08-30, or a shorter horizon"):
        build_training_set(Dataset(orders=orders), StrataConfig(), pd.Timestamp("2024-08-01", tz="UTC"))


def test_cutoffs_before_the_data_are_dropped() -> None:
    orders = pd.DataFrame({"user_id": ["a", "b"], "order_id": ["1", "2"],
                           "ordered_at": pd.to_datetime(["2024-08-15", "2024-11-20"], utc=True), "amount": [5.0, 6.0]})
    got = build_training_set(Dataset(orders=orders), StrataConfig(), END)
    assert sorted(got["cutoff"].unique()) == [pd.Timestamp(d, tz="UTC") for d in ("2024-09-02", "2024-10-02")]
    assert got.loc[got["user_id"] == "a", "label_churn"].tolist() == [1.0, 1.0]
