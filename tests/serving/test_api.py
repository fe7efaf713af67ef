"""The online API against a real ``strata serve`` process: exact batch numbers, bad inputs, hot swaps.

Every test talks HTTP to a server subprocess on loopback (fixtures in ``conftest.py``): a real model
trained and promoted in a temporary MLflow store, a real online store filled by ``serving.batch``.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

# Fixture types (defined in conftest.py; not importable from a test module).
RunningServer = Any
TrainedEnv = Any

FLOAT_FIELDS = ["churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90", "action_cost",
                "expected_incremental_value"]
TEXT_FIELDS = ["lifecycle", "rfm_segment", "value_tier", "activity_tier", "refined_layer", "action_id",
               "action_name", "model_name", "model_version"]


def _nan_to_none(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def assert_same_as_batch(result: dict[str, Any], row: pd.Series) -> None:
    """Every output column of the API equals the batch output, floats bit for bit."""
    assert result["status"] == "ok"
    for name in FLOAT_FIELDS:
        expected = _nan_to_none(row[name])
        got = result[name]
        assert (expected is None) == (got is None), (name, expected, got)
        if expected is not None:
            assert float(got) == float(expected), (name, expected, got)
    for name in TEXT_FIELDS:
        assert result[name] == _nan_to_none(row[name]), (name, row[name], result[name])
    assert result["control"] == bool(row["control"])
    assert json.loads(row["reasons"]) == result["reasons"]
    assert json.loads(row["interventions"]) == result["interventions"]
    assert pd.Timestamp(result["as_of"]) == pd.Timestamp(row["as_of"])


def feature_rows(features: pd.DataFrame) -> list[dict[str, Any]]:
    """A feature table as JSON-ready rows: floats exact (Python's repr round-trips), NaN as null."""
    rows = []
    for rec in features.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()}
        row["as_of"] = pd.Timestamp(rec["as_of"]).isoformat()
        rows.append(row)
    return rows


def assert_error_shape(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """A structured error: the status, one JSON shape, the field named, no internals leaked."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    err = body["error"]
    assert set(err) == {"code", "field", "message", "details"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["details"] and all(set(d) == {"field", "message"} for d in err["details"])
    if field is not None:
        fields = [err["field"], *(d["field"] for d in err["details"])]
        assert any(f is not None and f.startswith(field) for f in fields), (field, err)
    for leak in ("Traceback", "File \"", "/work/", "/tmp/", "site-packages", ".py\""):
        assert leak not in resp.text, (leak, resp.text[:500])
    return err


# ----------------------------------------------------------------------------- health and metadata


def test_probes_need_no_key_and_ready_after_load(api_server: RunningServer) -> None:
    with httpx.Client(base_url=api_server.url, timeout=10) as bare:
        assert bare.get("/livez").status_code == 200
        assert bare.get("/readyz").status_code == 200
        assert bare.get("/metrics").status_code == 200
        assert_error_shape(bare.get("/metadata"), 401, "X-API-Key")


def test_metadata_names_the_served_version(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    with api_server.client() as c:
        meta = c.get("/metadata").json()
    assert meta["model_name"] == trained_env.config.training.model_name
    assert meta["model_version"] == trained_env.model_version
    assert meta["model_alias"] == "champion"
    assert meta["online_store_users"] == len(trained_env.batch_scores)
    assert pd.Timestamp(meta["online_store_as_of"]) == trained_env.as_of
    assert "days_since_last_order" in meta["features"]
    assert meta["horizon_days"] == trained_env.config.labels.horizon_days


# ----------------------------------------------------------------------------- same numbers as batch


def test_predict_returns_exactly_the_batch_output(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    batch = trained_env.batch_scores.set_index("user_id", drop=False)
    rng = np.random.default_rng(42)
    ids = list(rng.choice(batch.index.to_numpy(), size=60, replace=False))
    with api_server.client() as c:
        together = c.post("/predict", json={"user_ids": ids}).json()["results"]
        alone = [c.post("/predict", json={"user_ids": [u]}).json()["results"][0] for u in ids[:10]]
    assert [r["user_id"] for r in together] == ids
    for r in together:
        assert_same_as_batch(r, batch.loc[r["user_id"]])
    for r in alone:
        assert_same_as_batch(r, batch.loc[r["user_id"]])


def test_predict_features_returns_exactly_the_batch_output(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    from serving.online_store import OnlineStore

    batch = trained_env.batch_scores.set_index("user_id", drop=False)
    ids = list(batch.index[:25])
    rows = feature_rows(OnlineStore(trained_env.config.serving.online_store).get_features(ids))
    with api_server.client() as c:
        resp = c.post("/predict/features", json={"rows": rows})
    assert resp.status_code == 200, resp.text[:500]
    results = resp.json()["results"]
    assert [r["user_id"] for r in results] == ids
    for r in results:
        assert_same_as_batch(r, batch.loc[r["user_id"]])


def _user_rows(env: TrainedEnv, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The user's raw rows at or before as_of, as JSON-ready dicts (timestamps ISO 8601)."""
    ds = env.dataset

    def rows(frame: pd.DataFrame | None, ts_col: str | None) -> list[dict[str, Any]]:
        if frame is None:
            return []
        part = frame[frame["user_id"] == user_id]
        if ts_col is not None:
            part = part[part[ts_col].isna() | (part[ts_col] <= env.as_of)]
        out = json.loads(part.to_json(orient="records", date_format="iso", date_unit="ns"))
        return [{k: v for k, v in r.items() if v is not None} for r in out]

    return {"orders": rows(ds.orders, "ordered_at"), "events": rows(ds.events, "occurred_at"),
            "users": rows(ds.users, None)}


def test_raw_rows_give_the_batch_answer_for_the_same_cutoff(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    batch = trained_env.batch_scores.set_index("user_id", drop=False)
    buyers = trained_env.dataset.orders["user_id"].value_counts()
    user = str(buyers.index[buyers.to_numpy() >= 3][0])
    prospect = str(batch.index[batch["churn_risk"].isna()][0])
    with api_server.client() as c:
        for uid in (user, prospect):
            raw = _user_rows(trained_env, uid)
            resp = c.post("/predict", json={"user_ids": [uid], "as_of": trained_env.as_of.isoformat(), **raw})
            assert resp.status_code == 200, resp.text[:500]
            assert_same_as_batch(resp.json()["results"][0], batch.loc[uid])
        # Sending only the user's first order changes the answer: the rows sent are what is scored.
        raw = _user_rows(trained_env, user)
        raw["orders"] = sorted(raw["orders"], key=lambda r: r["ordered_at"])[:1]
        fewer = c.post("/predict", json={"user_ids": [user], "as_of": trained_env.as_of.isoformat(), **raw}).json()
    changed = fewer["results"][0]
    assert (changed["predicted_value"], changed["churn_risk"]) != (
        batch.loc[user, "predicted_value"], batch.loc[user, "churn_risk"])


def test_unknown_users_get_a_status_not_an_error(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    known = str(trained_env.batch_scores["user_id"].iloc[0])
    with api_server.client() as c:
        resp = c.post("/predict", json={"user_ids": ["no-such-user", known, "no-such-user", "日本語-ユーザー"]})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["user_id"] for r in results] == ["no-such-user", known, "no-such-user", "日本語-ユーザー"]
    assert [r["status"] for r in results] == ["unknown_user", "ok", "unknown_user", "unknown_user"]
    assert results[0]["churn_risk"] is None and results[0]["model_version"] is None


# ----------------------------------------------------------------------------- bad inputs

TOO_MANY_IDS = [f"u{i}" for i in range(10_000)]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param(b'{"user_ids": [NaN]}', 422, "user_ids[0]", id="nan-id"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "orders": [{"user_id": "a", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": Infinity}]}', 422, "orders[0].amount", id="inf-amount"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "orders": [{"user_id": "a", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": 1e999}]}', 422, "orders[0].amount", id="huge-amount"),
        pytest.param(b'{"user_ids": null}', 422, "user_ids", id="null-ids"),
        pytest.param(b'{"user_ids": [null]}', 422, "user_ids[0]", id="null-id"),
        pytest.param(b'{"user_ids": "u1"}', 422, "user_ids", id="string-not-list"),
        pytest.param(b'{"user_ids": [123]}', 422, "user_ids[0]", id="number-id"),
        pytest.param(b'{"user_ids": []}', 422, "user_ids", id="empty-list"),
        pytest.param(b'{"user_ids": [""]}', 422, "user_ids[0]", id="empty-id"),
        pytest.param(b"{}", 422, "user_ids", id="missing-field"),
        pytest.param(b'{"user_ids": ["a"], "user": "b"}', 422, "user", id="extra-field"),
        pytest.param(b"[1, 2, 3]", 422, None, id="array-body"),
        pytest.param(b'{"user_ids": ["a"]', 400, "body", id="truncated-json"),
        pytest.param(b"\xff\xfe garbage", 400, "body", id="not-utf8"),
        pytest.param(json.dumps({"user_ids": TOO_MANY_IDS}).encode(), 422, "user_ids", id="10000-ids"),
        pytest.param(b'{"user_ids": ["a"], "orders": [{"user_id": "a", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": 5}]}', 422, "as_of", id="rows-without-as-of"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "orders": [{"user_id": "b", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": 5}]}', 422, "orders[0].user_id", id="row-of-other-user"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "orders": [{"user_id": "a", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": -5}]}', 422, "orders[0].amount", id="negative-amount"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "events": [{"user_id": "a", '
                     b'"occurred_at": "2024-01-01", "event_type": "teleport"}]}', 422, "events[0].event_type",
                     id="unknown-event-type"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "0001-01-01"}', 422, "as_of", id="year-1"),
        pytest.param(b'{"user_ids": ["a"], "as_of": 1700000000}', 422, "as_of", id="epoch-number"),
        pytest.param(b'{"user_ids": ["a"], "as_of": "2024-01-01", "orders": [{"user_id": "a", "order_id": "1", '
                     b'"ordered_at": "2024-01-01", "amount": "12"}]}', 422, "orders[0].amount", id="string-amount"),
    ],
)
def test_bad_predict_bodies_get_structured_4xx(api_server: RunningServer, body: bytes, status: int,
                                               field: str | None) -> None:
    with api_server.client() as c:
        resp = c.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert_error_shape(resp, status, field)


def _feature_row(env: TrainedEnv) -> dict[str, Any]:
    from serving.online_store import OnlineStore

    uid = str(env.batch_scores["user_id"].iloc[0])
    return feature_rows(OnlineStore(env.config.serving.online_store).get_features([uid]))[0]


@pytest.mark.parametrize(
    ("mutate", "field", "named"),
    [
        pytest.param(lambda r: r.pop("orders_total"), "rows[0]", "orders_total", id="missing-feature"),
        pytest.param(lambda r: r.update(not_a_feature=1.0), "rows[0]", "not_a_feature", id="extra-feature"),
        pytest.param(lambda r: r.update(orders_total="many"), "rows[0].orders_total", None, id="string-for-number"),
        pytest.param(lambda r: r.update(orders_total=True), "rows[0].orders_total", None, id="bool-for-number"),
        pytest.param(lambda r: r.update(orders_total=[1]), "rows[0].orders_total", None, id="list-for-number"),
        pytest.param(lambda r: r.update(source_channel=None), "rows[0].source_channel", None, id="null-category"),
        pytest.param(lambda r: r.update(source_channel=3.0), "rows[0].source_channel", None, id="number-for-category"),
        pytest.param(lambda r: r.update(as_of="yesterday"), "rows[0].as_of", None, id="bad-as-of"),
        pytest.param(lambda r: r.update(user_id=""), "rows[0].user_id", None, id="empty-user-id"),
    ],
)
def test_bad_feature_rows_are_named(api_server: RunningServer, trained_env: TrainedEnv, mutate: Any,
                                    field: str, named: str | None) -> None:
    row = _feature_row(trained_env)
    mutate(row)
    with api_server.client() as c:
        resp = c.post("/predict/features", json={"rows": [row]})
    err = assert_error_shape(resp, 422, field)
    if named is not None:  # a missing or unknown feature is named in the message
        assert named in err["message"], err


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_feature_values_are_refused(api_server: RunningServer, trained_env: TrainedEnv,
                                               literal: bytes) -> None:
    row = _feature_row(trained_env)
    row["orders_total"] = 12345.0
    body = json.dumps({"rows": [row]}).encode().replace(b"12345.0", literal)
    with api_server.client() as c:
        resp = c.post("/predict/features", content=body, headers={"Content-Type": "application/json"})
    assert_error_shape(resp, 422, "rows[0].orders_total")


def test_duplicate_feature_rows_and_huge_values(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    row = _feature_row(trained_env)
    with api_server.client() as c:
        dup = c.post("/predict/features", json={"rows": [row, dict(row)]})
        assert_error_shape(dup, 422, "rows[1].user_id")
        extreme = {**row, "orders_total": 1e308, "spend_total": -1e308, "days_since_last_order": 1e300}
        resp = c.post("/predict/features", json={"rows": [extreme]})
    assert resp.status_code == 200, resp.text[:500]
    result = resp.json()["results"][0]
    assert result["status"] == "ok"
    for name in ("churn_risk", "conversion_prob"):
        assert result[name] is None or 0.0 <= result[name] <= 1.0


def test_transport_level_refusals(api_server: RunningServer) -> None:
    ok_body = b'{"user_ids": ["a"]}'
    with httpx.Client(base_url=api_server.url, timeout=60) as bare, api_server.client() as c:
        assert_error_shape(bare.post("/predict", content=ok_body, headers={"Content-Type": "application/json"}),
                           401, "X-API-Key")
        assert_error_shape(bare.post("/predict", content=ok_body, headers={"Content-Type": "application/json",
                                                                            "X-API-Key": "wrong"}), 401, "X-API-Key")
        assert_error_shape(bare.post("/predict", content=ok_body, headers={"Content-Type": "application/json",
                                                                            "X-API-Key": api_server.api_key + "x"}),
                           401)
        for ctype in ("application/vnd.bentoml+pickle", "text/plain", "application/x-www-form-urlencoded",
                      "multipart/form-data; boundary=x", "application/octet-stream"):
            assert_error_shape(c.post("/predict", content=ok_body, headers={"Content-Type": ctype}), 415,
                               "Content-Type")
        assert_error_shape(c.post("/predict", content=ok_body, headers={"Content-Type": ""}), 415, "Content-Type")
        ten_mb = b'{"user_ids": ["' + b"a" * (10 * 1024 * 1024) + b'"]}'
        assert_error_shape(c.post("/predict", content=ten_mb, headers={"Content-Type": "application/json"}), 413,
                           "body")

        def chunks() -> Any:
            for _ in range(40):
                yield b"a" * 65536

        assert_error_shape(c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"}), 413)
        assert_error_shape(c.get("/predict"), 405)
        assert_error_shape(c.get("/no/such/endpoint"), 404)
        assert_error_shape(c.post("/predict/features", json={"rows": []}), 422, "rows")
        # After all of that the server still answers.
        assert c.post("/predict", json={"user_ids": ["a"]}).status_code == 200


def raw_exchange(url: str, request: bytes) -> httpx.Response:
    """Send bytes that are not valid HTTP over a socket; parse whatever comes back until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nThis header has no colon\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n{}",
    b"GET /livez HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello on the plain port
], ids=["not-http", "header-without-colon", "bad-content-length", "two-hosts", "tls-hello"])
def test_malformed_http_gets_the_json_error(api_server: RunningServer, request_bytes: bytes) -> None:
    # below the app: uvicorn parses the request line and headers; it used to answer in plain text
    resp = raw_exchange(api_server.url, request_bytes)
    err = assert_error_shape(resp, 400)
    assert err["code"] == "bad_request" and "not valid HTTP/1.1" in err["message"]
    assert int(resp.headers["content-length"]) == len(resp.content)
    with api_server.client() as c:
        assert c.get("/livez").status_code == 200


def test_admin_reload_needs_the_key(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    with httpx.Client(base_url=api_server.url, timeout=60) as bare, api_server.client() as c:
        assert_error_shape(bare.post("/admin/reload"), 401, "X-API-Key")
        resp = c.post("/admin/reload")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"changed": False, "model_version": trained_env.model_version,
                           "previous_version": trained_env.model_version, "error": None}


def test_a_broken_champion_never_replaces_the_served_version(api_server: RunningServer,
                                                             trained_env: TrainedEnv) -> None:
    """The alias moves to a version that holds no model bundle: the old version keeps serving."""
    import mlflow

    from training.tracking import tracking_client

    env = trained_env
    name = env.config.training.model_name
    client = tracking_client(env.config)
    with mlflow.start_run(run_name="not-a-model") as run:
        mlflow.log_text("not a model", "junk/readme.txt")
    broken = client.create_model_version(name, source=f"{run.info.artifact_uri}/junk", run_id=run.info.run_id)
    uid = str(env.batch_scores["user_id"].iloc[3])
    client.set_registered_model_alias(name, "champion", broken.version)
    try:
        with api_server.client() as c:
            resp = c.post("/admin/reload")
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["changed"] is False and body["model_version"] == env.model_version
            assert body["error"] and str(broken.version) in body["error"]
            assert c.get("/readyz").status_code == 200
            assert c.get("/metadata").json()["model_version"] == env.model_version
            result = c.post("/predict", json={"user_ids": [uid]}).json()["results"][0]
            assert result["status"] == "ok" and result["model_version"] == env.model_version
    finally:
        client.set_registered_model_alias(name, "champion", env.model_version)


# ----------------------------------------------------------------------------- no model: never ready


@contextlib.contextmanager
def _unready_server(name: str, tmp_path_factory: pytest.TempPathFactory, trained_env: TrainedEnv,
                    config_writer: Callable[..., Any], server_factory: Callable[..., Any],
                    **config: Any) -> Iterator[httpx.Client]:
    """A client of a server on the session's MLflow store (already created: creating one takes seconds),
    started without waiting for it to be ready; ``config`` goes to ``config_writer``."""
    root = tmp_path_factory.mktemp(name)
    config_path = config_writer(root, poll_seconds=0.5, tracking_db=trained_env.root / "mlflow.db", **config)
    server = server_factory(config_path, root, wait_ready=False)
    try:
        with server.client(timeout=60) as c:
            yield c
    finally:
        server.stop()


def test_empty_registry_is_alive_but_never_ready(tmp_path_factory: pytest.TempPathFactory, trained_env: TrainedEnv,
                                                 config_writer: Callable[..., Any],
                                                 server_factory: Callable[..., Any]) -> None:
    """No version registered under the configured model name: alive, never ready, 503 everywhere."""
    # a model name with no registered version at all
    with _unready_server("empty_registry", tmp_path_factory, trained_env, config_writer, server_factory,
                         model_name="never_trained") as c:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            assert c.get("/livez").status_code == 200
            assert_error_shape(c.get("/readyz"), 503)
            time.sleep(0.5)
        err = assert_error_shape(c.post("/predict", json={"user_ids": ["a"]}), 503)
        assert "no model" in err["message"]
        assert_error_shape(c.get("/metadata"), 503)
        assert_error_shape(c.post("/admin/reload"), 503)


def test_a_feature_engine_without_memory_is_never_ready_and_says_why(tmp_path_factory: pytest.TempPathFactory,
                                                                    trained_env: TrainedEnv,
                                                                    config_writer: Callable[..., Any],
                                                                    server_factory: Callable[..., Any]) -> None:
    """``[features] engine_memory_limit`` too low for any feature query: the model's load check (it scores
    raw rows) fails, so the server stays unready and answers a structured 503 naming the setting."""
    with _unready_server("tiny_engine", tmp_path_factory, trained_env, config_writer, server_factory,
                         extra='[features]\nengine_memory_limit = "1MB"') as c:
        deadline = time.monotonic() + 60.0
        while "engine_memory_limit" not in c.get("/readyz").text and time.monotonic() < deadline:
            time.sleep(0.5)
        assert_error_shape(c.get("/readyz"), 503)
        resp = c.post("/predict", json={"user_ids": ["a"]})
        err = assert_error_shape(resp, 503)
        assert "engine_memory_limit = '1MB'" in err["message"] and "Traceback" not in resp.text, err


# ----------------------------------------------------------------------------- model swap without downtime


def test_promotion_swaps_versions_without_failing_requests(api_server: RunningServer, trained_env: TrainedEnv) -> None:
    """Promote a retrained model while clients hammer /predict: no failure, and the version moves."""
    from training.registry import promote, rollback
    from training.train import train_model

    env = trained_env
    batch = env.batch_scores
    ids = [str(u) for u in batch["user_id"].iloc[:40]]
    second = train_model(env.dataset, env.config.model_copy(update={
        "training": env.config.training.model_copy(update={"seed": 7, "num_leaves": 7})}), as_of=env.as_of)
    v2 = str(second.model_version)
    assert v2 != env.model_version

    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer(offset: int) -> None:
        with api_server.client(timeout=30) as c:
            i = offset
            while not stop.is_set():
                try:
                    resp = c.post("/predict", json={"user_ids": [ids[i % len(ids)], ids[(i + 7) % len(ids)]]})
                except httpx.HTTPError as err:
                    failures.append(f"transport: {err!r}")
                    continue
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code}: {resp.text[:200]}")
                    continue
                results = resp.json()["results"]
                if any(r["status"] != "ok" for r in results):
                    failures.append(f"bad result: {results}")
                versions.append(results[0]["model_version"])
                i += 1

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        decision = promote(env.config, force=True, reason="API hot-swap test")
        assert decision.promoted
        deadline = time.monotonic() + 60
        with api_server.client() as c:
            while c.get("/metadata").json()["model_version"] != v2:
                assert time.monotonic() < deadline, "the server did not pick up the new champion in 60 s"
                time.sleep(0.2)
        n_at_swap = len(versions)
        while len(versions) < n_at_swap + 40:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert versions[0] == env.model_version and versions[-1] == v2
    # Versions only move forward: once a request saw v2, later ones do too (per client order aside).
    assert set(versions) == {env.model_version, v2}

    # Roll back: the alias moves back and /admin/reload switches at once, without waiting for a poll.
    rollback(env.config)
    with api_server.client() as c:
        resp = c.post("/admin/reload").json()
        if not resp["changed"]:  # the poller may have been faster than the explicit reload
            assert resp["model_version"] == env.model_version
        assert c.get("/metadata").json()["model_version"] == env.model_version
        after = c.post("/predict", json={"user_ids": ids[:5]}).json()["results"]
    bidx = batch.set_index("user_id", drop=False)
    for r in after:
        assert_same_as_batch(r, bidx.loc[r["user_id"]])


# ----------------------------------------------------------------------------- CLI and Bento packaging


def test_serve_command_passes_config_workers_and_no_tracking(tmp_path_factory: pytest.TempPathFactory,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.service import CONFIG_ENV
    from strata_cli.cmd_serve import serve_command

    monkeypatch.setenv(CONFIG_ENV, "/somewhere/else.toml")
    cfg = tmp_path_factory.mktemp("cli") / "strata.toml"
    cmd, env = serve_command("127.0.0.1", 3999, cfg, 2)
    assert cmd[-5:] == ["serving.service:StrataService", "--host", "127.0.0.1", "--port", "3999"]
    assert env[CONFIG_ENV] == str(cfg.resolve())
    assert env["BENTOML_DO_NOT_TRACK"] == "True"
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"strata": {"workers": 2}}}
    _, env_default = serve_command("127.0.0.1", 3999, None, None)
    assert CONFIG_ENV not in env_default and "BENTOML_CONFIG_OVERRIDES" not in env_default




@pytest.mark.slow
def test_bento_builds_offline(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``bentoml build`` from bentofile.yaml with every proxy pointing nowhere: no network needed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[2]
    home = tmp_path_factory.mktemp("bentoml_home")
    dead = "http://127.0.0.1:9"  # discard port: any download attempt fails at once
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True", "HTTP_PROXY": dead,
           "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead, "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "bentoml", "build", str(repo), "--output", "tag"], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bento_dirs = [p for p in (home / "bentos" / "strata").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(bento_dirs) == 1
    bento = bento_dirs[0]
    info = yaml.safe_load((bento / "bento.yaml").read_text(encoding="utf-8"))
    assert info["service"] == "serving.service:StrataService"
    assert {r["route"] for r in info["schema"]["routes"]} >= {"/predict", "/predict/features", "/admin/reload"}
    for path in ("src/serving/service.py", "src/serving/scorer.py", "src/features/pipeline.py",
                 "src/training/pyfunc.py", "env/python/requirements.txt"):
        assert (bento / path).exists(), path
    assert not list((bento / "src").glob("tests/**/*.py"))
    pins = (bento / "env" / "python" / "requirements.txt").read_text(encoding="utf-8")
    assert "bentoml==" in pins and "lightgbm==" in pins
