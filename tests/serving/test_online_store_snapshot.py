"""Online store snapshots: a new file swapped in whole, readers across the swap, crash safety of a build,
old schema versions, the ``scores_view`` and the compact score encoding."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_online_store import AS_OF, _features, _scores

from serving.online_store import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    SCORE_COLUMNS,
    OnlineStore,
    OnlineStoreError,
    _encode_scores,
    _FeatureLayout,
)
from serving.scorer import OUTPUT_COLUMNS


def test_store_columns_are_the_scorer_output_columns() -> None:
    assert list(SCORE_COLUMNS) == OUTPUT_COLUMNS


def test_snapshot_replaces_the_store_with_exactly_its_users(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    old = _features(300)
    OnlineStore(path).write(old, _scores(old, version="1"))
    reader = OnlineStore(path)
    assert reader.count() == 300
    new = _features(120, as_of=AS_OF + pd.Timedelta(days=1), seed=9)
    new["user_id"] = [f"n{i:05d}" for i in range(120)]
    snap = OnlineStore(path).snapshot("t1")
    for start in (80, 0, 40):  # chunks in any order: rows are kept in key order
        part = new.iloc[start : start + 40]
        snap.write(part, _scores(part, version="2"))
    assert reader.count() == 300  # nothing visible before publish
    snap.publish()
    assert not snap.build_path.exists()
    # The same reader object notices the new file and sees only the snapshot's users.
    assert reader.count() == 120
    assert reader.get_features(["u00001"]).empty
    ids = ["n00119", "n00000", "n00057"]
    pd.testing.assert_frame_equal(reader.get_features(ids), new.set_index("user_id").loc[ids].reset_index(),
                                  check_exact=True)
    expected = _scores(new, version="2").set_index("user_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(reader.get_scores(ids), expected, check_exact=True)
    assert reader.feature_timestamp() == AS_OF + pd.Timedelta(days=1)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # An in-place upsert on the published file works as before.
    later = new.head(3).assign(as_of=AS_OF + pd.Timedelta(days=2))
    OnlineStore(path).write(later, _scores(later, version="3"))
    assert reader.get_scores(["n00001"])["model_version"].iloc[0] == "3" and reader.count() == 120


def test_snapshot_of_another_feature_set_is_refused_mid_build(tmp_path: Path) -> None:
    snap = OnlineStore(tmp_path / "store.db").snapshot("t")
    f = _features(10)
    snap.write(f, _scores(f))
    with pytest.raises(OnlineStoreError, match="feature columns differ"):
        snap.write(f.drop(columns="tiny"), _scores(f))
    snap.discard()
    assert not snap.build_path.exists() and not (tmp_path / "store.db").exists()


def test_readers_see_whole_generations_across_repeated_swaps(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    base = _features(1500)
    OnlineStore(path).write(base, _scores(base))
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[str] = set()

    def writer() -> None:
        try:
            for k in range(5):
                f = _features(1500, as_of=AS_OF + pd.Timedelta(days=k + 1), seed=k)
                snap = OnlineStore(path).snapshot(f"g{k}")
                for start in range(0, 1500, 500):
                    part = f.iloc[start : start + 500]
                    snap.write(part, _scores(part, version=str(k + 2)))
                snap.publish()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            stop.set()

    def reader() -> None:
        store = OnlineStore(path)
        try:
            while not stop.is_set():
                got = store.get_features(["u00000", "u01499"])
                scores = store.get_scores(["u00000", "u01499"])
                assert len(got) == 2 and got["as_of"].nunique() == 1  # one generation per read
                assert len(scores) == 2
                seen.add(str(got["as_of"].iloc[0]))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(seen) >= 2  # the readers really read across swaps
    final = OnlineStore(path)
    assert final.get_scores(["u00000"])["model_version"].iloc[0] == "6" and final.count() == 1500
    assert not list(tmp_path.glob("store.db.build-*"))


CRASH = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[2])
    import pandas as pd
    from test_online_store import _features, _scores
    from serving.online_store import OnlineStore, _encode_scores, _FeatureLayout

    snap = OnlineStore(sys.argv[1]).snapshot("crash")
    f = _features(4000)
    first = f.iloc[:1000]
    snap.write(first, _scores(first))  # committed
    rest = f.iloc[1000:]
    conn = snap._connection()
    conn.execute("BEGIN")
    conn.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", _FeatureLayout.from_frame(rest).encode(rest))
    conn.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", _encode_scores(_scores(rest)))
    os._exit(0)  # dies mid-transaction, like kill -9: no commit, no rollback
    """
)


def test_a_build_killed_mid_write_resumes_from_its_last_commit(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    store = tmp_path / "store.db"
    tests_dir = str(Path(__file__).resolve().parent)
    done = subprocess.run([sys.executable, str(script), str(store), tests_dir], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    snap = OnlineStore(store).snapshot("crash")
    assert snap.resumed
    f = _features(4000)
    rest = f.iloc[1000:]
    snap.write(rest, _scores(rest))
    snap.publish()
    got = OnlineStore(store)
    assert got.count() == 4000
    conn = sqlite3.connect(store)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    ids = ["u00000", "u00999", "u01000", "u03999"]
    pd.testing.assert_frame_equal(got.get_features(ids), f.set_index("user_id").loc[ids].reset_index(),
                                  check_exact=True)


def _old_store(path: Path) -> None:
    """A schema-1 store as the previous version wrote it (WAL mode, typed score columns)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("CREATE TABLE scores (user_id TEXT PRIMARY KEY, churn_risk REAL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.close()


def test_an_old_store_is_refused_by_readers_and_replaced_by_a_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    _old_store(path)
    with pytest.raises(OnlineStoreError, match=rf"schema version 1 .* reads version {SCHEMA_VERSION}.*strata score"):
        OnlineStore(path).count()
    # An old reader still holding the WAL file open: replacing under it would hand it the new file.
    holder = sqlite3.connect(path)
    holder.execute("SELECT * FROM meta").fetchall()
    f = _features(50)
    snap = OnlineStore(path).snapshot("v2")
    snap.write(f, _scores(f))
    with pytest.raises(OnlineStoreError, match="cannot replace it"):
        snap.publish()
    holder.close()
    snap.publish()  # the build file was kept: publishing again works once the old reader is gone
    assert OnlineStore(path).count() == 50
    assert not Path(f"{path}-wal").exists()
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    snap = OnlineStore(tmp_path / "junk.db").snapshot("x")
    snap.write(f, _scores(f))
    with pytest.raises(OnlineStoreError, match="not an SQLite store"):
        snap.publish()
    with pytest.raises(OnlineStoreError, match="junk.db"):
        OnlineStore(tmp_path / "junk.db").count()


def test_scores_view_gives_typed_columns(tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "store.db")
    f = _features(40)
    s = _scores(f)
    store.write(f, s)
    conn = sqlite3.connect(tmp_path / "store.db")
    cols = [d[1] for d in conn.execute("PRAGMA table_info(scores_view)")]
    assert cols == OUTPUT_COLUMNS
    view = pd.read_sql_query("SELECT * FROM scores_view ORDER BY user_id", conn)
    conn.close()
    expected = s.sort_values("user_id").reset_index(drop=True)
    for c in ("churn_risk", "conversion_prob", "action_cost", "expected_incremental_value"):
        np.testing.assert_array_equal(view[c].to_numpy(dtype=float), expected[c].to_numpy(dtype=float))
    assert view["control"].tolist() == expected["control"].astype(int).tolist()
    assert view["action_id"].tolist() == expected["action_id"].tolist()
    assert view["reasons"].tolist() == expected["reasons"].tolist()
    assert (pd.to_datetime(view["as_of"], utc=True) == expected["as_of"]).all()


def test_awkward_score_values_round_trip_exactly(tmp_path: Path) -> None:
    f = _features(6)
    s = _scores(f)
    s["churn_risk"] = [np.inf, -np.inf, np.nan, 5e-324, -0.0, 1 / 3]
    s["predicted_value"] = [1e308, 1e-300, 0.1, 2.0**53 + 1, np.nan, 123456.789]
    s["action_name"] = ['quote " and \\ backslash', "中文 名", "tab\tnew\nline", None, "\x00nul", "é"]
    s["reasons"] = ['[{"x": 1}]', None, "[]", "[]", '["中文"]', "[]"]
    s["model_version"] = "12"
    store = OnlineStore(tmp_path / "store.db")
    store.write(f, s)
    got = store.get_scores(s["user_id"].tolist())
    pd.testing.assert_frame_equal(got, s, check_exact=True)
    assert np.signbit(got["churn_risk"].iloc[4])  # -0.0 keeps its sign
    # Every score text is valid JSON for SQLite too.
    conn = sqlite3.connect(tmp_path / "store.db")
    assert conn.execute("SELECT COUNT(*) FROM scores WHERE json_valid(score)").fetchone()[0] == 6
    assert conn.execute("SELECT churn_risk FROM scores_view WHERE user_id = 'u00000'").fetchone()[0] == np.inf
    conn.close()


def test_score_rows_without_optional_columns_and_unsorted_ids() -> None:
    f = _features(5).iloc[::-1].reset_index(drop=True)
    rows = _encode_scores(_scores(f)[["user_id", "as_of", "churn_risk"]])
    assert [r[0] for r in rows] == sorted(f["user_id"])
    fields = json.loads(rows[0][1])
    assert fields[1] is None and fields[-1] is False  # model_name missing -> null, control missing -> false
    encoded = _FeatureLayout.from_frame(f).encode(f)
    assert [r[0] for r in encoded] == sorted(f["user_id"])
    assert encoded[0][2] == f.iloc[-1][[c for c in f.columns if f[c].dtype == np.float64]].to_numpy(float).tobytes()


def _open_files_under(folder: Path) -> list[str]:
    """Targets of this process's open file descriptors inside ``folder`` (``(deleted)`` when unlinked)."""
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(folder)):
            out.append(target)
    return out


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc to list open files")
def test_idle_readers_let_go_of_a_replaced_store_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    base = _features(300)
    writer = OnlineStore(path)
    writer.write(base, _scores(base))
    writer.close()
    store = OnlineStore(path)  # shared by all threads, as in the API
    ready, release = threading.Barrier(5), threading.Event()

    def idle_reader() -> None:
        assert len(store.get_features(["u00001"])) == 1  # opens this thread's connection on the first file
        ready.wait()
        release.wait()  # then stays alive without another request

    threads = [threading.Thread(target=idle_reader) for _ in range(4)]
    for t in threads:
        t.start()
    ready.wait()
    try:
        assert sum(1 for f in _open_files_under(tmp_path) if f.endswith("store.db")) == 4
        new = _features(300, as_of=AS_OF + pd.Timedelta(days=1), seed=7)
        snap = store.snapshot("next")
        snap.write(new, _scores(new, version="2"))
        snap.publish()
        assert any(f.endswith("(deleted)") for f in _open_files_under(tmp_path))  # the idle readers hold it
        # one request on another thread: it reconnects to the new file and closes the idle connections
        assert store.get_scores(["u00001"])["model_version"].iloc[0] == "2"
        left = _open_files_under(tmp_path)
        assert not [f for f in left if f.endswith("(deleted)")], left
    finally:
        release.set()
        for t in threads:
            t.join(timeout=30)
    # the swept threads' next call reconnects (to the new file)
    assert store.get_features(["u00001"])["as_of"].iloc[0] == AS_OF + pd.Timedelta(days=1)
