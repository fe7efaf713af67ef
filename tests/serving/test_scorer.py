"""The one scorer on a small real bundle: output contract, determinism, alone == batch, raw == features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scoring_fixtures import SCORE_AS_OF, demo_data, score_features_frame, small_bundle, small_config

from features.errors import StrataError
from features.rfm_segments import rfm_thresholds
from serving.scorer import OUTPUT_COLUMNS, Scorer, ScoringInputError


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(small_bundle(), small_config(), model_name="strata", model_version="7", model_alias="champion")


@pytest.fixture(scope="module")
def scored(scorer: Scorer) -> pd.DataFrame:
    return scorer.score_features(score_features_frame())


def test_output_contract(scored: pd.DataFrame) -> None:
    features = score_features_frame()
    assert list(scored.columns) == OUTPUT_COLUMNS
    assert scored["user_id"].tolist() == features["user_id"].tolist()
    assert (scored["model_name"] == "strata").all() and (scored["model_version"] == "7").all()
    assert str(scored["as_of"].dtype) == "datetime64[ns, UTC]" and (scored["as_of"] == SCORE_AS_OF).all()
    prospect = features["is_prospect"].to_numpy() >= 0.5
    assert scored.loc[prospect, "churn_risk"].isna().all() and scored.loc[~prospect, "churn_risk"].notna().all()
    assert scored.loc[~prospect, "conversion_prob"].isna().all() and scored.loc[prospect, "conversion_prob"].notna().all()
    for col in ("churn_risk", "conversion_prob"):
        v = scored[col].dropna()
        assert ((v >= 0) & (v <= 1)).all()
    assert (scored["value_p10"] <= scored["value_p90"]).all() and (scored["predicted_value"] >= 0).all()
    assert scored["control"].dtype == bool
    assert scored.loc[scored.action_id.isna(), "action_cost"].isna().all()
    assert (scored.loc[scored.action_id.notna(), "expected_incremental_value"] > 0).all()
    for text in scored["reasons"].head(50):
        for r in json.loads(text):
            assert set(r) >= {"feature", "label", "value", "contribution", "direction"}
    # Every layer of the refinement is reachable on this data and prospects are never at risk.
    assert {"at_risk", "hot_prospect", "potential", "mature"} <= set(scored["refined_layer"])
    assert not ((scored.refined_layer == "at_risk") & prospect).any()


def test_scores_are_deterministic(scorer: Scorer, scored: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(scorer.score_features(score_features_frame()), scored)


def test_one_user_alone_equals_the_batch(scorer: Scorer, scored: pd.DataFrame) -> None:
    features = score_features_frame()
    picks = []
    for layer in ("at_risk", "hot_prospect", "potential", "mature", "churned", "high_potential_new"):
        idx = np.flatnonzero(scored["refined_layer"].to_numpy() == layer)
        if len(idx):
            picks.append(int(idx[0]))
    picks.append(int(np.flatnonzero(scored["action_id"].notna().to_numpy())[0]))
    for i in picks:
        alone = scorer.score_features(features.iloc[[i]])
        pd.testing.assert_frame_equal(alone.reset_index(drop=True), scored.iloc[[i]].reset_index(drop=True))
    # A shuffled subset gives the same rows too (nothing depends on who else is scored).
    subset = features.sample(n=300, random_state=3)
    sub = scorer.score_features(subset).set_index("user_id")
    pd.testing.assert_frame_equal(sub, scored.set_index("user_id").loc[sub.index])


def test_rfm_thresholds_come_from_the_bundle_not_the_batch(scorer: Scorer, scored: pd.DataFrame) -> None:
    features = score_features_frame()
    batch_medians = rfm_thresholds(features, small_config().layers.rfm)
    frozen = small_bundle().rfm_thresholds
    assert scorer.rfm_thresholds.monetary_spend == frozen["monetary_spend"]
    # The batch medians differ from the frozen ones, so using them would change segments.
    assert batch_medians.monetary_spend != frozen["monetary_spend"]
    # ...and the scored segments are those of the frozen thresholds, not of the batch medians.
    from features.layers import assign_layers

    with_frozen = assign_layers(features, small_config(), thresholds=scorer.rfm_thresholds)["rfm_segment"]
    with_batch = assign_layers(features, small_config(), thresholds=batch_medians)["rfm_segment"]
    assert scored["rfm_segment"].tolist() == with_frozen.tolist()
    assert scored["rfm_segment"].tolist() != with_batch.tolist()


def test_raw_data_and_precomputed_features_give_identical_scores(scorer: Scorer, scored: pd.DataFrame) -> None:
    from_raw = scorer.score_raw(demo_data(), SCORE_AS_OF)
    pd.testing.assert_frame_equal(from_raw, scored)


def test_reason_contributions_add_up_to_the_raw_churn_score(scored: pd.DataFrame) -> None:
    bundle = small_bundle()
    features = score_features_frame()
    buyers = features[features["is_prospect"] < 0.5]
    contrib = bundle.churn_contributions(buyers)
    assert list(contrib.columns) == [*bundle.feature_names, "bias"]
    np.testing.assert_allclose(contrib.sum(axis=1).to_numpy(), bundle.raw_churn_score(buyers), atol=1e-9)
    # The reasons shown are exactly the largest contributions of each user.
    for pos in (0, 10, 100):
        user = buyers.iloc[pos]["user_id"]
        reasons = json.loads(scored.set_index("user_id").loc[user, "reasons"])
        row = contrib.iloc[pos].drop("bias")
        top_up = row[row > 0].sort_values(ascending=False).head(3)
        up = [r for r in reasons if r["direction"] == "up"]
        assert [r["feature"] for r in up] == list(top_up.index)
        for r in up:
            assert r["contribution"] == pytest.approx(row[r["feature"]], rel=1e-5)


def test_budget_is_respected_and_none_means_no_cross_user_step(scorer: Scorer, scored: pd.DataFrame) -> None:
    features = score_features_frame()
    budgeted = scorer.score_features(features, budget=50.0)
    treated = budgeted.action_id.notna() & ~budgeted.control
    assert budgeted.loc[treated, "action_cost"].sum() <= 50.0
    assert treated.sum() < (scored.action_id.notna() & ~scored.control).sum()
    # Everything but the action columns is unchanged by the budget.
    core = OUTPUT_COLUMNS[: OUTPUT_COLUMNS.index("action_id")]
    pd.testing.assert_frame_equal(budgeted[core], scored[core])
    # Control flags of a pair do not depend on the budget.
    both = budgeted.action_id.notna() & (budgeted.action_id == scored.action_id)
    assert (budgeted.loc[both, "control"] == scored.loc[both, "control"]).all()


def test_bundle_round_trip_gives_the_same_scores(tmp_path, scored: pd.DataFrame) -> None:  # noqa: ANN001
    from training.bundle import ModelBundle

    loaded = ModelBundle.load(small_bundle().save(tmp_path / "bundle"))
    again = Scorer(loaded, small_config(), "strata", "7", "champion").score_features(score_features_frame())
    pd.testing.assert_frame_equal(again, scored)


def test_input_errors_name_the_problem(scorer: Scorer) -> None:
    features = score_features_frame()
    with pytest.raises(ScoringInputError, match="duplicate user_id"):
        scorer.score_features(pd.concat([features.head(2), features.head(1)]))
    with pytest.raises(ScoringInputError, match="as_of"):
        scorer.score_features(features.drop(columns="as_of").head(3))
    with pytest.raises(StrataError, match="orders_total"):
        scorer.score_features(features.drop(columns="orders_total").head(3))


def test_quantile_rfm_needs_frozen_thresholds() -> None:
    import copy

    bundle = copy.copy(small_bundle())
    bundle.rfm_thresholds = {}
    with pytest.raises(StrataError, match="frozen RFM thresholds"):
        Scorer(bundle, small_config(), "strata", "1")
    # fixed mode needs nothing from the bundle
    Scorer(bundle, small_config(layers={"rfm": {"mode": "fixed"}}), "strata", "1")


def test_metadata(scorer: Scorer) -> None:
    meta = scorer.metadata()
    assert meta["model_name"] == "strata" and meta["model_version"] == "7" and meta["model_alias"] == "champion"
    assert meta["horizon_days"] == 90 and "days_since_last_order" in meta["features"]
    assert meta["trained_at"].startswith("2025-01-01")


def test_bundle_freezes_layer_thresholds_from_the_latest_cutoff(tmp_path) -> None:  # noqa: ANN001
    """freeze_layer_thresholds: buyer medians and the value quantile of new buyers, kept by save/load."""
    from scoring_fixtures import TRAIN_CUTOFFS

    from features.lifecycle import assign_lifecycle
    from features.pipeline import build_features
    from training.bundle import ModelBundle

    config = small_config()
    latest = build_features(demo_data(), TRAIN_CUTOFFS[-1], config)
    bundle = small_bundle()
    buyers = latest[latest["orders_total"] >= 1]
    assert bundle.rfm_thresholds == {
        "recency_days": buyers["days_since_last_order"].median(),
        "frequency_orders": buyers["orders_total"].median(),
        "monetary_spend": buyers["spend_total"].median(),
        "strict": True,
    }
    new = latest[(assign_lifecycle(latest, config.layers.lifecycle) == "new").to_numpy()]
    assert len(new) > 10
    values = bundle.predict(new)["predicted_value"].to_numpy()
    assert bundle.high_potential_value == pytest.approx(np.quantile(values, 0.8))
    assert (values >= bundle.high_potential_value).mean() == pytest.approx(0.2, abs=0.05)
    loaded = ModelBundle.load(bundle.save(tmp_path / "b"))
    assert loaded.rfm_thresholds == bundle.rfm_thresholds
    assert loaded.high_potential_value == bundle.high_potential_value
