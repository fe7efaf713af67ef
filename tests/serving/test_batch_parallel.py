"""Batch scoring on two threads (``scoring.pipeline``): the same bytes as one chunk at a time, the model
pass of the next chunk really overlaps the current one, failures on either thread stop the run and it
resumes (with either setting) to exactly-once output."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from scoring_fixtures import SCORE_AS_OF, score_features_frame, small_bundle, small_config

import serving.batch as batch_module
from serving.batch import ahead, read_scores, run_batch
from serving.online_store import OnlineStore
from serving.scorer import Scorer

ARGS = {"as_of": SCORE_AS_OF.isoformat(), "inputs": "parallel-test"}


def _scorer(pipeline: bool, cls: type[Scorer] = Scorer) -> Scorer:
    return cls(small_bundle(), small_config(scoring={"pipeline": pipeline}), "strata", "3", "champion")


@pytest.fixture(scope="module")
def scorers() -> dict[bool, Scorer]:
    return {flag: _scorer(flag) for flag in (True, False)}


def _features() -> pd.DataFrame:
    return score_features_frame().copy()


def _output_bytes(out: Path) -> dict[str, Any]:
    """Every part file's bytes, and the summary but the run's duration and place."""
    summary = json.loads((out / "_manifest.json").read_text())
    del summary["summary"]["seconds"], summary["summary"]["out"]
    return {"parts": {p.name: p.read_bytes() for p in sorted(out.glob("part-*"))}, "manifest": summary}


# ----------------------------------------------------------------------------- ahead


def test_ahead_gives_every_result_in_order_with_or_without_a_pool() -> None:
    with ThreadPoolExecutor(1) as pool:
        assert list(ahead(pool, lambda i: i * i, [3, 1, 2])) == [(3, 9), (1, 1), (2, 4)]
        assert list(ahead(pool, lambda i: i, [])) == []
    assert list(ahead(None, lambda i: -i, range(3))) == [(0, 0), (1, -1), (2, -2)]


def test_ahead_runs_the_next_item_while_the_caller_holds_the_current_one() -> None:
    started = {i: threading.Event() for i in range(4)}
    running = 0
    most = 0
    lock = threading.Lock()

    def work(i: int) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        started[i].set()
        time.sleep(0.01)
        with lock:
            running -= 1
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="helper") as pool:
        for i, name in ahead(pool, work, range(4)):
            assert name.startswith("helper")
            if i < 3:
                # The caller has not asked for item i + 1 yet, but it is already being made.
                assert started[i + 1].wait(10), f"item {i + 1} did not start while item {i} was in hand"
    assert most == 1  # one item made at a time: with the one in hand, at most two exist


def test_ahead_keeps_depth_items_in_the_making() -> None:
    release = threading.Event()
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        release.wait(10)
        return i

    with ThreadPoolExecutor(3) as pool:
        items = ahead(pool, work, range(6), depth=2)
        time.sleep(0.05)
        assert started == []  # nothing before the first item is asked for
        release.set()
        assert next(items) == (0, 0)
        assert sorted(started) == [0, 1, 2]  # items 1 and 2 are being made while item 0 is in hand
        assert [i for i, _ in items] == [1, 2, 3, 4, 5]


def test_ahead_raises_the_error_of_the_item_it_belongs_to() -> None:
    def work(i: int) -> int:
        if i == 2:
            raise ValueError(f"bad item {i}")
        return i

    got = []
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="bad item 2"):
        for _, value in ahead(pool, work, range(5)):
            got.append(value)
    assert got == [0, 1]


# ----------------------------------------------------------------------------- run_batch


@pytest.mark.parametrize(
    ("budget", "fmt", "store"),
    [(None, "parquet", False), (None, "csv", True), (70.0, "parquet", True), (70.0, "csv", False)],
)
def test_pipelined_run_writes_the_same_bytes_as_one_chunk_at_a_time(
    tmp_path: Path, scorers: dict[bool, Scorer], budget: float | None, fmt: str, store: bool
) -> None:
    outputs = {}
    for pipeline, scorer in scorers.items():
        online = OnlineStore(tmp_path / f"online-{pipeline}.db") if store else None
        out = tmp_path / f"out-{pipeline}"
        summary = run_batch(scorer, _features, out, run_args=ARGS, budget=budget, fmt=fmt,  # type: ignore[arg-type]
                            chunk_users=300, online_store=online)
        assert summary.n_chunks == 7 and summary.n_users == 2000
        outputs[pipeline] = _output_bytes(out)
        if online is not None:
            ids = _features()["user_id"].tolist()
            outputs[pipeline]["store"] = (online.count(), online.get_features(ids), online.get_scores(ids))
    on, off = outputs[True], outputs[False]
    assert on["parts"].keys() == off["parts"].keys() and len(on["parts"]) == 7
    assert on["parts"] == off["parts"]
    assert on["manifest"] == off["manifest"]  # same run key and arguments: the knob is not part of them
    if store:
        assert on["store"][0] == off["store"][0] == 2000
        pd.testing.assert_frame_equal(on["store"][1], off["store"][1], check_exact=True)
        pd.testing.assert_frame_equal(on["store"][2], off["store"][2], check_exact=True)
    expected = scorers[False].score_features(_features(), budget=budget)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "out-True"), expected, check_exact=fmt == "parquet",
                                  rtol=1e-12)


class _Recording(Scorer):
    """Records on which thread each chunk's model pass and finishing ran; when ``wait_for_next``, the
    finishing of chunk k waits until the model pass of chunk k + 1 has started (only possible when that
    pass runs on another thread meanwhile)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.explained: dict[int, str] = {}
        self.finished: dict[int, str] = {}
        self.started = [threading.Event() for _ in range(4)]
        self.wait_for_next = False
        self.overlapped: list[bool] = []

    @staticmethod
    def _chunk(frame: pd.DataFrame) -> int:
        return int(str(frame["user_id"].iloc[0])[1:]) // 500  # user ids u0000000... in chunks of 500

    def explain(self, features: pd.DataFrame) -> Any:
        k = self._chunk(features)
        self.explained[k] = threading.current_thread().name
        self.started[k].set()
        return super().explain(features)

    def finish(self, scores: pd.DataFrame, *args: Any, **kw: Any) -> pd.DataFrame:
        k = self._chunk(scores)
        self.finished[k] = threading.current_thread().name
        if self.wait_for_next and k + 1 < len(self.started):
            self.overlapped.append(self.started[k + 1].wait(60))
        return super().finish(scores, *args, **kw)


@pytest.mark.parametrize("pipeline", [True, False])
def test_the_model_pass_runs_on_helper_threads_only_when_pipelined(
    tmp_path: Path, pipeline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _features()["user_id"].iloc[[0, 500, 1999]].tolist() == ["u0000000", "u0000500", "u0001999"]
    scorer = _scorer(pipeline, _Recording)
    assert isinstance(scorer, _Recording)
    scorer.wait_for_next = pipeline
    writes: dict[str, str] = {}
    original = batch_module._atomic_write_frame

    def recording_write(frame: pd.DataFrame, path: Path, fmt: Any) -> None:
        writes[path.name] = threading.current_thread().name
        original(frame, path, fmt)

    monkeypatch.setattr(batch_module, "_atomic_write_frame", recording_write)
    run_batch(scorer, _features, tmp_path / "out", run_args=ARGS, chunk_users=500)
    monkeypatch.undo()
    main = threading.current_thread().name
    assert sorted(scorer.explained) == sorted(scorer.finished) == [0, 1, 2, 3]
    assert set(scorer.finished.values()) == {main}  # post-processing stays on the calling thread
    assert sorted(writes) == [f"part-{k:05d}.parquet" for k in range(4)]
    if not pipeline:
        assert set(scorer.explained.values()) == set(writes.values()) == {main}
        return
    assert all(name.startswith("strata-batch_") for name in scorer.explained.values())
    assert all(name.startswith("strata-batch-writer") for name in writes.values())
    # Chunk k + 1's model pass had started while chunk k was being finished, for every k.
    assert scorer.overlapped == [True, True, True]
    pd.testing.assert_frame_equal(read_scores(tmp_path / "out"), scorer.score_features(_features()))


class _FailingExplain(Scorer):
    """The model pass of the third chunk fails (on the helper thread when pipelined)."""

    calls = 0

    def explain(self, features: pd.DataFrame) -> Any:
        type(self).calls += 1
        if type(self).calls == 3:
            raise RuntimeError("model pass failed")
        return super().explain(features)


@pytest.mark.parametrize(("first", "second"), [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("budget", [None, 60.0])
def test_a_failed_run_resumes_with_either_setting_to_exactly_once_output(
    tmp_path: Path, scorers: dict[bool, Scorer], first: bool, second: bool, budget: float | None
) -> None:
    _FailingExplain.calls = 0
    out = tmp_path / "out"
    store = tmp_path / "online.db"
    with pytest.raises(RuntimeError, match="model pass failed"):
        run_batch(_scorer(first, _FailingExplain), _features, out, run_args=ARGS, budget=budget, chunk_users=400,
                  online_store=OnlineStore(store))
    assert not out.exists() and len(list(tmp_path.glob("out.tmp-*"))) == 1  # same run key either setting
    summary = run_batch(scorers[second], _features, out, run_args=ARGS, budget=budget, chunk_users=400,
                        online_store=OnlineStore(store))
    if budget is None:
        assert summary.chunks_resumed == 2  # chunks 0 and 1 were finished before chunk 2's model pass failed
    got = read_scores(out)
    assert got["user_id"].is_unique and len(got) == 2000
    pd.testing.assert_frame_equal(got, scorers[False].score_features(_features(), budget=budget))
    assert OnlineStore(store).count() == 2000
    assert not list(tmp_path.glob("out.tmp-*"))


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_failed_work_file_write_records_no_chunk_and_the_rerun_scores_everyone_once(
    tmp_path: Path, scorers: dict[bool, Scorer], pipeline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work file is written on the writer thread while the first chunks are scored: if it fails, the
    run fails and leaves no chunk to resume (chunks are not resumable without the work file): the rerun
    resumes none and scores every user once."""
    import pyarrow.parquet as pq

    original = pq.ParquetWriter.write_table

    def failing(self: Any, table: Any, *args: Any, **kw: Any) -> None:  # the work file, in either setting
        if Path(str(self.where)).name == ".features.parquet.tmp":
            time.sleep(0.3)  # the first chunks are scored meanwhile
            raise OSError("disk full")
        original(self, table, *args, **kw)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        run_batch(scorers[pipeline], _features, out, run_args=ARGS, chunk_users=400)
    monkeypatch.undo()
    summary = run_batch(scorers[pipeline], _features, out, run_args=ARGS, chunk_users=400)
    assert summary.chunks_resumed == 0
    got = read_scores(out)
    assert got["user_id"].is_unique and len(got) == 2000
    pd.testing.assert_frame_equal(got, scorers[False].score_features(_features()))
