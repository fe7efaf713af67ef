"""A running ``strata serve`` across online store swaps: the next request answers from the new file
(new features, removed users), with no restart and no stale cached answer."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

RunningServer = Any
TrainedEnv = Any


def _predict(server: RunningServer, ids: list[str]) -> list[dict[str, Any]]:
    with server.client() as c:
        resp = c.post("/predict", json={"user_ids": ids})
        assert resp.status_code == 200, resp.text[:300]
        return list(resp.json()["results"])


def test_server_answers_from_the_swapped_store(trained_env: TrainedEnv, server_factory: Any, tmp_path: Any) -> None:
    from features.config import load_config
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer

    # A store and configuration of our own (the shared store must stay as the other tests expect it).
    store_path = tmp_path / "online.db"
    shutil.copyfile(trained_env.config.serving.online_store, store_path)
    text = trained_env.config_path.read_text(encoding="utf-8")
    config_path = tmp_path / "strata.toml"
    config_path.write_text(text.replace(str(trained_env.config.serving.online_store), str(store_path)),
                           encoding="utf-8")
    config = load_config(config_path)
    assert config.serving.online_store == str(store_path)
    store = OnlineStore(store_path)
    ids = store.sample_user_ids(10_000)
    features = store.get_features(ids)
    scores = store.get_scores(ids)
    buyers = scores[scores["churn_risk"].notna()].sort_values("churn_risk")
    buyer, donor = str(buyers["user_id"].iloc[0]), str(buyers["user_id"].iloc[-1])
    gone = str(scores["user_id"].iloc[-1])
    assert gone not in (buyer, donor)
    server = server_factory(config_path, tmp_path)
    try:
        before = {r["user_id"]: r for r in _predict(server, [buyer, gone])}
        assert before[buyer]["status"] == before[gone]["status"] == "ok"
        _predict(server, [buyer])  # now cached
        # The next run: the buyer (lowest churn risk) now looks like the riskiest buyer; one user is gone.
        changed = features[features["user_id"] != gone].copy().reset_index(drop=True)
        row = changed["user_id"] == buyer
        cols = [c for c in changed.columns if c not in ("user_id", "as_of")]
        changed.loc[row, cols] = changed.loc[changed["user_id"] == donor, cols].to_numpy()
        snap = store.snapshot("swap-test")
        snap.write(changed, scores[scores["user_id"] != gone])
        snap.publish()
        expected = Scorer.from_registry(config).score_features(changed[row].reset_index(drop=True))
        after = {r["user_id"]: r for r in _predict(server, [buyer, gone])}
        assert after[gone]["status"] == "unknown_user"
        assert after[buyer]["status"] == "ok"
        assert after[buyer]["churn_risk"] == float(expected["churn_risk"].iloc[0])
        assert after[buyer]["churn_risk"] != before[buyer]["churn_risk"]
    finally:
        server.stop()
