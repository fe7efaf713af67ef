"""The small-n fast path (serving/fast_scorer.py) gives the batch scorer's answer, bytes for bytes.

Oracle: :meth:`serving.scorer.Scorer.score_features` on the same rows, turned into the API's JSON by
the same encoder. Compared for every user of a 2,000-user demo online store (scored one at a time and
all together), for a second bundle with the other value model and calibration (hurdle, isotonic), for
``/predict/features`` rows, and for the rule layers on rows built around the thresholds.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scoring_fixtures import (
    TRAIN_CUTOFFS,
    demo_data,
    labels_for,
    score_features_frame,
    small_bundle,
    small_config,
)

from serving.api_models import (
    encode_result,
    feature_frame,
    feature_rows,
    feature_schema_for,
    result_from_record,
)
from serving.api_models import results_from_scores as api_results
from serving.fast_scorer import FastPathUnsupported, FastScorer, FeatureRows, probe_rows
from serving.fast_scorer import mismatches as _answer_mismatches
from serving.online_store import OnlineStore
from serving.scorer import Scorer

UNSEEN = "tiktok_live"  # a source channel the model never saw in training


def mismatches(fast: FastScorer, rows: FeatureRows) -> list[str]:
    """:func:`serving.fast_scorer.mismatches` (different answers, users answered by one path only), plus a
    problem if the fast path did not answer exactly the rows asked for, in their order."""
    out = _answer_mismatches(fast, rows)
    answered = [r["user_id"] for r in fast.score_records(rows)]
    if answered != list(rows.user_ids):
        out.append(f"fast path answered {len(answered)} of {len(rows.user_ids)} rows (or another order)")
    return out


def _edge_features() -> pd.DataFrame:
    """The demo features with unseen and missing categorical levels and extra missing numbers."""
    f = score_features_frame().copy()
    rng = np.random.default_rng(42)
    n = len(f)
    f.loc[rng.random(n) < 0.05, "source_channel"] = UNSEEN
    f.loc[rng.random(n) < 0.03, "source_channel"] = None
    for col in ("gap_mean_days", "avg_order_value", "days_since_last_interaction", "trend_spend_ratio"):
        f.loc[rng.random(n) < 0.05, col] = np.nan
    return f


def _scorer(bundle: Any = None) -> Scorer:
    return Scorer(bundle or small_bundle(), small_config(), model_name="strata", model_version="3")


def _encoded_batch(scorer: Scorer, frame: pd.DataFrame) -> dict[str, bytes]:
    return {u: encode_result(r) for u, r in api_results(scorer.score_features(frame)).items()}


def _encoded_fast(fast: FastScorer, rows: FeatureRows) -> dict[str, bytes]:
    return {r["user_id"]: encode_result(result_from_record(r)) for r in fast.score_records(rows)}


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[OnlineStore, pd.DataFrame, pd.DataFrame]:
    """An online store written by batch scoring of the edge-case demo features; (store, features, scores)."""
    features = _edge_features()
    scores = _scorer().score_features(features)
    store = OnlineStore(tmp_path_factory.mktemp("fast_store") / "online.db")
    store.write(features, scores)
    return store, features, scores


def test_every_stored_user_gets_the_batch_answer(demo_store: tuple[OnlineStore, pd.DataFrame, pd.DataFrame]) -> None:
    store, features, scores = demo_store
    scorer = _scorer()
    fast = FastScorer(scorer)
    ids = features["user_id"].astype(str).tolist()
    batch = {u: encode_result(r) for u, r in api_results(scores).items()}

    together = _encoded_fast(fast, store.get_feature_rows(ids))
    assert together == batch
    alone: dict[str, bytes] = {}
    for u in ids:
        alone.update(_encoded_fast(fast, store.get_feature_rows([u])))
    assert alone == batch

    # The cases the comparison must cover are really there.
    assert scores["churn_risk"].isna().sum() > 100 and scores["conversion_prob"].notna().sum() > 100
    assert scores["control"].sum() > 10
    assert features["source_channel"].eq(UNSEEN).sum() > 50 and features["source_channel"].isna().sum() > 20
    assert features["gap_mean_days"].isna().sum() > 100
    assert set(scores["lifecycle"]) >= {"potential", "new", "growth", "mature", "churned"}
    assert scores["refined_layer"].nunique() >= 6
    assert scores["reasons"].str.contains('"tiktok_live"').any()  # unseen level shown raw, scored as unknown


def test_feature_rows_of_the_api_get_the_batch_answer(demo_store: tuple[OnlineStore, pd.DataFrame, pd.DataFrame]) -> None:
    _, features, _ = demo_store
    scorer = _scorer()
    fast = FastScorer(scorer)
    bundle = scorer.bundle
    schema = feature_schema_for(scorer.config, bundle.feature_names, list(bundle.categorical_levels))
    sample = features.sample(300, random_state=1)
    rows: list[dict[str, Any]] = []
    for rec in sample.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items() if k in schema.columns}
        row["as_of"] = pd.Timestamp(rec["as_of"]).isoformat()
        row["source_channel"] = row["source_channel"] or "unknown"  # the API takes a string for categoricals
        rows.append(row)
    expected = _encoded_batch(scorer, feature_frame(rows, schema))
    assert _encoded_fast(fast, feature_rows(rows, schema)) == expected
    for row in rows[:50]:
        assert _encoded_fast(fast, feature_rows([row], schema)) == {row["user_id"]: expected[row["user_id"]]}


@pytest.fixture(scope="module")
def hurdle_isotonic_bundle() -> Any:
    """The small bundle with an isotonic-calibrated churn model and a hurdle value model."""
    from features.pipeline import DuckDBEngine
    from training.models import CalibratedBoostedClassifier, FutureValueModel, to_model_matrix

    base = small_bundle()
    dataset, config = demo_data(), small_config()
    with DuckDBEngine(dataset) as engine:
        frames = []
        for cutoff in TRAIN_CUTOFFS:
            f = engine.features(cutoff, config)
            lab = labels_for(dataset, f, cutoff)
            frames.append(pd.concat([f.reset_index(drop=True), lab.drop(columns="user_id")], axis=1))
    stacked = pd.concat(frames, ignore_index=True)
    X = to_model_matrix(stacked, base.feature_names, base.categorical_levels)
    hold = pd.util.hash_array(stacked["user_id"].to_numpy(dtype=object)) % 3 == 0
    hyper = dict(num_boost_round=30, early_stopping_rounds=10, learning_rate=0.1, num_leaves=15, min_data_in_leaf=20)
    buyer = stacked["is_prospect"].to_numpy() < 0.5
    churn = CalibratedBoostedClassifier(calibration="isotonic", **hyper).fit(
        X[buyer & ~hold], stacked.loc[buyer & ~hold, "label_churn"].to_numpy(),
        X_holdout=X[buyer & hold], y_holdout=stacked.loc[buyer & hold, "label_churn"].to_numpy(),
    )
    value = FutureValueModel(candidates=("hurdle",), **hyper).fit(
        X[~hold], stacked.loc[~hold, "label_value"].to_numpy(),
        X_holdout=X[hold], y_holdout=stacked.loc[hold, "label_value"].to_numpy(),
    )
    bundle = copy.copy(base)  # shallow: shares the conversion model, replaces the two others
    bundle.churn_model, bundle.value_model = churn, value
    assert churn.calibrator_.method_ == "isotonic" and value.kind_ == "hurdle"
    return bundle


def test_other_value_model_and_calibration_get_the_batch_answer(hurdle_isotonic_bundle: Any) -> None:
    scorer = _scorer(hurdle_isotonic_bundle)
    features = _edge_features()
    fast = FastScorer(scorer)
    assert mismatches(fast, FeatureRows.from_frame(features)) == []
    for i in range(0, len(features), 13):
        assert mismatches(fast, FeatureRows.from_frame(features.iloc[[i]])) == []
    assert mismatches(fast, probe_rows(fast, n=200, seed=3)) == []


def test_rule_layers_and_refinement_at_the_thresholds() -> None:
    """Rows built from threshold values, their neighbours, 0, NaN: every layer and refined layer as batch."""
    from features.layers import assign_layers
    from serving.refinement import refine_layers

    scorer = _scorer()
    fast = FastScorer(scorer)
    cfg = scorer.config
    lc, th = cfg.layers.lifecycle, scorer.rfm_thresholds
    specials = {
        "orders_total": [0, 1, 2, 3, lc.growth_max_repeat_orders + 1, lc.growth_max_repeat_orders + 2,
                         th.frequency_orders, np.nan],
        "orders_365d": [0, 12, 12.17, 13, np.nan],
        "avg_order_value": [lc.mature_avg_order_value, lc.mature_avg_order_value - 0.01, 10, np.nan],
        "days_since_last_order": [lc.churn_min_days_since_order, lc.churn_min_days_since_order + 0.5,
                                  th.recency_days, 5, np.nan],
        "days_since_last_interaction": [lc.churn_no_interaction_days, lc.churn_no_interaction_days + 1,
                                        cfg.layers.activity.sleeping_days, 0, np.nan],
        "gap_mean_days": [30, 30.5, 0, np.nan],
        "trend_orders_ratio": [lc.declining_trend_ratio, 0.51, np.nan],
        "trend_spend_ratio": [lc.declining_trend_ratio, 2.0, np.nan],
        "spend_total": [th.monetary_spend, th.monetary_spend + 1, 0, np.nan],
        "spend_365d": [cfg.layers.value_tier.high_annual_spend, cfg.layers.value_tier.low_annual_spend,
                       cfg.layers.value_tier.high_annual_spend + 0.5, 0, np.nan],
        "active_days_30d": [cfg.layers.activity.core_active_days, cfg.layers.activity.core_active_days - 1, np.nan],
    }
    rng = np.random.default_rng(42)
    n = 4000
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)]})
    for col, values in specials.items():
        frame[col] = rng.choice(np.asarray(values, dtype=float), n)
    rows = FeatureRows(user_ids=frame["user_id"].tolist(), as_of=["2024-12-31T00:00:00+00:00"] * n,
                       numeric_names=list(specials), numeric=frame[list(specials)].to_numpy(), strings={})
    mine = fast.layers(rows)
    expected = assign_layers(frame, cfg, thresholds=th)
    for dim, values in mine.items():
        assert list(values) == expected[dim].tolist(), dim
    preds = {
        "churn_risk": rng.choice([0.6, 0.75, 0.59, 0.2, np.nan], n),
        "conversion_prob": rng.choice([0.3, 0.29, 0.9, np.nan], n),
        "predicted_value": rng.choice([scorer.high_value_threshold, scorer.high_value_threshold - 1e-9, 0.0, 1e6], n),
    }
    refined = fast.refine(mine["lifecycle"], preds)
    oracle = refine_layers(expected["lifecycle"], pd.Series(preds["churn_risk"]), pd.Series(preds["conversion_prob"]),
                           pd.Series(preds["predicted_value"]), cfg.refinement, scorer.high_value_threshold)
    assert list(refined) == oracle.tolist()
    assert len(set(refined)) >= 8


def test_batch_reason_method_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """When batch contributions are not what LightGBM gives on NumPy, the fast path calls the batch method."""
    from training.models import CalibratedBoostedClassifier

    original = CalibratedBoostedClassifier.raw_score_and_contributions

    def halved(self: Any, X: pd.DataFrame, method: Any = "path", rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        raw, contrib = original(self, X, method, rows)
        return raw, contrib * 0.5

    monkeypatch.setattr(CalibratedBoostedClassifier, "raw_score_and_contributions", halved)
    # The per-model route (LightGBM; the compiled default scores each row in one fused walk instead).
    scorer = Scorer(small_bundle(), small_config(scoring={"tree_engine": "lightgbm"}), model_name="strata",
                    model_version="3")
    fast = FastScorer(scorer)
    features = _edge_features().iloc[:300]
    assert mismatches(fast, FeatureRows.from_frame(features)) == []
    assert mismatches(fast, FeatureRows.from_frame(features.iloc[[7]])) == []
    assert set(fast._contrib_numpy.values()) == {False}


@pytest.mark.parametrize("engine", ["compiled", "lightgbm"])
@pytest.mark.parametrize("method", ["path", "shap"])
def test_both_reason_methods_get_the_batch_answer(method: str, engine: str) -> None:
    config = small_config(scoring={"reason_method": method, "tree_engine": engine})
    scorer = Scorer(small_bundle(), config, model_name="strata", model_version="3")
    fast = FastScorer(scorer)
    features = _edge_features().iloc[::4]
    assert mismatches(fast, FeatureRows.from_frame(features)) == []
    for i in range(0, len(features), 25):
        assert mismatches(fast, FeatureRows.from_frame(features.iloc[[i]])) == []
    if engine == "compiled" and method == "path":
        # One fused walk per row (ModelBundle.predict_matrix), no per-model route to choose.
        assert scorer.bundle.has_fused_trees() and fast._contrib_numpy == {}
    else:
        assert set(fast._contrib_numpy.values()) == {True}  # the NumPy route matched: no pandas per call


def test_rows_it_cannot_represent_are_left_to_the_batch_scorer() -> None:
    fast = FastScorer(_scorer())
    features = score_features_frame().iloc[:3]
    with pytest.raises(FastPathUnsupported):
        fast.score_records(FeatureRows.from_frame(features.drop(columns=["spend_365d"])))
    with pytest.raises(FastPathUnsupported):
        fast.score_records(FeatureRows.from_frame(features.drop(columns=["source_channel"])))
    with pytest.raises(FastPathUnsupported):
        fast.score_records(FeatureRows.from_frame(pd.concat([features, features.iloc[[0]]])))


def test_no_pandas_in_the_hot_path(demo_store: tuple[OnlineStore, pd.DataFrame, pd.DataFrame],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading stored rows and scoring them builds no pandas Series or DataFrame (that is the point)."""
    store, features, scores = demo_store
    fast = FastScorer(_scorer())
    ids = features["user_id"].astype(str).tolist()[:40]
    fast.score_records(store.get_feature_rows(ids))  # first call: probes the NumPy route (uses pandas)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pandas object built in the fast path")

    monkeypatch.setattr(pd.DataFrame, "__init__", refuse)
    monkeypatch.setattr(pd.Series, "__init__", refuse)
    answers = [fast.score_records(store.get_feature_rows([u]))[0] for u in ids]
    monkeypatch.undo()
    expected = api_results(scores[scores["user_id"].isin(ids)])
    assert {r["user_id"]: encode_result(result_from_record(r)) for r in answers} == {
        u: encode_result(expected[u]) for u in ids}


def test_store_rows_equal_the_stored_feature_table(demo_store: tuple[OnlineStore, pd.DataFrame, pd.DataFrame],
                                                   tmp_path: Path) -> None:
    store, features, _ = demo_store
    ids = ["nobody", *features["user_id"].astype(str).tolist()[:50]]
    rows = store.get_feature_rows(ids)
    frame = store.get_features(ids)
    assert rows.user_ids == frame["user_id"].tolist()
    pd.testing.assert_frame_equal(rows.to_frame()[frame.columns], frame, check_dtype=False)
    assert len(OnlineStore(tmp_path / "empty.db").get_feature_rows(["x"])) == 0
