"""Estimators, data preparation and the time split, on small hand-built frames with known structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from features.errors import InsufficientDataError
from training.calibration import ScoreCalibrator
from training.metrics import expected_calibration_error
from training.models import (
    UNKNOWN_LEVEL,
    CalibratedBoostedClassifier,
    FeatureMismatchError,
    FutureValueModel,
    _choose_value_candidate,
    categorical_features,
    categorical_levels,
    check_binary_target,
    estimator_params,
    feature_columns,
    holdout_half,
    monetary_features,
    split_by_time,
    to_model_matrix,
    value_monotone_constraints,
)

FAST = {"num_boost_round": 60, "early_stopping_rounds": 10, "min_data_in_leaf": 10, "num_leaves": 7}
START = pd.Timestamp("2024-01-01", tz="UTC")
CHANNELS = ["ad", "content", "referral"]


def synthetic_training_set(n_users: int = 500, n_cutoffs: int = 5, step_days: int = 30, seed: int = 42) -> pd.DataFrame:
    """A stacked frame shaped like ``build_training_set`` output, with known signal.

    Churn probability rises with ``days_since_last_order`` (logistic); spend in the horizon scales
    with past ``spend_90d``; the ``referral`` channel churns less.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_cutoffs):
        cutoff = START + pd.Timedelta(days=step_days * k)
        days = rng.exponential(60.0, n_users)
        spend = rng.gamma(2.0, 50.0, n_users)
        channel = rng.choice(CHANNELS, n_users)
        logit = -1.5 + days / 40.0 - 0.8 * (channel == "referral")
        churn = (rng.random(n_users) < 1 / (1 + np.exp(-logit))).astype(float)
        value = np.where(churn == 1, 0.0, spend * rng.lognormal(0.0, 0.4, n_users))
        frames.append(
            pd.DataFrame(
                {
                    "user_id": [f"u{i:04d}" for i in range(n_users)],
                    "as_of": cutoff,
                    "days_since_last_order": days,
                    "orders_total": rng.poisson(3.0, n_users).astype(float),
                    "spend_90d": spend,
                    "avg_order_value": spend / 2,
                    "trend_spend_ratio": rng.lognormal(0, 0.3, n_users),
                    "source_channel": channel,
                    "is_prospect": 0.0,
                    "label_churn": churn,
                    "label_value": value,
                    "label_convert": np.nan,
                    "cutoff": cutoff,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_training_set()


@pytest.fixture(scope="module")
def prepared(frame: pd.DataFrame) -> dict:
    split = split_by_time(frame, horizon_days=60)
    names = feature_columns(frame)
    levels = categorical_levels(frame.loc[split.train], categorical_features(frame, names))
    X = to_model_matrix(frame, names, levels)
    return {"split": split, "names": names, "levels": levels, "X": X}


@pytest.fixture(scope="module")
def churn_model(frame: pd.DataFrame, prepared: dict) -> CalibratedBoostedClassifier:
    s, X = prepared["split"], prepared["X"]
    y = frame["label_churn"].to_numpy()
    return CalibratedBoostedClassifier(**FAST).fit(X[s.train], y[s.train], X_holdout=X[s.holdout], y_holdout=y[s.holdout])


# ----------------------------------------------------------------------------- features and split


def test_feature_columns_exclude_keys_and_labels(frame: pd.DataFrame) -> None:
    names = feature_columns(frame)
    assert names[0] == "days_since_last_order"
    assert not {"user_id", "as_of", "cutoff", "label_churn", "label_value", "label_convert"} & set(names)
    assert categorical_features(frame, names) == ["source_channel"]
    assert monetary_features(names) == ["spend_90d", "avg_order_value"]


def test_split_by_time_purges_cutoffs_whose_labels_overlap_validation(frame: pd.DataFrame) -> None:
    # 5 cutoffs 30 days apart, horizon 60: only cutoffs 0, 1, 2 end their label window by the latest (day 120)
    s = split_by_time(frame, horizon_days=60)
    cut = sorted(frame["cutoff"].unique())
    assert s.train_cutoffs == [pd.Timestamp(c) for c in cut[:3]]
    assert s.purged_cutoffs == [pd.Timestamp(cut[3])]
    assert s.latest_cutoff == pd.Timestamp(cut[4])
    latest = (frame["cutoff"] == cut[4]).to_numpy()
    assert not (s.holdout & s.evaluation).any()
    assert ((s.holdout | s.evaluation) == latest).all()
    assert not (s.train & latest).any()
    # roughly half each, and a user is always on the same side (stable hash, not row order)
    assert 0.4 < s.holdout.sum() / latest.sum() < 0.6
    ids = frame["user_id"].iloc[:50]
    forward = dict(zip(ids, holdout_half(ids), strict=True))
    backward = dict(zip(ids.iloc[::-1], holdout_half(ids.iloc[::-1]), strict=True))
    assert forward == backward


def test_split_needs_two_cutoffs(frame: pd.DataFrame) -> None:
    one = frame[frame["cutoff"] == frame["cutoff"].max()]
    with pytest.raises(InsufficientDataError, match=r"1 cutoff\(s\); need at least 2"):
        split_by_time(one, horizon_days=60)


def test_split_needs_a_cutoff_a_horizon_before_the_latest(frame: pd.DataFrame) -> None:
    with pytest.raises(InsufficientDataError, match=r"n_cutoffs to at least 6") as err:
        split_by_time(frame, horizon_days=150)
    assert "150 days" in str(err.value)


def test_check_binary_target_states_numbers() -> None:
    ok = check_binary_target("m", np.array([0, 1] * 20), np.array([0, 1] * 5), np.array([0, 1] * 5), 5)
    assert ok is None
    msg = check_binary_target("churn", np.array([1] * 30 + [0] * 3), np.array([0, 1] * 5), np.array([0, 1] * 5), 5)
    assert msg is not None and "30 positive(s) and 3 negative(s)" in msg and "min_positives" in msg


# ----------------------------------------------------------------------------- categorical levels


def test_unseen_and_missing_levels_map_to_unknown(prepared: dict, churn_model: CalibratedBoostedClassifier) -> None:
    names, levels = prepared["names"], prepared["levels"]
    assert levels["source_channel"] == sorted([*CHANNELS, UNKNOWN_LEVEL])
    row = pd.DataFrame(
        {
            "days_since_last_order": [30.0] * 4,
            "orders_total": [2.0] * 4,
            "spend_90d": [100.0] * 4,
            "avg_order_value": [50.0] * 4,
            "trend_spend_ratio": [1.0] * 4,
            "source_channel": ["tiktok_live", UNKNOWN_LEVEL, None, "referral"],
            "is_prospect": [0.0] * 4,
        }
    )
    X = to_model_matrix(row, names, levels)
    assert list(X["source_channel"].astype(str)) == [UNKNOWN_LEVEL, UNKNOWN_LEVEL, UNKNOWN_LEVEL, "referral"]
    assert X["source_channel"].isna().sum() == 0  # never LightGBM's silent "missing"
    p = churn_model.predict_proba(X)[:, 1]
    assert p[0] == p[1] == p[2]


def test_model_matrix_names_missing_column_and_bad_value(prepared: dict, frame: pd.DataFrame) -> None:
    names, levels = prepared["names"], prepared["levels"]
    with pytest.raises(FeatureMismatchError, match="spend_90d"):
        to_model_matrix(frame.drop(columns=["spend_90d"]), names, levels, source="scores.csv")
    bad = frame.head(3).copy()
    bad["orders_total"] = bad["orders_total"].astype(object)
    bad.loc[1, "orders_total"] = "three"
    with pytest.raises(FeatureMismatchError, match=r"column orders_total: row 1: value 'three'"):
        to_model_matrix(bad, names, levels)


# ----------------------------------------------------------------------------- classifier


def test_classifier_follows_sklearn_contract(prepared: dict, churn_model: CalibratedBoostedClassifier) -> None:
    fresh = CalibratedBoostedClassifier(learning_rate=0.1, seed=3)
    assert fresh.get_params()["learning_rate"] == 0.1
    assert clone(fresh).get_params() == fresh.get_params()
    with pytest.raises(NotFittedError):
        fresh.predict_proba(prepared["X"])
    assert churn_model.best_iteration_ >= 1
    assert churn_model.feature_names_in_ == prepared["names"]


def test_classifier_learns_the_signal_and_contributions_sum_to_raw_score(
    frame: pd.DataFrame, prepared: dict, churn_model: CalibratedBoostedClassifier
) -> None:
    from sklearn.metrics import roc_auc_score

    s, X = prepared["split"], prepared["X"]
    y = frame["label_churn"].to_numpy()
    p = churn_model.predict_proba(X[s.evaluation])[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(y[s.evaluation], p) > 0.7
    contrib = churn_model.contributions(X[s.evaluation])
    assert list(contrib.columns) == [*prepared["names"], "bias"]
    np.testing.assert_allclose(contrib.sum(axis=1), churn_model.raw_score(X[s.evaluation]), atol=1e-9)
    # the signal is in recency: it carries the largest mean absolute contribution
    assert contrib.drop(columns="bias").abs().mean().idxmax() == "days_since_last_order"


def test_classifier_rejects_a_matrix_with_other_columns(prepared: dict, churn_model: CalibratedBoostedClassifier) -> None:
    X = prepared["X"].drop(columns=["orders_total"])
    with pytest.raises(FeatureMismatchError, match="orders_total"):
        churn_model.predict_proba(X)


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibrator_fixes_a_miscalibrated_score_on_fresh_rows(method: str) -> None:
    rng = np.random.default_rng(42)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        true_logit = rng.normal(0, 1.5, n)
        y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
        return 3.0 * true_logit + 1.0, y  # an over-confident, shifted raw score

    s_fit, y_fit = draw(4000)
    s_new, y_new = draw(4000)
    raw_p = 1 / (1 + np.exp(-s_new))
    cal = ScoreCalibrator(method).fit(s_fit, y_fit)
    assert cal.method_ == method
    assert expected_calibration_error(y_new, raw_p) > 0.08
    assert expected_calibration_error(y_new, cal.predict(s_new)) < 0.03
    again = ScoreCalibrator.from_dict(cal.to_dict())
    np.testing.assert_allclose(again.predict(s_new), cal.predict(s_new))


def test_calibrator_auto_uses_platt_on_few_rows() -> None:
    s = np.linspace(-2, 2, 60)
    y = (np.arange(60) % 3 == 0).astype(float)
    assert ScoreCalibrator("auto").fit(s, y).method_ == "platt"
    with pytest.raises(ValueError, match="both classes"):
        ScoreCalibrator().fit(s, np.zeros(60))
    # ...and isotonic once each class has ISOTONIC_MIN_PER_CLASS held-out rows (the smaller class decides)
    from training.calibration import ISOTONIC_MIN_PER_CLASS as k

    for n_pos, expected in ((k, "isotonic"), (k - 1, "platt")):
        y = np.r_[np.ones(n_pos), np.zeros(3 * k)]
        s = np.linspace(-2, 2, len(y))
        assert ScoreCalibrator("auto").fit(s, y).method_ == expected, n_pos


def test_isotonic_calibrator_keeps_the_ranking_of_the_raw_score() -> None:
    # A step map would give whole blocks of users one risk (ties cost AUC); the centred map must not.
    rng = np.random.default_rng(42)
    s = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-s))).astype(float)
    cal = ScoreCalibrator("isotonic").fit(s, y)
    s_new = np.sort(rng.normal(0, 2, 2000))
    p = cal.predict(s_new)
    assert (np.diff(p) >= 0).all()
    # strictly increasing between the first and last knots, where the probability floor does not bind
    inside = (s_new > cal.x_thresholds_[0]) & (s_new < cal.x_thresholds_[-1]) & (p > 0.002) & (p < 0.998)
    assert inside.mean() > 0.8 and (np.diff(p[inside]) > 0).all()
    assert roc_auc_score(y, cal.predict(s)) == pytest.approx(roc_auc_score(y, s), abs=2e-3)


# ----------------------------------------------------------------------------- value


def test_value_candidate_choice() -> None:
    m = {
        "hurdle": {"normalized_gini": 0.80, "total_spend_error_pct": -30.0},
        "tweedie": {"normalized_gini": 0.70, "total_spend_error_pct": 1.0},
    }
    assert _choose_value_candidate(m) == "hurdle"  # Gini first
    m["tweedie"]["normalized_gini"] = 0.798  # within the tie margin: spend error decides
    assert _choose_value_candidate(m) == "tweedie"
    m["hurdle"]["normalized_gini"] = float("nan")
    assert _choose_value_candidate(m) == "tweedie"


def test_value_model_predicts_nonnegative_spend_with_ordered_band(frame: pd.DataFrame, prepared: dict) -> None:
    s, X, names = prepared["split"], prepared["X"], prepared["names"]
    y = frame["label_value"].to_numpy()
    model = FutureValueModel(monotone_constraints=value_monotone_constraints(names), **FAST).fit(
        X[s.train], y[s.train], X_holdout=X[s.holdout], y_holdout=y[s.holdout]
    )
    assert model.kind_ in ("hurdle", "tweedie")
    assert set(model.candidate_metrics_) == {"hurdle", "tweedie"}
    Xe = X[s.evaluation]
    pred = model.predict(Xe)
    lo, hi = model.predict_interval(Xe)
    assert (pred >= 0).all() and (lo >= 0).all() and (lo <= hi).all()
    # ranking is informative: the top predicted half spends more than the bottom half
    ye = y[s.evaluation]
    top = pred >= np.median(pred)
    assert ye[top].mean() > 1.5 * ye[~top].mean()
    # monotone in monetary features: doubling them never lowers the prediction
    doubled = Xe.copy()
    doubled[["spend_90d", "avg_order_value"]] *= 2
    assert (model.predict(doubled) >= pred - 1e-9).all()


def test_estimator_params_route_unknown_overrides_to_lightgbm() -> None:
    p = estimator_params(0.05, 31, 50, 600, 50, 42, {"learning_rate": 0.1, "lambda_l2": 1.0})
    assert p["learning_rate"] == 0.1 and p["extra_params"] == {"lambda_l2": 1.0}
    assert estimator_params(0.05, 31, 50, 600, 50, 42)["extra_params"] is None
