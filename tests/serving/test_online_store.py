"""Online store: exact round trip of features, upserts, score rows, concurrent readers under a writer."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serving.online_store import OnlineStore, OnlineStoreError
from serving.scorer import OUTPUT_COLUMNS

AS_OF = pd.Timestamp("2024-06-30", tz="UTC")


def _features(n: int, as_of: pd.Timestamp = AS_OF, seed: int = 42) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = pd.DataFrame({"user_id": [f"u{i:05d}" for i in range(n)], "as_of": as_of})
    f["as_of"] = f["as_of"].astype("datetime64[ns, UTC]")
    f["days_since_last_order"] = rng.exponential(50.0, n)
    f.loc[::3, "days_since_last_order"] = np.nan
    f["spend_total"] = rng.lognormal(3, 1, n)
    f["tiny"] = rng.normal(0, 1e-300, n)  # exact bits must survive
    f["source_channel"] = rng.choice(["ad", "referral", "门店二维码", "unknown"], n)
    f["is_prospect"] = (rng.random(n) < 0.3).astype(float)
    return f


def _scores(features: pd.DataFrame, version: str = "1") -> pd.DataFrame:
    n = len(features)
    s = pd.DataFrame({"user_id": features["user_id"], "as_of": features["as_of"]})
    s["model_name"] = "strata"
    s["model_version"] = version
    s["churn_risk"] = np.where(features["is_prospect"] > 0, np.nan, 0.25)
    s["conversion_prob"] = np.where(features["is_prospect"] > 0, 0.1, np.nan)
    for c in ("predicted_value", "value_p10", "value_p90"):
        s[c] = 10.0
    for c in ("lifecycle", "rfm_segment", "value_tier", "activity_tier", "refined_layer"):
        s[c] = "mature"
    s["reasons"] = "[]"
    s["action_id"] = [None if i % 2 else "vip_advisor" for i in range(n)]
    s["action_name"] = [None if i % 2 else "VIP" for i in range(n)]
    s["action_cost"] = [np.nan if i % 2 else 20.0 for i in range(n)]
    s["expected_incremental_value"] = [np.nan if i % 2 else 3.5 for i in range(n)]
    s["control"] = [i % 4 == 0 for i in range(n)]
    s["interventions"] = "[]"
    return s[OUTPUT_COLUMNS]


def test_features_round_trip_exactly(tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "store.db")
    f = _features(500)
    store.write(f, _scores(f))
    assert store.count() == 500
    ids = ["u00007", "missing", "u00003", "u00499", "u00007"]
    got = store.get_features(ids)
    expected = f.set_index("user_id").loc[["u00007", "u00003", "u00499"]].reset_index()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got.dtypes.equals(f.dtypes)
    assert store.feature_timestamp() == AS_OF


def test_scores_round_trip(tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "store.db")
    f = _features(20)
    s = _scores(f)
    store.write(f, s)
    got = store.get_scores(["u00004", "u00001", "nope"])
    expected = s.set_index("user_id").loc[["u00004", "u00001"]].reset_index()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_upsert_replaces_rows_and_new_layout_replaces_table(tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "store.db")
    f = _features(100)
    store.write(f, _scores(f))
    later = pd.Timestamp("2024-07-31", tz="UTC")
    f2 = _features(50, as_of=later, seed=7)
    store.write(f2, _scores(f2, version="2"))
    assert store.count() == 100
    pd.testing.assert_frame_equal(store.get_features(["u00010"]), f2[f2.user_id == "u00010"].reset_index(drop=True))
    pd.testing.assert_frame_equal(store.get_features(["u00070"]), f[f.user_id == "u00070"].reset_index(drop=True))
    assert store.get_scores(["u00010"])["model_version"].iloc[0] == "2"
    assert store.feature_timestamp() == later
    # A different feature set cannot be mixed with the stored one: it replaces it.
    f3 = f2.drop(columns="tiny")
    store.write(f3, _scores(f3))
    assert store.count() == 50
    assert list(store.get_features(["u00001"]).columns) == list(f3.columns)


def test_bad_writes_are_refused(tmp_path: Path) -> None:
    store = OnlineStore(tmp_path / "store.db")
    f = _features(5)
    with pytest.raises(OnlineStoreError, match="duplicate user_id"):
        store.write(pd.concat([f, f.head(1)]), _scores(f))
    bad = f.assign(orders_total=np.arange(5))  # int64 feature column
    with pytest.raises(OnlineStoreError, match="orders_total"):
        store.write(bad, _scores(f))
    assert store.count() == 0


def test_readers_see_consistent_rows_while_a_writer_upserts(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    base = _features(2000)
    OnlineStore(path).write(base, _scores(base))
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0]

    def writer() -> None:
        store = OnlineStore(path)
        try:
            for k in range(8):
                f = _features(2000, as_of=AS_OF + pd.Timedelta(days=k + 1), seed=k)
                store.write(f, _scores(f, version=str(k + 2)))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            stop.set()

    def reader() -> None:
        store = OnlineStore(path)
        try:
            while not stop.is_set():
                got = store.get_features(["u00000", "u01999"])
                assert len(got) == 2 and store.count() == 2000
                # both users of one read come from the same committed write
                assert got["as_of"].nunique() == 1
                reads[0] += 1
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert reads[0] > 0
    assert OnlineStore(path).get_scores(["u00000"])["model_version"].iloc[0] == "9"
