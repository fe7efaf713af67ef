"""The real server answers cache misses with the fast path, and a miss and a hit give the same body.

Fixtures (``trained_env``, ``server_factory``) are in conftest.py: a real model, store and ``strata serve``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

RunningServer = Any
TrainedEnv = Any


def _touch_store(env: TrainedEnv, user_ids: list[str]) -> None:
    """Rewrite the users' stored rows unchanged: a commit, so the server empties its answer cache."""
    from serving.online_store import OnlineStore

    store = OnlineStore(env.config.serving.online_store)
    try:
        store.write(store.get_features(user_ids), store.get_scores(user_ids))
    finally:
        store.close()


@pytest.fixture(scope="module")
def fresh_server(trained_env: TrainedEnv, server_factory: Any) -> Any:
    """A server of its own: its ``/metrics`` counters start at zero whatever other tests did to the shared one
    (on the session-wide server the scored-rows counter has been seen missing after the other API tests)."""
    server = server_factory(trained_env.config_path, trained_env.root)
    try:
        yield server
    finally:
        server.stop()


def test_cache_miss_and_hit_give_the_same_body(fresh_server: RunningServer, trained_env: TrainedEnv) -> None:
    batch = trained_env.batch_scores.set_index("user_id", drop=False)
    buyer = str(batch.index[batch["churn_risk"].notna()][3])
    prospect = str(batch.index[batch["churn_risk"].isna()][3])
    with fresh_server.client() as c:
        for ids in ([buyer], [prospect], [buyer, prospect, "no-such-user"]):
            _touch_store(trained_env, ids)
            miss = c.post("/predict", json={"user_ids": ids})
            hit = c.post("/predict", json={"user_ids": ids})
            assert miss.status_code == hit.status_code == 200, miss.text[:300]
            assert miss.content == hit.content
            results = miss.json()["results"]
            assert [r["user_id"] for r in results] == ids
            for r in results:
                if r["user_id"] in batch.index:
                    assert r["status"] == "ok"
                    for name in ("churn_risk", "conversion_prob", "predicted_value", "value_p90"):
                        expected = float(batch.loc[r["user_id"], name])
                        assert r[name] == (None if math.isnan(expected) else expected), name
                    assert r["refined_layer"] == batch.loc[r["user_id"], "refined_layer"]
                else:
                    assert r["status"] == "unknown_user"
    fast, batch_rows = _scored_rows(fresh_server)
    assert fast >= 4 and batch_rows == 0, (fast, batch_rows)


def _scored_rows(server: RunningServer) -> tuple[float, float]:
    """``strata_scored_rows_total`` of the fast and the batch path, from ``/metrics``."""
    import re

    text = httpx_get(server.url + "/metrics")
    counts = {"fast": 0.0, "batch": 0.0}
    for m in re.finditer(r'^strata_scored_rows_total\{[^}]*path="(\w+)"[^}]*\} ([0-9.e+]+)$', text, re.M):
        counts[m.group(1)] += float(m.group(2))
    return counts["fast"], counts["batch"]


def httpx_get(url: str) -> str:
    import httpx

    resp = httpx.get(url, timeout=30.0)
    assert resp.status_code == 200, resp.text[:300]
    return resp.text
