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


def test_starting_another_server_keeps_this_ones_metrics(
    fresh_server: RunningServer, trained_env: TrainedEnv, server_factory: Any
) -> None:
    """BentoML empties its Prometheus directory when a server starts: each server needs its own."""
    batch = trained_env.batch_scores
    user = str(batch["user_id"].iloc[5])
    _touch_store(trained_env, [user])  # a cache miss: something is scored
    with fresh_server.client() as c:
        assert c.post("/predict", json={"user_ids": [user]}).status_code == 200
    before = _scored_rows(fresh_server)
    assert sum(before) >= 1, before
    other = server_factory(trained_env.config_path, trained_env.root)
    other.stop()
    assert _scored_rows(fresh_server) == before


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


def test_fast_route_and_full_path_give_the_same_bytes(fresh_server: RunningServer, trained_env: TrainedEnv) -> None:
    """``{"user_ids": [...]}`` is answered before BentoML's routing; a body the fast parse declines (here an
    explicit ``"as_of": null``, which means the same) goes through the pydantic model and ``predict``."""
    import json

    batch = trained_env.batch_scores
    ids = [str(u) for u in batch["user_id"].iloc[10:14]] + ["no-such-user", str(batch["user_id"].iloc[10])]
    with fresh_server.client() as c:
        c.headers["Content-Type"] = "application/json"
        before = _request_count(fresh_server)
        fast = c.post("/predict", content=json.dumps({"user_ids": ids}))
        full = c.post("/predict", content=json.dumps({"user_ids": ids, "as_of": None}))
        assert fast.status_code == full.status_code == 200, fast.text[:300]
        assert fast.content == full.content
        assert fast.headers["content-type"] == "application/json"
        # The two really took different routes: BentoML's endpoint wrapper names itself in a header.
        assert full.headers.get("server", "").startswith("BentoML") and "server" not in fast.headers
        assert [r["user_id"] for r in fast.json()["results"]] == ids
        # Too many ids: declined by the fast parse, refused by the full path with its usual error.
        limit = trained_env.config.serving.max_user_ids
        many = c.post("/predict", content=json.dumps({"user_ids": [f"u{i}" for i in range(limit + 1)]}))
        assert many.status_code == 422 and many.json()["error"]["field"] == "user_ids"
    # BentoML's request metrics still count the requests the fast route answered.
    assert _request_count(fresh_server) >= before + 2


def _request_count(server: RunningServer) -> float:
    """BentoML's ``*_request_total`` for ``/predict`` with status 200, from ``/metrics``."""
    import re

    text = httpx_get(server.url + "/metrics")
    total = 0.0
    for m in re.finditer(r'^\w*request_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        if 'endpoint="/predict"' in m.group(1) and 'http_response_code="200"' in m.group(1):
            total += float(m.group(2))
    return total
