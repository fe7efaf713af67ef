"""Regressions found by fuzzing the running API: valid or bad input never gets a 5xx or a stack trace.

The schemathesis run (``test_api_fuzz.py``) almost never reaches the feature pipeline through ``/predict``:
schema-valid raw rows are refused unless they belong to the listed ``user_ids`` and keep to the
configured event types and limits. These tests send such bodies on purpose. Fixtures (``api_server``)
are in ``conftest.py``: a real model, a real online store and a real ``strata serve`` process.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.server, pytest.mark.xdist_group("server")]

RunningServer = Any  # conftest.RunningServer (fixture types are not importable from a test module)

_LEAKS = ("Traceback", 'File "', "/work/", "/tmp/", "site-packages", '.py"')


def _assert_sane(resp: httpx.Response, sent: bytes) -> None:
    """200, or a 4xx in the API's error shape; JSON either way; no internals leaked."""
    assert resp.status_code == 200 or 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500], sent[:500])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    if resp.status_code != 200:
        err = body["error"]
        assert set(err) == {"code", "field", "message", "details"}, err
        assert isinstance(err["message"], str) and err["message"] and err["details"]
    for leak in _LEAKS:
        assert leak not in resp.text or leak in sent.decode("utf-8", "replace"), (leak, resp.text[:500])


def _post(c: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    raw = json.dumps(body).encode()
    return c.post("/predict", content=raw, headers={"Content-Type": "application/json"}), raw


# ----------------------------------------------------------------------------- a row at exactly as_of

# Timestamps with microseconds where Python's epoch seconds and DuckDB's ``EPOCH()`` round differently:
# when ages were computed from seconds in DOUBLE, a row stamped exactly ``as_of`` got ``age_days`` of about
# -3e-12, ``FLOOR`` made it -1 and the activity bitmap's ``1 << FLOOR(age_days)`` failed in DuckDB
# ("Cannot left-shift by negative number -1"): a 500 for a valid request (about 1 in 8 such instants).
# Ages now come from whole microseconds (``features.pipeline._age_days``).
_EXACT_INSTANTS = ["2024-12-31T17:30:28.502869+00:00", "2000-01-01T00:00:00.008107+00:00"]


@pytest.mark.parametrize("instant", _EXACT_INSTANTS)
@pytest.mark.parametrize("table", ["orders", "events"])
def test_a_row_stamped_exactly_at_as_of_is_scored(api_server: RunningServer, table: str, instant: str) -> None:
    row: dict[str, Any] = (
        {"user_id": "fz-a", "order_id": "o1", "ordered_at": instant, "amount": 12.5} if table == "orders"
        else {"user_id": "fz-a", "occurred_at": instant, "event_type": "checkin"}
    )
    with api_server.client() as c:
        resp, sent = _post(c, {"user_ids": ["fz-a"], "as_of": instant, table: [row]})
    _assert_sane(resp, sent)
    assert resp.status_code == 200, resp.text[:500]
    (result,) = resp.json()["results"]
    assert result["user_id"] == "fz-a" and result["status"] == "ok"


# ----------------------------------------------------------------------------- generated raw-row bodies

# A small pool of instants (the first four double as as_of): rows often fall exactly at the cutoff, one
# microsecond before it, at the configured data.min_timestamp, near the pandas range limit or after as_of.
_TIMES = ["2024-12-31T17:30:28.502869Z", "2024-12-31T17:30:28.502868Z", "2024-06-30T12:00:00+08:00",
          "1990-01-01T00:00:00Z", "2261-12-31T23:59:59-14:00", "2025-01-01", "2024-12-31"]
_USERS = ["fz-1", "fz-2"]
_text = st.sampled_from(["web", "app", "\u00e9\u00e8", "\U0001f600", "x" * 256, "a\u0000b"])
_amount = st.one_of(st.floats(0, 1e6), st.sampled_from([0.0, 1e-300, 1e6]))
#: One rule broken per refused body: (table, field, value).
_BREAKS = [("orders", "amount", 1e6 + 1), ("orders", "amount", -1.0), ("orders", "category", "x" * 257),
           ("orders", "status", "void"), ("orders", "user_id", "fz-other"), ("orders", "ordered_at", "1989-12-31"),
           ("events", "event_type", "teleport"), ("events", "channel", ""), ("events", "occurred_at", "2262-01-01"),
           ("users", "joined_at", "yesterday"), ("users", "region", ""), ("users", "extra", 1)]


@st.composite
def _raw_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A ``/predict`` body with raw rows of its users (else one rule broken, about one time in three)."""
    users = draw(st.lists(st.sampled_from(_USERS), min_size=1, max_size=3))
    uid = st.sampled_from(users)
    times = st.sampled_from(_TIMES)
    order = st.fixed_dictionaries(
        {"user_id": uid, "order_id": st.sampled_from(["o1", "o2"]), "ordered_at": times, "amount": _amount},
        optional={"category": _text, "channel": _text, "status": st.sampled_from(["paid", "refunded", None]),
                  "quantity": st.integers(0, 1_000)})
    event = st.fixed_dictionaries(
        {"user_id": uid, "occurred_at": times,
         "event_type": st.sampled_from(["checkin", "cart_add", "consult", "article_read"])},
        optional={"value": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), "channel": _text})
    user = st.fixed_dictionaries({"user_id": uid}, optional={"joined_at": times, "source_channel": _text, "region": _text})
    body: dict[str, Any] = {"user_ids": users, "as_of": draw(st.sampled_from(_TIMES[:4]))}
    for table, rows in (("orders", order), ("events", event), ("users", user)):
        if draw(st.booleans()):
            body[table] = draw(st.lists(rows, min_size=1, max_size=4))
    if draw(st.integers(0, 2)) == 2:
        table, name, value = draw(st.sampled_from(_BREAKS))
        body.setdefault(table, [{"user_id": users[0]}] if table == "users" else draw(st.lists(
            order if table == "orders" else event, min_size=1, max_size=1)))[0][name] = value
    return body


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_raw_bodies())
def test_generated_raw_row_bodies_get_200_or_a_structured_4xx(api_server: RunningServer, body: dict[str, Any]) -> None:
    with api_server.client() as c:
        resp, sent = _post(c, body)
    _assert_sane(resp, sent)
    if resp.status_code == 200:
        assert [r["user_id"] for r in resp.json()["results"]] == body["user_ids"]


# ----------------------------------------------------------------------------- /metrics label cardinality

# BentoML's request metrics (the outermost middleware, before the guard and routing) labelled each series
# with the raw request path: every invented path, even a 401 or a 404, added series to /metrics for good
# (unbounded output and memory), and ``/predict%00`` put a NUL byte into a label. Unknown paths are now
# counted under ``endpoint="unmatched"`` (``serving.http_metrics``), and paths with a trailing slash get a
# structured 404 instead of an empty 307.
_INVENTED = [f"/fz-{i}-{'x' * (i % 7)}" for i in range(40)] + [
    "/unauth-path-123", "/predict%00", "/predict%0a", "/predict%1b[31m", "/metadata%00x", "/%22%7D%20evil",
    "/predict/", "/predict/features/", "/admin/reload/", "/predict//", "/static_content/../x", "/a/b/c/d",
]


def _endpoint_labels(server: RunningServer) -> set[str]:
    import re

    text = httpx.get(server.url + "/metrics", timeout=30.0).text
    return {m.group(1) for m in re.finditer(r'^\w*_request_total\{[^}]*?endpoint="((?:[^"\\]|\\.)*)"', text, re.M)}


def test_invented_paths_do_not_add_metric_labels(api_server: RunningServer) -> None:
    with api_server.client() as c, httpx.Client(base_url=api_server.url, timeout=30.0) as anon:
        assert c.post("/predict", json={"user_ids": ["fz-metrics"]}).status_code == 200
        assert c.get("/metadata").status_code == 200
        before = _endpoint_labels(api_server)
        for i, path in enumerate(_INVENTED):
            resp = (anon if i % 2 else c).request("POST" if i % 3 else "GET", path, json={"user_ids": ["u"]})
            assert resp.status_code in (401, 404, 405), (path, resp.status_code)
            _assert_sane(resp, path.encode())
        for path in ("/predict/", "/predict/features/"):  # used to be an empty 307 redirect
            resp = c.post(path, json={"user_ids": ["u"]})
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", (path, resp.text[:200])
    after = _endpoint_labels(api_server)
    assert after - before <= {"unmatched"}, sorted(after - before)
    assert len(after) <= 20, sorted(after)
    assert not [v for v in after if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in v)], sorted(after)
    assert {"/predict", "/metadata", "/predict/features", "/admin/reload", "unmatched"} <= after, sorted(after)
