"""The batch's cheaper paths give the same bytes: Arrow reason/intervention texts, the kept work frame,
and the compiled trees reading selected rows in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scoring_fixtures import score_features_frame, small_bundle, small_config

from serving.batch import _as_read_back, _scores_to_arrow, _to_arrow, _write_parquet
from serving.interventions import select_without_budget
from serving.reason_text import join_reasons, merge_texts
from serving.scorer import OUTPUT_COLUMNS, Scorer

TEXTS = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FFF), max_size=12)  # below surrogates


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(TEXTS, st.integers(0, 2)), max_size=40), st.sampled_from(["[]", "", "ü-fill"]))
def test_merge_texts_equals_take_on_the_concatenated_pieces(rows: list[tuple[str, int]], fill: str) -> None:
    # piece 0 and 1 own the rows so labelled, piece 2 means "no piece": those rows get ``fill``.
    n = len(rows)
    owner = np.array([o for _, o in rows], dtype=np.int64)
    pieces = []
    for k in (0, 1):
        at = np.flatnonzero(owner == k)
        pieces.append((at, pa.array([rows[i][0] for i in at], type=pa.string())))
    got = merge_texts(pieces, n, fill)
    expected = [t if o < 2 else fill for t, o in rows]
    assert got.type == pa.string()
    assert got.to_pylist() == expected


def test_merge_texts_refuses_pieces_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="one text per row"):
        merge_texts([(np.array([0, 1]), pa.array(["a"]))], 2, "[]")


def test_join_reasons_as_arrow_gives_the_same_texts() -> None:
    rng = np.random.default_rng(42)
    n, width = 50, 4
    feature = rng.integers(0, 3, (n, width))
    keep = rng.random((n, width)) < 0.7
    values = pa.array([f"{v:.3g}" for v in rng.normal(size=n * width)])
    contrib = pa.array([f"{v:.5g}" for v in rng.normal(size=n * width)])
    args = (feature, keep, ['{"f": "a", "v": ', '{"f": "é", "v": ', '{"f": "c", "v": '], values, contrib,
            ', "c": ', ', "d": "up"}', ', "d": "down"}')
    as_list = join_reasons(*args)
    as_arrow = join_reasons(*args, as_arrow=True)
    assert isinstance(as_arrow, pa.StringArray)
    assert as_arrow.to_pylist() == as_list


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(small_bundle(), small_config(), "strata", "3", "champion")


def _python_text(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.ArrowDtype):
            out[col] = out[col].to_numpy(dtype=object)
    return out


def test_arrow_text_scores_equal_python_text_scores(scorer: Scorer) -> None:
    features = score_features_frame()
    core_py = scorer.score_core(features)
    core_ar = scorer.score_core(features, arrow_text=True)
    assert isinstance(core_ar.scores["reasons"].dtype, pd.ArrowDtype)
    assert core_py.scores["reasons"].dtype == object
    # Buyers, prospects and (with a conversion model) no empty row: every piece of the merge is used.
    assert core_py.scores["churn_risk"].notna().any() and core_py.scores["conversion_prob"].notna().any()
    pd.testing.assert_frame_equal(_python_text(core_ar.scores), core_py.scores)
    pd.testing.assert_frame_equal(core_ar.candidates, core_py.candidates)
    selected = select_without_budget(core_py.candidates, scorer.config.interventions.max_actions_per_user)
    py = scorer.finish(core_py.scores, selected)
    ar = scorer.finish(core_ar.scores, selected, arrow_text=True)
    assert isinstance(ar["interventions"].dtype, pd.ArrowDtype)
    pd.testing.assert_frame_equal(_python_text(ar), py)
    # Rows scored alone (all buyers, all prospects) take the other branch of the merge.
    for mask in (features["is_prospect"] >= 0.5, features["is_prospect"] < 0.5):
        part = features[mask.to_numpy()].reset_index(drop=True)
        pd.testing.assert_frame_equal(
            _python_text(scorer.score_core(part, arrow_text=True).scores), scorer.score_core(part).scores
        )


def test_scores_to_arrow_writes_the_bytes_of_python_text(tmp_path: Path, scorer: Scorer) -> None:
    features = score_features_frame()
    core = scorer.score_core(features, arrow_text=True)
    selected = select_without_budget(core.candidates, scorer.config.interventions.max_actions_per_user)
    arrow_frame = scorer.finish(core.scores, selected, arrow_text=True)[OUTPUT_COLUMNS]
    python_frame = _python_text(arrow_frame)
    _write_parquet(_scores_to_arrow(arrow_frame), tmp_path / "arrow.parquet")
    _write_parquet(pa.Table.from_pandas(python_frame, preserve_index=False), tmp_path / "python.parquet")
    assert (tmp_path / "arrow.parquet").read_bytes() == (tmp_path / "python.parquet").read_bytes()
    assert _scores_to_arrow(arrow_frame).equals(_to_arrow(python_frame), check_metadata=True)


def test_scores_to_arrow_converts_text_with_nulls_as_python_objects() -> None:
    frame = pd.DataFrame({
        "a": pd.arrays.ArrowExtensionArray(pa.array(["x", None, "zé"], type=pa.string())),
        "b": pd.arrays.ArrowExtensionArray(pa.array(["u", "v", "w"], type=pa.string())),
        "c": [1.0, 2.0, np.nan],
    })
    plain = pd.DataFrame({"a": ["x", None, "zé"], "b": ["u", "v", "w"], "c": [1.0, 2.0, np.nan]})
    assert _scores_to_arrow(frame).equals(pa.Table.from_pandas(plain, preserve_index=False), check_metadata=True)


def _read_back(frame: pd.DataFrame) -> pd.DataFrame:
    return pa.Table.from_pandas(frame, preserve_index=False).to_pandas()


def test_work_frame_is_kept_only_when_it_reads_back_unchanged() -> None:
    features = score_features_frame()
    table = _to_arrow(features)
    kept = _as_read_back(features, table)
    assert kept is features
    pd.testing.assert_frame_equal(kept, _read_back(features))
    # Anything Arrow would give back otherwise is converted: categoricals, a shifted index, mixed objects.
    odd = features.copy()
    odd["source_channel_cat"] = pd.Categorical(["a", "b"] * (len(odd) // 2) + ["a"] * (len(odd) % 2))
    mixed = np.array(["1", "x"] * (len(odd) // 2) + ["1"] * (len(odd) % 2), dtype=object)
    mixed[0] = None  # strings and a missing value: Arrow gives the None back, not as it came
    odd["mixed"] = mixed
    shifted = features.set_axis(pd.RangeIndex(5, 5 + len(features)))
    for frame in (odd, shifted):
        got = _as_read_back(frame, _to_arrow(frame))
        assert got is not frame
        pd.testing.assert_frame_equal(got, _read_back(frame))


def test_classifier_scores_selected_rows_in_place() -> None:
    bundle = small_bundle()
    features = score_features_frame()
    X = bundle.numeric_model_matrix(features)
    assert isinstance(X, np.ndarray)
    model = bundle.churn_model
    rows = np.flatnonzero(features["is_prospect"].to_numpy() < 0.5)[::-1].copy()  # any order
    assert np.array_equal(model.raw_score(X, rows), model.raw_score(X[rows]))
    assert np.array_equal(model.predict_proba(X, rows), model.predict_proba(X[rows]))
    raw, contrib = model.raw_score_and_contributions(X, "path", rows)
    raw_c, contrib_c = model.raw_score_and_contributions(X[rows], "path")
    assert np.array_equal(raw, raw_c) and np.array_equal(contrib, contrib_c)
    # The LightGBM routes (pandas input, TreeSHAP) select the rows themselves.
    frame = bundle.model_matrix(features)
    raw_s, contrib_s = model.raw_score_and_contributions(frame, "shap", rows)
    raw_s2, contrib_s2 = model.raw_score_and_contributions(frame.iloc[rows], "shap")
    assert np.array_equal(raw_s, raw_s2) and np.array_equal(contrib_s, contrib_s2)
