"""Batch scoring into the online store: the store is the run's snapshot, written from the chunks in
memory, continued on resume, and swapped in only when the run is complete."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scoring_fixtures import SCORE_AS_OF, score_features_frame, small_bundle, small_config
from test_batch import _FailingScorer

import serving.batch as batch_module
from serving.batch import read_scores, run_batch
from serving.online_store import OnlineStore
from serving.scorer import Scorer

ARGS = {"as_of": SCORE_AS_OF.isoformat(), "inputs": "store-test"}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(small_bundle(), small_config(), "strata", "3", "champion")


def _check_store(store: OnlineStore, features: pd.DataFrame, scores: pd.DataFrame) -> None:
    ids = features["user_id"].tolist()
    assert store.count() == len(ids)
    pd.testing.assert_frame_equal(store.get_features(ids), features.reset_index(drop=True), check_exact=True)
    pd.testing.assert_frame_equal(store.get_scores(ids), scores.reset_index(drop=True), check_exact=True)


@pytest.mark.parametrize("budget", [None, 90.0])
def test_store_holds_the_run_and_a_later_run_replaces_it(tmp_path: Path, scorer: Scorer, budget: float | None,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    features = score_features_frame().copy()
    reads: list[Path] = []
    original = batch_module.read_scores_part

    def counting(path: Path, fmt: batch_module.OutputFormat | None = None) -> pd.DataFrame:
        reads.append(path)
        return original(path, fmt)

    monkeypatch.setattr(batch_module, "read_scores_part", counting)
    store = OnlineStore(tmp_path / "online.db")
    run_batch(scorer, lambda: features.copy(), tmp_path / "out", run_args=ARGS, budget=budget, chunk_users=600,
              online_store=store)
    assert reads == []  # the store was written from the chunks in memory, not from the part files
    monkeypatch.undo()
    _check_store(store, features, read_scores(tmp_path / "out"))
    assert not list(tmp_path.glob("online.db.build-*"))
    # A later run of fewer users replaces the store: it holds that run's users only.
    subset = features.iloc[100:700].copy()
    run_batch(scorer, lambda: subset.copy(), tmp_path / "out2", run_args={**ARGS, "n": 600}, budget=budget,
              chunk_users=250, online_store=store)
    _check_store(store, subset, read_scores(tmp_path / "out2"))


def test_resumed_run_continues_the_store_build(tmp_path: Path, scorer: Scorer, monkeypatch: pytest.MonkeyPatch) -> None:
    features = score_features_frame().copy()
    path = tmp_path / "online.db"
    old = features.iloc[:10].copy()
    OnlineStore(path).write(old, scorer.score_features(old))  # the live store before the run
    failing = _FailingScorer(small_bundle(), small_config(), "strata", "3", "champion")
    _FailingScorer.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        run_batch(failing, lambda: features.copy(), tmp_path / "out", run_args=ARGS, chunk_users=400,
                  online_store=OnlineStore(path))
    # Two chunks are in the build file; the live store is untouched until the run completes.
    assert len([p for p in tmp_path.glob("online.db.build-*") if not p.name.endswith("-journal")]) == 1
    assert OnlineStore(path).count() == 10
    reads: list[Path] = []
    original = batch_module.read_scores_part
    monkeypatch.setattr(batch_module, "read_scores_part", lambda p, fmt=None: reads.append(p) or original(p, fmt))
    summary = run_batch(scorer, lambda: features.copy(), tmp_path / "out", run_args=ARGS, chunk_users=400,
                        online_store=OnlineStore(path))
    assert summary.chunks_resumed == 2 and reads == []  # the stored chunks were not written again
    _check_store(OnlineStore(path), features, read_scores(tmp_path / "out"))
    assert not list(tmp_path.glob("online.db.build-*"))


def test_resume_rewrites_chunks_missing_from_a_lost_build(tmp_path: Path, scorer: Scorer) -> None:
    features = score_features_frame().copy()
    path = tmp_path / "online.db"
    failing = _FailingScorer(small_bundle(), small_config(), "strata", "3", "champion")
    _FailingScorer.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        run_batch(failing, lambda: features.copy(), tmp_path / "out", run_args=ARGS, chunk_users=400,
                  online_store=OnlineStore(path))
    builds = list(tmp_path.glob("online.db.build-*"))
    assert builds
    for build in builds:
        build.unlink()  # the build file is lost: the finished chunks come back from their part files
    run_batch(scorer, lambda: features.copy(), tmp_path / "out", run_args=ARGS, chunk_users=400,
              online_store=OnlineStore(path))
    _check_store(OnlineStore(path), features, read_scores(tmp_path / "out"))
