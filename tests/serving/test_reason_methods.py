"""Reason methods on the real small bundle: path credits add up exactly, TreeSHAP stays available, and
the scorer's output differs between the two only in the ``reasons`` column."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scoring_fixtures import score_features_frame, small_bundle, small_config

from serving.reasons import reason_codes
from serving.scorer import OUTPUT_COLUMNS, Scorer
from training.models import CalibratedBoostedClassifier


@pytest.fixture(scope="module")
def real_rows() -> tuple[object, pd.DataFrame]:
    """The small trained bundle and its scoring features, plus rows with every numeric feature missing
    and an unseen channel."""
    bundle = small_bundle()
    features = score_features_frame()
    odd = features.head(20).copy()
    numeric = [f for f in bundle.feature_names if f not in bundle.categorical_levels]
    odd[numeric] = np.nan
    odd["source_channel"] = "never_seen_channel"
    odd["user_id"] = [f"odd{i}" for i in range(len(odd))]
    return bundle, pd.concat([features, odd], ignore_index=True)


@pytest.mark.parametrize("which", ["churn_model", "conversion_model"])
def test_real_models_add_up_to_their_raw_score(real_rows: tuple[object, pd.DataFrame], which: str) -> None:
    bundle, rows = real_rows
    model: CalibratedBoostedClassifier = getattr(bundle, which)
    X = bundle.model_matrix(rows)  # type: ignore[attr-defined]
    assert X.isna().any().any() and (X["source_channel"] == "unknown").any()
    raw, contrib = model.raw_score_and_contributions(X, "path")
    expected = model.raw_score(X)
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(contrib.sum(axis=1), expected, rtol=0, atol=1e-9)
    frame = model.contributions(X)
    assert list(frame.columns) == [*model.feature_names_in_, "bias"] and frame.index.equals(X.index)
    np.testing.assert_array_equal(frame.to_numpy(), contrib)
    # Probabilities from the one-pass raw score are the model's calibrated probabilities.
    np.testing.assert_allclose(model.proba_from_raw(raw), model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_shap_method_is_lightgbm_treeshap(real_rows: tuple[object, pd.DataFrame]) -> None:
    bundle, rows = real_rows
    model = bundle.churn_model  # type: ignore[attr-defined]
    X = bundle.model_matrix(rows.head(300))  # type: ignore[attr-defined]
    raw, contrib = model.raw_score_and_contributions(X, "shap")
    np.testing.assert_array_equal(contrib, model.booster_.predict(X, pred_contrib=True))
    np.testing.assert_array_equal(raw, model.raw_score(X))
    np.testing.assert_array_equal(model.contributions(X, "shap").to_numpy(), contrib)
    path = model.contributions(X, "path").to_numpy()
    np.testing.assert_allclose(path[:, -1], contrib[:, -1], atol=1e-9)  # same bias
    assert not np.allclose(path, contrib)  # but a different attribution
    with pytest.raises(ValueError, match="reason method"):
        model.raw_score_and_contributions(X, "saabas")  # type: ignore[arg-type]


def test_tables_are_cached_per_booster_and_not_saved(tmp_path: Path) -> None:
    model = small_bundle().churn_model
    tables = model.path_tables()
    assert model.path_tables() is tables
    state = model.to_state(tmp_path, "churn")
    assert "_path_tables_cache" not in state and not any("path" in k for k in state)
    again = CalibratedBoostedClassifier.from_state(state, tmp_path)
    rebuilt = again.path_tables()
    assert rebuilt is not tables
    np.testing.assert_array_equal(rebuilt.entry_value, tables.entry_value)
    # Pickling (Spark broadcasts the scorer) keeps working and a copy rebuilds its own tables.
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.path_tables().leaf_value, tables.leaf_value)


@pytest.fixture(scope="module")
def scored_both() -> dict[str, pd.DataFrame]:
    features = score_features_frame()
    out = {}
    for method in ("path", "shap"):
        scorer = Scorer(small_bundle(), small_config(scoring={"reason_method": method}), model_name="strata",
                        model_version="7")
        out[method] = scorer.score_features(features)
    return out


def test_default_method_is_path() -> None:
    assert small_config().scoring.reason_method == "path"


def test_scorer_output_differs_only_in_reasons(scored_both: dict[str, pd.DataFrame]) -> None:
    path, shap = scored_both["path"], scored_both["shap"]
    assert list(path.columns) == OUTPUT_COLUMNS
    others = [c for c in OUTPUT_COLUMNS if c != "reasons"]
    pd.testing.assert_frame_equal(path[others], shap[others], check_exact=True)
    differ = (path["reasons"] != shap["reasons"]).mean()
    assert 0.2 < differ <= 1.0  # different attributions, same scores


@pytest.mark.parametrize("method", ["path", "shap"])
def test_reasons_show_the_methods_contributions(scored_both: dict[str, pd.DataFrame], method: str) -> None:
    bundle = small_bundle()
    features = score_features_frame()
    buyers = features[features["is_prospect"] < 0.5]
    contrib = bundle.churn_contributions(buyers, method)
    expected = reason_codes(contrib, buyers, labels=Scorer(bundle, small_config(), "s", "1")._labels)
    got = scored_both[method].set_index("user_id").loc[buyers["user_id"], "reasons"].tolist()
    assert got == expected
    for pos in (0, 5, 50):
        for r in json.loads(got[pos]):
            assert r["contribution"] == pytest.approx(contrib.iloc[pos][r["feature"]], rel=1e-12)
