"""The online prediction API: a BentoML 1.4 service over the one scorer and the online store.

Start it with ``strata serve`` (or ``bentoml serve serving.service:StrataService``); the configuration
file comes from ``STRATA_CONFIG`` (set by ``strata serve --config``). Endpoints (docs/api.md):

- ``POST /predict``: users by id, scored from the features in the online store, or from raw rows the
  caller sends (``orders``/``events``/``users`` and ``as_of``) with the batch feature code;
- ``POST /predict/features``: precomputed feature rows, checked against the model's feature schema;
- ``GET /metadata``: the model served and the state of the online store;
- ``POST /admin/reload``: look up the ``champion`` alias now (needs an API key);
- ``GET /livez``, ``GET /readyz`` (ready only once a model is loaded and a warm-up prediction passed),
  ``GET /metrics`` (Prometheus), ``GET /docs.json`` (this API's OpenAPI document).

Every answer is the answer of :meth:`serving.scorer.Scorer.score_features` with ``budget=None``, the
same call batch scoring makes per chunk, so a user gets the batch numbers for the same features.

Speed: scoring a few rows with pandas costs tens of milliseconds, most of it fixed overhead. So

- a few rows are scored by :class:`serving.fast_scorer.FastScorer` (NumPy, no pandas: under a
  millisecond for one row), which gives the batch scorer's answer bit for bit; at every model load it is
  checked against the batch scorer on probe rows and stored users, and left unused (the batch scorer
  answers) if any answer differs or the bundle has a shape it does not handle;
- concurrent by-id lookups that miss the cache are coalesced into one store read and one scoring call
  (micro-batching, no timer: requests that arrive while a batch is scored form the next batch);
- ``{"user_ids": [...]}`` bodies (the common call) are answered by :meth:`StrataService.predict_simple`,
  which the request guard calls before BentoML's routing, request parsing and pydantic model (together
  about 190 of the 510 us of CPU an uncached request cost); every other body goes through :meth:`StrataService.predict`;
- answers are kept, already JSON-encoded, in a per-version cache (``serving.prediction_cache_users``
  entries). The cache lives in the :class:`~serving.model_watcher.LiveModel` of its version, so it is
  swapped atomically with the scorer, and it is emptied whenever the online store changes (SQLite's
  ``PRAGMA data_version``, checked on every request): a cached answer is always the answer the live
  model gives for the stored features.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving import http_metrics, http_protocol
from serving.api_models import (
    APIError,
    ErrorResponse,
    FeatureSchema,
    FeaturesRequest,
    MetadataResponse,
    PredictionResult,
    PredictRequest,
    PredictResponse,
    ReloadRequest,
    ReloadResponse,
    dataset_from_request,
    encode_result,
    encode_results,
    feature_frame,
    feature_rows,
    feature_schema_for,
    result_from_record,
    results_from_scores,
    simple_user_ids,
    unknown_user,
)
from serving.security import GuardSettings, RequestGuard, guard_settings

if TYPE_CHECKING:
    from features.config import StrataConfig
    from serving.fast_scorer import FastScorer, FeatureRows
    from serving.model_watcher import LiveModel, ModelWatcher
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer

logger = logging.getLogger(__name__)

CONFIG_ENV = "STRATA_CONFIG"
"""Environment variable naming the configuration file the service loads at startup."""
API_VERSION = "1"
CHAMPION = "champion"
_WARMUP_USER = "__strata_warmup__"
#: Stored users the fast path is checked on at model load (next to synthetic probe rows).
_FAST_CHECK_USERS = 256
#: Largest coalesced batch the fast path scores on the event loop (about 5 ms); larger ones go to a thread.
_INLINE_MAX_USERS = 64
_MISSING = object()


def load_service_config() -> StrataConfig:
    """The configuration named by ``STRATA_CONFIG`` (else ``./strata.toml`` or the defaults)."""
    from features.config import load_config

    return load_config(os.environ.get(CONFIG_ENV) or None)


def _json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


def _error_response(err: APIError) -> Response:
    return _json_response(err.body(), err.status)


# ----------------------------------------------------------------------------- per-version state


class PredictionCache:
    """LRU of JSON-encoded answers (None: unknown user) for one model version and one store state.

    Used from the event-loop thread only. ``generation`` increases at every :meth:`reset`, so a batch
    scored before a reset cannot write stale answers into the emptied cache.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, bytes | None] = OrderedDict()
        self.store_version: object = None
        self.generation = 0

    def __len__(self) -> int:
        return len(self._data)

    def reset(self, store_version: object) -> None:
        """Forget everything; the cache now describes ``store_version`` of the online store."""
        self._data = OrderedDict()
        self.store_version = store_version
        self.generation += 1

    def get(self, user_id: str) -> object:
        """The cached answer, None for a known-unknown user, or the module's ``_MISSING`` sentinel."""
        value = self._data.get(user_id, _MISSING)
        if value is not _MISSING:
            self._data.move_to_end(user_id)
        return value

    def put(self, answers: dict[str, bytes | None], generation: int) -> None:
        """Store answers computed while the cache was at ``generation`` (ignored if it moved on)."""
        if self.capacity <= 0 or generation != self.generation:
            return
        self._data.update(answers)
        for user_id in answers:
            self._data.move_to_end(user_id)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)


@dataclass(frozen=True)
class VersionState:
    """Built once per model version when it is loaded; swapped together with its scorer."""

    schema: FeatureSchema
    cache: PredictionCache
    fast: FastScorer | None = None
    """The small-n fast path, None when it is not used for this version (the batch scorer answers)."""


class StoreVersion:
    """A cheap fingerprint of the online store's content: the file's inode and SQLite ``PRAGMA data_version``.

    The inode changes when batch scoring swaps a new store file in (``os.replace``); ``data_version``
    changes whenever another connection commits to the same file (an in-place ``OnlineStore.write``). An
    unchanged pair means the stored features are the ones the cache was filled from. One read-only
    connection, used from the event-loop thread only; None while the file does not exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None

    def current(self) -> object:
        try:
            inode = self.path.stat().st_ino
        except OSError:
            self.close()
            return None
        if self._conn is None or inode != self._inode:
            self.close()
            try:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            except sqlite3.Error:
                return None
            self._inode = inode
        try:
            return (inode, self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._inode = None


def _has_fast_path(live: LiveModel[Scorer]) -> bool:
    state: VersionState = live.extra
    return state.fast is not None


def _scored_rows_counter() -> Any:
    """Prometheus counter ``strata_scored_rows_total{path="fast"|"batch"}``: rows scored per path.

    Says whether cache misses go through the fast path; None if the metric cannot be registered.
    """
    try:
        return bentoml.metrics.Counter(
            name="strata_scored_rows", documentation="Rows scored by the API, by scoring path (fast or batch)",
            labelnames=["path"],
        )
    except Exception:  # noqa: BLE001  (already registered in this process, or no metrics backend)
        logger.warning("metric strata_scored_rows not registered", exc_info=True)
        return None


def _settle_heap(_live: object) -> None:
    """Collect once, then freeze the surviving objects out of the cyclic garbage collector.

    After imports and a model load the heap holds ~500k long-lived objects (pandas, LightGBM, MLflow,
    BentoML); every full collection walks them all, a pause of 0.1-0.5 s that shows up as p99 latency.
    Frozen objects are still freed by reference counting; unfreezing before each collection (at every
    model swap) lets the old version's cycles be reclaimed too.
    """
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


# ----------------------------------------------------------------------------- micro-batching


@dataclass
class _Pending:
    live: LiveModel[Scorer]
    user_ids: list[str]
    future: asyncio.Future[dict[str, bytes]]


@dataclass
class StoredScoring:
    """Coalesces concurrent by-id lookups: one store read and one scoring call per batch and version.

    While a batch is scored, new requests queue; when it finishes, all queued requests (of the same
    model version) form the next batch. No request waits for a timer. Batches of a version with a fast
    path (``inline``) are scored on the event loop, others in a worker thread.
    """

    score: Any
    """``score(live, user_ids) -> {user_id: encoded answer}``."""
    inline: Any = None
    """``inline(live) -> bool``: score this version's batches on the event loop (a fast path that takes
    about a millisecond: cheaper than the hop to a worker thread); else in a worker thread."""
    max_batch_users: int = 2048
    _queue: list[_Pending] = field(default_factory=list)
    _running: bool = False

    async def lookup(self, live: LiveModel[Scorer], user_ids: list[str]) -> dict[str, bytes]:
        loop = asyncio.get_running_loop()
        pending = _Pending(live, user_ids, loop.create_future())
        self._queue.append(pending)
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await pending.future

    def _next_batch(self) -> list[_Pending]:
        first = self._queue.pop(0)
        batch, n = [first], len(first.user_ids)
        rest: list[_Pending] = []
        for p in self._queue:
            if p.live is first.live and n + len(p.user_ids) <= self.max_batch_users:
                batch.append(p)
                n += len(p.user_ids)
            else:
                rest.append(p)
        self._queue = rest
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._next_batch()
                ids = list(dict.fromkeys(u for p in batch for u in p.user_ids))
                live = batch[0].live
                try:
                    if self.inline is not None and self.inline(live) and len(ids) <= _INLINE_MAX_USERS:
                        found = self.score(live, ids)
                    else:
                        found = await asyncio.to_thread(self.score, live, ids)
                except Exception as err:  # noqa: BLE001  (delivered to every waiting request)
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                for p in batch:
                    if not p.future.done():
                        p.future.set_result(found)
        finally:
            self._running = False


# ----------------------------------------------------------------------------- the mounted GET routes


async def _metadata_route(request: Request) -> Response:
    svc: StrataService = bentoml.get_current_service()
    return await svc.metadata_response()


async def _openapi_route(request: Request) -> Response:
    svc: StrataService | None
    try:
        svc = bentoml.get_current_service()
    except Exception:  # noqa: BLE001  (not instantiated yet: document without the live feature schema)
        svc = None
    schema = None
    if svc is not None and svc.watcher.current is not None:
        schema = svc.feature_schema(svc.watcher.current)
    return JSONResponse(openapi_document(schema))


info_app = Starlette(
    routes=[
        Route("/metadata", _metadata_route, methods=["GET"]),
        Route("/docs.json", _openapi_route, methods=["GET"]),
    ]
)


# ----------------------------------------------------------------------------- the service


@bentoml.service(
    name="strata",
    traffic={"timeout": 60},
    # Per-request access logs and OpenTelemetry spans cost more CPU than a cached answer; BentoML
    # collects no traces by default anyway (sample rate 0). Re-enable both with BENTOML_CONFIG_OVERRIDES.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/predict", "/admin/reload", "/metadata", "/livez", "/readyz", "/metrics"]},
)
@bentoml.asgi_app(info_app, path="/")
class StrataService:
    """Online churn / value / layer / intervention predictions: the same numbers as batch scoring."""

    def __init__(self) -> None:
        from serving.model_watcher import ModelWatcher
        from serving.online_store import OnlineStore

        # malformed HTTP (below the app) gets the API's JSON error too, not uvicorn's plain text; the worker
        # creates the service at start-up, before uvicorn accepts a connection
        http_protocol.install()
        self.config = load_service_config()
        self.store: OnlineStore = OnlineStore(self.config.serving.online_store)
        self.store_version = StoreVersion(self.config.serving.online_store)
        self.model_name = self.config.training.model_name
        self.watcher: ModelWatcher[Scorer] = ModelWatcher(
            resolve_version=self._champion_version,
            load=self._load_version,
            warm_up=self._warm_up,
            poll_seconds=self.config.serving.model_poll_seconds,
            after_swap=_settle_heap,
            watched=f"{self.model_name}@{CHAMPION}",
        )
        self.stored_scoring = StoredScoring(self._score_stored, inline=_has_fast_path)
        self.scored_rows = _scored_rows_counter()
        self.watcher.start()

    # -- model lifecycle ------------------------------------------------------------------------

    def _champion_version(self) -> str | None:
        from training.registry import alias_version

        return alias_version(self.config, CHAMPION)

    def _load_version(self, version: str) -> Scorer:
        """The scorer of one registered version (loaded by number, so a moving alias cannot race us)."""
        from serving.scorer import Scorer
        from training.pyfunc import load_bundle

        bundle = load_bundle(f"models:/{self.model_name}/{version}", self.config)
        return Scorer(bundle, self.config, model_name=self.model_name, model_version=version, model_alias=CHAMPION)

    def _warm_up(self, scorer: Scorer) -> VersionState:
        """One real prediction through the raw-row path (features built by the pipeline, then scored).

        Returns the per-version state (feature-row schema, empty answer cache) kept with the scorer.
        """
        import pandas as pd

        from features.dataset import Dataset

        as_of = pd.Timestamp.now(tz="UTC").floor("s")
        orders = pd.DataFrame(
            {
                "user_id": [_WARMUP_USER],
                "order_id": ["warmup-1"],
                "ordered_at": pd.to_datetime([as_of - pd.Timedelta(days=10)], utc=True),
                "amount": [1.0],
            }
        )
        scores = scorer.score_raw(Dataset(orders=orders), as_of)
        if len(scores) != 1 or str(scores["user_id"].iloc[0]) != _WARMUP_USER:
            raise RuntimeError("warm-up prediction returned no row for the warm-up user")
        encode_result(results_from_scores(scores)[_WARMUP_USER])
        self.store.count()
        bundle = scorer.bundle
        schema = feature_schema_for(self.config, bundle.feature_names, list(bundle.categorical_levels))
        return VersionState(schema=schema, cache=PredictionCache(self.config.serving.prediction_cache_users),
                            fast=self._checked_fast_scorer(scorer))

    def _checked_fast_scorer(self, scorer: Scorer) -> FastScorer | None:
        """The fast path of ``scorer`` if it gives the batch answer on probe rows and stored users, else None."""
        from serving.fast_scorer import FastPathUnsupported, FastScorer, mismatches, probe_rows

        try:
            fast = FastScorer(scorer)
            bad = mismatches(fast, probe_rows(fast))
            stored = self.store.get_feature_rows(self.store.sample_user_ids(_FAST_CHECK_USERS))
            if len(stored):
                bad += mismatches(fast, stored)
        except FastPathUnsupported as err:
            logger.warning("model version %s: fast scoring path not used (%s)", scorer.model_version, err)
            return None
        except Exception:  # noqa: BLE001  (the batch scorer still answers; say why the fast path is off)
            logger.exception("model version %s: fast scoring path failed its check", scorer.model_version)
            return None
        if bad:
            logger.warning("model version %s: fast scoring path not used: it differs from the batch scorer for "
                           "%d checked row(s), e.g. %s", scorer.model_version, len(bad), bad[0])
            return None
        logger.info("model version %s: fast scoring path checked and in use", scorer.model_version)
        return fast

    def feature_schema(self, live: LiveModel[Scorer]) -> FeatureSchema:
        """The feature-row schema of the served version."""
        state: VersionState = live.extra
        return state.schema

    def __is_ready__(self) -> bool:
        return self.watcher.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.watcher.stop()

    def _live(self) -> LiveModel[Scorer]:
        live = self.watcher.current
        if live is None:
            detail = f" ({self.watcher.last_error})" if self.watcher.last_error else ""
            raise APIError(503, f"the service is not ready: no model is loaded yet{detail}")
        return live

    # -- scoring (worker thread) ----------------------------------------------------------------

    def _count(self, path: str, n: int) -> None:
        if self.scored_rows is not None and n:
            self.scored_rows.labels(path=path).inc(n)

    def _fast_answers(self, live: LiveModel[Scorer], rows: FeatureRows) -> dict[str, bytes] | None:
        """Encoded answers of ``rows`` by the fast path, or None where the batch scorer must answer."""
        from serving.fast_scorer import FastPathUnsupported

        state: VersionState = live.extra
        if state.fast is None:
            return None
        try:
            records = state.fast.score_records(rows)
        except FastPathUnsupported:
            return None
        self._count("fast", len(records))
        return {r["user_id"]: encode_result(result_from_record(r)) for r in records}

    def _score_stored(self, live: LiveModel[Scorer], user_ids: list[str]) -> dict[str, bytes]:
        """Encoded answers of the users found in the online store, scored by ``live``."""
        state: VersionState = live.extra
        if state.fast is not None:
            rows = self.store.get_feature_rows(user_ids)
            if len(rows) == 0:
                return {}
            fast = self._fast_answers(live, rows)
            if fast is not None:
                return fast
        features = self.store.get_features(user_ids)
        if len(features) == 0:
            return {}
        found = results_from_scores(live.scorer.score_features(features))
        self._count("batch", len(found))
        return {u: encode_result(r) for u, r in found.items()}

    def _score_raw(self, live: LiveModel[Scorer], request: PredictRequest) -> dict[str, bytes]:
        from features.errors import EngineMemoryError, StrataError
        from features.pipeline import build_features
        from serving.fast_scorer import FastPathUnsupported, FeatureRows

        dataset, as_of = dataset_from_request(request, self.config)
        wanted = set(request.user_ids)
        try:
            features = build_features(dataset, as_of, self.config)
            features = features[features["user_id"].astype(str).isin(wanted)].reset_index(drop=True)
            try:
                fast = self._fast_answers(live, FeatureRows.from_frame(features))
            except FastPathUnsupported:
                fast = None
            if fast is not None:
                return fast
            scores = live.scorer.score_features(features)
        except EngineMemoryError as err:  # not the rows' fault: the server's engine memory limit is too low
            raise APIError(503, f"the service could not compute features: {err}") from None
        except StrataError as err:  # the caller's rows are unusable: say why (messages name the data)
            raise APIError(422, f"rows: {err}", field="rows") from None
        self._count("batch", len(scores))
        return {u: encode_result(r) for u, r in results_from_scores(scores).items()}

    def _score_feature_rows(self, live: LiveModel[Scorer], rows: list[dict[str, Any]]) -> list[bytes]:
        from features.errors import StrataError

        schema = self.feature_schema(live)
        state: VersionState = live.extra
        if state.fast is not None:
            fast = self._fast_answers(live, feature_rows(rows, schema))
            if fast is not None:
                return [fast[r["user_id"]] for r in rows]
        frame = feature_frame(rows, schema)
        try:
            scores = live.scorer.score_features(frame)
        except StrataError as err:
            raise APIError(422, f"rows: {err}", field="rows") from None
        found = results_from_scores(scores)
        self._count("batch", len(found))
        return [encode_result(found[str(u)]) for u in frame["user_id"]]

    async def _stored_answers(self, live: LiveModel[Scorer], user_ids: list[str]) -> dict[str, bytes | None]:
        """Answers for ids from the cache, the misses scored in one coalesced batch."""
        state: VersionState = live.extra
        cache = state.cache
        if cache.capacity <= 0:  # no cache: nothing to check the store's version against
            return dict(await self.stored_scoring.lookup(live, list(dict.fromkeys(user_ids))))
        version = self.store_version.current()
        if version != cache.store_version:
            cache.reset(version)
        answers: dict[str, bytes | None] = {}
        misses: list[str] = []
        for u in dict.fromkeys(user_ids):
            hit = cache.get(u)
            if hit is _MISSING:
                misses.append(u)
            else:
                answers[u] = hit  # type: ignore[assignment]
        if misses:
            generation = cache.generation
            found = await self.stored_scoring.lookup(live, misses)
            fresh: dict[str, bytes | None] = {u: found.get(u) for u in misses}
            cache.put(fresh, generation)
            answers.update(fresh)
        return answers

    # -- API ------------------------------------------------------------------------------------

    def _check_count(self, n: int, what: str) -> None:
        limit = self.config.serving.max_user_ids
        if n > limit:
            raise APIError(422, f"{what}: {n} in one call; the limit is {limit} (serving.max_user_ids)", field=what)

    async def predict_simple(self, body: bytes) -> tuple[int, bytes] | None:
        """``POST /predict`` of the common shape ``{"user_ids": [...]}``, answered before BentoML's routing.

        The request guard calls this with a body that passed the key, type and size checks. It answers
        exactly as :meth:`predict` would (same bytes) and returns None for anything else (another shape,
        too many ids, no model loaded yet), which then goes through :meth:`predict` and its validation.
        """
        user_ids = simple_user_ids(body, self.config.serving.max_user_ids)
        live = self.watcher.current
        if user_ids is None or live is None:
            return None
        answers = await self._stored_answers(live, user_ids)
        return 200, encode_results([answers.get(u) or encode_result(unknown_user(u)) for u in user_ids])

    @bentoml.api(route="/predict", output_spec=PredictResponse)
    async def predict(self, request: PredictRequest, /) -> PredictResponse | Response:
        """Predictions for users by id (stored features), or from raw rows sent with the request."""
        try:
            self._check_count(len(request.user_ids), "user_ids")
            live = self._live()
            if request.has_raw_rows:
                answers: dict[str, bytes | None] = dict(
                    await asyncio.to_thread(self._score_raw, live, request)
                )
            else:
                answers = await self._stored_answers(live, list(request.user_ids))
        except APIError as err:
            return _error_response(err)
        parts = [answers.get(u) or encode_result(unknown_user(u)) for u in request.user_ids]
        return _json_response(encode_results(parts))

    @bentoml.api(route="/predict/features", output_spec=PredictResponse)
    async def predict_features(self, request: FeaturesRequest, /) -> PredictResponse | Response:
        """Predictions for precomputed feature rows (``user_id``, ``as_of`` and every model feature)."""
        try:
            self._check_count(len(request.rows), "rows")
            live = self._live()
            parts = await asyncio.to_thread(self._score_feature_rows, live, list(request.rows))
        except APIError as err:
            return _error_response(err)
        return _json_response(encode_results(parts))

    @bentoml.api(route="/admin/reload", output_spec=ReloadResponse)
    async def admin_reload(self, request: ReloadRequest, /) -> ReloadResponse | Response:
        """Look up the ``champion`` alias now and swap versions if it moved (API key required)."""
        outcome = await asyncio.to_thread(self.watcher.check_now)
        if outcome.error is not None and outcome.version is None:
            return _error_response(APIError(503, f"no model could be loaded: {outcome.error}"))
        return ReloadResponse(
            changed=outcome.changed,
            model_version=outcome.version,
            previous_version=outcome.previous_version,
            error=outcome.error,
        )

    async def metadata_response(self) -> Response:
        """``GET /metadata``: the served model and the online store (503 before a model is loaded)."""
        try:
            live = self._live()
        except APIError as err:
            return _error_response(err)
        meta = live.scorer.metadata()
        try:
            n_users: int | None = await asyncio.to_thread(self.store.count)
            ts = await asyncio.to_thread(self.store.feature_timestamp)
        except Exception:  # noqa: BLE001  (a broken store must not hide which model is served)
            logger.exception("online store unreadable")
            n_users, ts = None, None
        body = MetadataResponse(
            model_name=str(meta.get("model_name", self.model_name)),
            model_version=live.version,
            model_alias=meta.get("model_alias"),
            trained_at=None if meta.get("trained_at") is None else str(meta["trained_at"]),
            horizon_days=meta.get("horizon_days"),
            features=list(meta.get("features", [])),
            categorical_features=list(meta.get("categorical_features", [])),
            loaded_at=live.loaded_at,
            online_store_users=n_users,
            online_store_as_of=None if ts is None else ts.to_pydatetime(),
            api_version=API_VERSION,
        )
        return _json_response(body.model_dump_json().encode("utf-8"))


# ----------------------------------------------------------------------------- OpenAPI document

_ERROR_TEXTS = {
    400: "Body is not valid JSON",
    401: "Missing or invalid X-API-Key",
    403: "Endpoint disabled (no API key configured)",
    413: "Body larger than serving.max_body_bytes",
    415: "Content-Type is not application/json",
    422: "Request does not match the schema (fields and values named)",
    503: "No model loaded yet",
}


def openapi_document(feature_schema: FeatureSchema | None = None) -> dict[str, Any]:
    """The OpenAPI document served at ``/docs.json``.

    BentoML's document with this API's real error responses (one error shape, see
    :class:`serving.api_models.ErrorResponse`), the GET routes, the API-key scheme and, when a model is
    loaded, the exact feature-row schema of ``/predict/features``.
    """
    service: Any = StrataService  # a bentoml Service once decorated (mypy sees the class)
    spec: dict[str, Any] = service.openapi_spec.asdict()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, MetadataResponse, PredictionResult):
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = doc
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

    def errors(*codes: int) -> dict[str, Any]:
        return {str(c): {"description": _ERROR_TEXTS[c], "content": error_ref} for c in codes}

    for path in ("/predict", "/predict/features", "/admin/reload"):
        post = spec["paths"][path]["post"]
        for code in (400, 404, 500):  # BentoML's own error shapes: replaced by the API's
            post["responses"].pop(code, None)
            post["responses"].pop(str(code), None)
        post["responses"].update(errors(400, 401, 413, 415, 422, 503))
    spec["paths"]["/admin/reload"]["post"]["responses"].update(errors(403))
    if feature_schema is not None:
        body = spec["paths"]["/predict/features"]["post"]["requestBody"]["content"]["application/json"]
        rows = body["schema"]["properties"]["rows"]
        rows["items"] = feature_schema.json_schema()
    spec["paths"]["/metadata"] = {
        "get": {
            "operationId": "strata__metadata",
            "description": "The served model and the online store.",
            "responses": {
                "200": {
                    "description": "Metadata",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MetadataResponse"}}},
                },
                **errors(401, 503),
            },
        }
    }
    spec["paths"].pop("/healthz", None)
    spec["paths"]["/readyz"]["get"]["responses"].update(errors(503))
    spec["info"] = {
        "title": "Strata prediction API",
        "version": API_VERSION,
        "description": "Churn risk, future value, refined layers and interventions per user; see docs/api.md.",
    }
    for unused in ("TaskStatusResponse", "InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(unused, None)
    _openapi_nullable(spec)
    spec["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    spec["security"] = [{"ApiKey": []}]
    for probe in ("/livez", "/readyz", "/metrics"):
        if probe in spec["paths"]:
            spec["paths"][probe]["get"]["security"] = []
    return spec


def _openapi_nullable(node: Any) -> None:
    """Rewrite JSON-schema nulls the OpenAPI 3.0 way, in place.

    ``{"anyOf": [X, {"type": "null"}]}`` (pydantic's ``X | None``) becomes ``X`` with ``nullable: true``;
    a property whose default is null (BentoML drops the null branch of top-level optional inputs) is
    marked ``nullable`` too, so the document accepts exactly what the API accepts.
    """
    if isinstance(node, list):
        for item in node:
            _openapi_nullable(item)
        return
    if not isinstance(node, dict):
        return
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [a for a in any_of if a != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and isinstance(rest[0], dict) and "$ref" not in rest[0]:
            node.update({k: v for k, v in rest[0].items() if k not in node})
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    if node.get("nullable") and isinstance(node.get("enum"), list) and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]  # OpenAPI 3.0: ``nullable`` does not extend an enum
    props = node.get("properties")
    if isinstance(props, dict):
        for sub in props.values():
            if isinstance(sub, dict) and "default" in sub and sub["default"] is None:
                sub["nullable"] = True
    for value in node.values():
        _openapi_nullable(value)


def _guard_settings() -> GuardSettings:
    return guard_settings(load_service_config())


async def _predict_simple(body: bytes) -> tuple[int, bytes] | None:
    """The guard's fast handler of ``/predict``: :meth:`StrataService.predict_simple` of this process's instance."""
    try:
        svc: StrataService = bentoml.get_current_service()
    except Exception:  # noqa: BLE001  (not instantiated yet: the full path answers)
        return None
    return await svc.predict_simple(body)


_service: Any = StrataService
# BentoML's request metrics label each series with the raw request path and run before the guard, so
# invented paths (401s, 404s) grew /metrics without bound: label them by route template or "unmatched".
http_metrics.install()
_service.add_asgi_middleware(
    RequestGuard,
    settings_loader=_guard_settings,
    request_models={"/predict": PredictRequest, "/predict/features": FeaturesRequest, "/admin/reload": ReloadRequest},
    key_required_paths=("/admin/reload",),
    fast_routes={"/predict": _predict_simple},
)

__all__ = ["StrataService", "load_service_config", "openapi_document"]
