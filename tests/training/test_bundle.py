"""The model bundle on the real feature pipeline: scores, contributions, persistence, reference
distributions, orders-only data and too little data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from training_fixtures import DEMO_END, demo_data, demo_fit, demo_training_data, fast_config

from features.config import config_from_dict
from features.dataset import Dataset
from features.errors import InsufficientDataError, ModelNotFoundError
from training.bundle import BundleFormatError, ModelBundle, bin_proportions
from training.models import UNKNOWN_LEVEL


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return demo_fit().bundle


@pytest.fixture(scope="module")
def scoring_features() -> pd.DataFrame:
    """Features of every demo user at the end of the data (the scoring situation)."""
    from features.pipeline import build_features

    return build_features(demo_data(), DEMO_END, fast_config())


def test_predict_gives_each_user_the_scores_of_their_kind(bundle: ModelBundle, scoring_features: pd.DataFrame) -> None:
    scores = bundle.predict(scoring_features)
    assert list(scores.columns) == ["user_id", "churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90"]
    assert list(scores["user_id"]) == list(scoring_features["user_id"])
    prospect = scoring_features["is_prospect"].to_numpy() == 1.0
    assert prospect.any() and (~prospect).any()
    assert scores.loc[prospect, "churn_risk"].isna().all()
    assert scores.loc[~prospect, "churn_risk"].between(0, 1).all()
    assert scores.loc[~prospect, "conversion_prob"].isna().all()
    assert bundle.conversion_model is not None
    assert scores.loc[prospect, "conversion_prob"].between(0, 1).all()
    v = scores[["predicted_value", "value_p10", "value_p90"]]
    assert v.notna().all().all() and (v >= 0).all().all()
    assert (scores["value_p10"] <= scores["value_p90"]).all()


def test_churn_contributions_sum_to_the_raw_score(bundle: ModelBundle, scoring_features: pd.DataFrame) -> None:
    buyers = scoring_features[scoring_features["is_prospect"] == 0.0]
    contrib = bundle.churn_contributions(buyers)
    assert list(contrib.columns) == [*bundle.feature_names, "bias"]
    assert contrib.index.equals(buyers.index)
    raw = bundle.raw_churn_score(buyers)
    np.testing.assert_allclose(contrib.sum(axis=1).to_numpy(), raw, atol=1e-8)
    # the calibrated risk is a non-decreasing function of the raw score
    risk = bundle.predict(buyers)["churn_risk"].to_numpy()
    order = np.argsort(raw)
    assert (np.diff(risk[order]) >= -1e-12).all()


def test_unseen_source_channel_scores_like_unknown(bundle: ModelBundle, scoring_features: pd.DataFrame) -> None:
    assert "source_channel" in bundle.categorical_levels
    assert UNKNOWN_LEVEL in bundle.categorical_levels["source_channel"]
    sample = scoring_features.head(200)
    unseen = sample.assign(source_channel="tiktok_live_2031")
    unknown = sample.assign(source_channel=UNKNOWN_LEVEL)
    pd.testing.assert_frame_equal(bundle.predict(unseen), bundle.predict(unknown))
    assert not bundle.predict(unseen).equals(bundle.predict(sample))  # the channel does matter somewhere


def test_save_and_load_round_trip(bundle: ModelBundle, scoring_features: pd.DataFrame, tmp_path: Path) -> None:
    d = bundle.save(tmp_path / "b")
    files = sorted(p.name for p in d.iterdir())
    assert "bundle.json" in files
    assert all(f == "bundle.json" or f.endswith(".lgb.txt") for f in files)  # no pickle
    state = json.loads((d / "bundle.json").read_text())
    assert state["feature_names"] == bundle.feature_names
    assert config_from_dict(state["config"]) == fast_config()  # the snapshot is a loadable config
    loaded = ModelBundle.load(d)
    pd.testing.assert_frame_equal(loaded.predict(scoring_features), bundle.predict(scoring_features))
    pd.testing.assert_frame_equal(
        loaded.churn_contributions(scoring_features.head(50)), bundle.churn_contributions(scoring_features.head(50))
    )
    assert loaded.horizon_days == 90 and loaded.trained_at == bundle.trained_at
    assert loaded.rfm_thresholds == bundle.rfm_thresholds and loaded.high_potential_value == bundle.high_potential_value
    assert loaded.data_fingerprint["data_hash"] == demo_training_data().fingerprint["data_hash"]


def test_load_errors(tmp_path: Path, bundle: ModelBundle) -> None:
    with pytest.raises(ModelNotFoundError, match="no model bundle"):
        ModelBundle.load(tmp_path)
    d = bundle.save(tmp_path / "b")
    state = json.loads((d / "bundle.json").read_text())
    state["format_version"] = 99
    (d / "bundle.json").write_text(json.dumps(state))
    with pytest.raises(BundleFormatError, match="format_version 99"):
        ModelBundle.load(d)


def test_bin_proportions_by_hand() -> None:
    props, missing = bin_proportions(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), [2.0, 3.0])
    assert props == [0.5, 0.25, 0.25]  # (-inf, 2], (2, 3], (3, inf)
    assert missing == pytest.approx(0.2)


def test_reference_distributions_describe_the_latest_cutoff(bundle: ModelBundle) -> None:
    data = demo_training_data()
    latest = data.training_set.loc[data.split.holdout | data.split.evaluation]
    ref = bundle.reference
    assert set(ref["features"]) == set(bundle.feature_names)
    assert {"churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90"} <= set(ref["scores"])
    for name in ("days_since_last_order", "spend_365d", "events_total"):
        r = ref["features"][name]
        assert r["edges"] == sorted(r["edges"]) and len(set(r["edges"])) == len(r["edges"])
        assert sum(r["proportions"]) == pytest.approx(1.0)
        props, missing = bin_proportions(latest[name].to_numpy(dtype=float), r["edges"])
        assert props == pytest.approx(r["proportions"]) and missing == pytest.approx(r["missing_share"])
    assert ref["features"]["days_since_last_order"]["missing_share"] == pytest.approx(
        latest["days_since_last_order"].isna().mean()
    )
    levels = ref["features"]["source_channel"]["levels"]
    assert sum(levels.values()) == pytest.approx(1.0)
    churn = ref["scores"]["churn_risk"]
    assert churn["missing_share"] == pytest.approx((latest["is_prospect"] == 1.0).mean())


def test_metrics_travel_with_the_bundle(bundle: ModelBundle) -> None:
    m = bundle.metrics
    assert 0.5 < m["churn_auc"] <= 1.0
    assert m["churn_n"] == demo_fit().eval_rows.query("is_prospect == 0").shape[0]
    assert np.isfinite(m["value_normalized_gini"])


def test_orders_only_data_trains_without_a_conversion_model(scoring_features: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    from training.train import fit_bundle, prepare_training_data

    orders_only = Dataset(orders=demo_data().orders)
    data = prepare_training_data(orders_only, fast_config(), as_of=DEMO_END)
    # without users/events tables a user is known from their first order: the only "prospects" are the few
    # whose orders were all refunded, far too few for a conversion model
    n_prospects = data.training_set.loc[data.training_set["is_prospect"] == 1.0, "user_id"].nunique()
    assert n_prospects < fast_config().training.min_users
    with caplog.at_level("INFO", logger="training.train"):
        fit = fit_bundle(data)
    assert fit.bundle.conversion_model is None
    assert any(re.match(r"conversion model skipped: \d+ prospect\(s\)", r.getMessage()) for r in caplog.records)
    assert fit.params["conversion_model"] == "skipped"
    from features.pipeline import build_features

    feats = build_features(orders_only, DEMO_END, fast_config())
    scores = fit.bundle.predict(feats)
    assert scores["conversion_prob"].isna().all()
    assert scores["churn_risk"].notna().to_numpy().tolist() == (feats["is_prospect"] == 0.0).tolist()


def test_real_cdnow_sample_trains(cdnow_sample_path: Path) -> None:
    """Real orders-only data: the 2,357-customer CDNOW sample (1997-01 .. 1998-06)."""
    from features.cdnow import cdnow_orders
    from training.train import fit_bundle, prepare_training_data

    ds = Dataset(orders=cdnow_orders(cdnow_sample_path))
    data = prepare_training_data(ds, fast_config(), as_of=None)
    assert data.end_source == "data_end"
    assert data.end == pd.Timestamp("1998-06-30", tz="UTC")
    fit = fit_bundle(data)
    assert fit.bundle.conversion_model is None
    assert fit.metrics["churn_auc"] > 0.6  # better than chance on real data


def test_too_few_users_is_an_insufficient_data_error() -> None:
    from features.demo_data import generate_dataset
    from training.train import prepare_training_data

    tiny = generate_dataset(n_users=60, end=DEMO_END, seed=3)
    with pytest.raises(InsufficientDataError, match=r"buyer\(s\) in the training cutoffs .* need at least 100 \(config training.min_users\)"):
        prepare_training_data(tiny, fast_config(), as_of=DEMO_END)


def test_too_few_positives_is_an_insufficient_data_error() -> None:
    from training.train import prepare_training_data

    with pytest.raises(InsufficientDataError, match=r"need at least 100000 of each \(config training.min_positives\)"):
        prepare_training_data(demo_data(), fast_config(min_positives=100000), as_of=DEMO_END)


def test_a_single_cutoff_is_an_insufficient_data_error() -> None:
    from training.train import prepare_training_data

    cfg = config_from_dict({"training": fast_config().training.model_dump(), "labels": {"n_cutoffs": 1}})
    with pytest.raises(InsufficientDataError, match=r"1 cutoff\(s\); need at least 2"):
        prepare_training_data(demo_data(), cfg, as_of=DEMO_END)


def test_as_of_after_the_data_is_refused() -> None:
    from features.errors import StrataError
    from training.train import prepare_training_data

    with pytest.raises(StrataError, match=r"--as-of 2025-03-31.* after the last order or event"):
        prepare_training_data(demo_data(), fast_config(), as_of="2025-03-31")


def test_layer_thresholds_are_frozen_from_the_training_population(bundle: ModelBundle) -> None:
    from features.rfm_segments import rfm_thresholds

    data = demo_training_data()
    latest = data.training_set.loc[data.split.holdout | data.split.evaluation]
    th = rfm_thresholds(latest, fast_config().layers.rfm)
    assert bundle.rfm_thresholds == {
        "recency_days": th.recency_days, "frequency_orders": th.frequency_orders,
        "monetary_spend": th.monetary_spend, "strict": True,
    }
    assert bundle.reference["layers_n"] == len(latest)
    assert sum(bundle.reference["layers"]["lifecycle"].values()) == pytest.approx(1.0)
    assert bundle.high_potential_value is not None and np.isfinite(bundle.high_potential_value)
