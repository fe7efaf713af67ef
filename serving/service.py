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

Every answer is computed by :meth:`serving.scorer.Scorer.score_features` with ``budget=None``, the same
call batch scoring makes per chunk, so a user gets the batch numbers for the same features. Scoring runs
in a worker thread; concurrent ``/predict`` calls are coalesced into one store read and one scoring call
(micro-batching), which keeps single-user latency low under load.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.api_models import (
    ErrorResponse,
    FeaturesRequest,
    MetadataResponse,
    PredictionResult,
    PredictRequest,
    PredictResponse,
    ReloadRequest,
    ReloadResponse,
)
from serving.security import RequestGuard, encode_error, guard_settings

if TYPE_CHECKING:
    import pandas as pd

    from features.config import StrataConfig
    from serving.model_watcher import LiveModel, ModelWatcher
    from serving.online_store import OnlineStore
    from serving.scorer import Scorer

logger = logging.getLogger(__name__)

CONFIG_ENV = "STRATA_CONFIG"
"""Environment variable naming the configuration file the service loads at startup."""
API_VERSION = "1"
CHAMPION = "champion"
_WARMUP_USER = "__strata_warmup__"


def load_service_config() -> StrataConfig:
    """The configuration named by ``STRATA_CONFIG`` (else ``./strata.toml`` or the defaults)."""
    from features.config import load_config

    return load_config(os.environ.get(CONFIG_ENV) or None)


class APIError(Exception):
    """A request the service refuses: HTTP status, offending field and a message for the client."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 details: Sequence[tuple[str | None, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.details = list(details)

    def response(self) -> Response:
        body = encode_error(self.status, self.message, field=self.field, details=self.details)
        return Response(body, status_code=self.status, media_type="application/json")


# ----------------------------------------------------------------------------- result formatting

_FLOAT_FIELDS = ("churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90",
                 "action_cost", "expected_incremental_value")
_STR_FIELDS = ("lifecycle", "rfm_segment", "value_tier", "activity_tier", "refined_layer", "action_id",
               "action_name", "model_name", "model_version")


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) else f


def _str_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _json_list(value: Any) -> list[Any] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, list):
        return value
    parsed = json.loads(value)
    return parsed if isinstance(parsed, list) else None


def format_results(scores: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Scorer output rows as API result dicts (JSON-ready), keyed by user id.

    Floats pass through unchanged (NaN becomes null); ``reasons`` and ``interventions`` JSON strings are
    parsed into lists; ``as_of`` is an ISO 8601 string in UTC.
    """
    out: dict[str, dict[str, Any]] = {}
    for rec in scores.to_dict("records"):
        as_of = rec.get("as_of")
        row: dict[str, Any] = {"user_id": str(rec["user_id"]), "status": "ok"}
        for name in _FLOAT_FIELDS:
            row[name] = _float_or_none(rec.get(name))
        for name in _STR_FIELDS:
            row[name] = _str_or_none(rec.get(name))
        row["reasons"] = _json_list(rec.get("reasons"))
        row["interventions"] = _json_list(rec.get("interventions"))
        control = rec.get("control")
        row["control"] = None if control is None else bool(control)
        row["as_of"] = None if as_of is None else as_of.isoformat()
        out[row["user_id"]] = row
    return out


def _unknown(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "status": "unknown_user"}


def _response_bytes(results: list[dict[str, Any]]) -> Response:
    body = json.dumps({"results": results}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return Response(body.encode("utf-8"), media_type="application/json")


# ----------------------------------------------------------------------------- raw rows


def _timestamps(values: list[datetime]) -> pd.Series:
    import pandas as pd

    # A time without offset means UTC (the data contract); aware times are converted to UTC.
    return pd.Series(
        [pd.Timestamp(v).tz_localize("UTC") if v.tzinfo is None else pd.Timestamp(v).tz_convert("UTC")
         for v in values],
        dtype="datetime64[ns, UTC]",
    )


def _rows_frame(rows: Sequence[Any], columns: dict[str, str], required: Sequence[str]) -> pd.DataFrame:
    """A contract-typed frame of pydantic rows; optional columns only if some row sets them."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name, kind in columns.items():
        values = [getattr(r, name) for r in rows]
        if name not in required and all(v is None for v in values):
            continue
        if kind == "timestamp":
            data[name] = (_timestamps(values) if all(v is not None for v in values) else pd.Series(
                [None if v is None else _timestamps([v]).iloc[0] for v in values], dtype="datetime64[ns, UTC]"))
        elif kind == "float":
            data[name] = pd.Series([math.nan if v is None else float(v) for v in values], dtype="float64")
        elif kind == "int":
            data[name] = pd.Series(values, dtype="Int64")
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def _check_raw_rows(request: PredictRequest, config: StrataConfig) -> list[tuple[str | None, str]]:
    """Row-level rules of the data contract the pydantic types cannot express, as (field, message)."""
    import pandas as pd

    problems: list[tuple[str | None, str]] = []
    wanted = set(request.user_ids)
    min_ts = pd.Timestamp(config.data.min_timestamp, tz="UTC")
    event_types = set(config.data.event_types)

    def check_ts(where: str, value: datetime | None) -> None:
        if value is None:
            return
        ts = pd.Timestamp(value)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if ts < min_ts:
            problems.append((where, f"{ts.isoformat()} is before {config.data.min_timestamp} (data.min_timestamp)"))

    for table, rows in (("orders", request.orders), ("events", request.events), ("users", request.users)):
        for i, row in enumerate(rows or ()):
            if row.user_id not in wanted:
                problems.append((f"{table}[{i}].user_id", f"{row.user_id!r} is not one of user_ids"))
    for i, o in enumerate(request.orders or ()):
        if o.amount > config.data.max_amount:
            problems.append((f"orders[{i}].amount", f"{o.amount} exceeds data.max_amount {config.data.max_amount}"))
        if o.quantity is not None and o.quantity > config.data.max_quantity:
            problems.append((f"orders[{i}].quantity",
                             f"{o.quantity} exceeds data.max_quantity {config.data.max_quantity}"))
        check_ts(f"orders[{i}].ordered_at", o.ordered_at)
    for i, e in enumerate(request.events or ()):
        if e.event_type not in event_types:
            problems.append((f"events[{i}].event_type",
                             f"unknown event type {e.event_type!r} (known: {', '.join(sorted(event_types))})"))
        check_ts(f"events[{i}].occurred_at", e.occurred_at)
    for i, u in enumerate(request.users or ()):
        check_ts(f"users[{i}].joined_at", u.joined_at)
    return problems


def dataset_from_request(request: PredictRequest, config: StrataConfig) -> tuple[Any, pd.Timestamp]:
    """The :class:`features.dataset.Dataset` and cutoff of a ``/predict`` call that carries raw rows.

    Raises :class:`APIError` (422) naming every offending row and field.
    """
    from features.contract import EVENTS, ORDERS, USERS
    from features.cutoffs import parse_as_of
    from features.dataset import Dataset

    if request.as_of is None:
        raise APIError(422, "as_of: required when orders, events or users rows are sent", field="as_of")
    problems = _check_raw_rows(request, config)
    if problems:
        first_field, first_msg = problems[0]
        raise APIError(422, f"{first_field}: {first_msg}", field=first_field, details=problems)
    as_of = parse_as_of(request.as_of.isoformat())
    orders = _rows_frame(request.orders or [], {**ORDERS.required, **ORDERS.optional}, list(ORDERS.required))
    events = (_rows_frame(request.events, {**EVENTS.required, **EVENTS.optional}, list(EVENTS.required))
              if request.events else None)
    users = (_rows_frame(request.users, {**USERS.required, **USERS.optional}, list(USERS.required))
             if request.users else None)
    return Dataset(orders=orders, events=events, users=users), as_of


# ----------------------------------------------------------------------------- feature rows


@dataclass(frozen=True)
class FeatureSchema:
    """The columns a feature row must have: ``user_id``, ``as_of`` and every feature, each with its kind."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return ["user_id", "as_of", *self.numeric, *self.categorical]

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of one row (used in the served OpenAPI document)."""
        props: dict[str, Any] = {
            "user_id": {"type": "string", "minLength": 1, "maxLength": 256},
            "as_of": {"type": "string", "format": "date-time"},
        }
        for name in self.numeric:
            props[name] = {"type": "number", "nullable": True}
        for name in self.categorical:
            props[name] = {"type": "string"}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def feature_schema_for(config: StrataConfig, model_features: Sequence[str], categorical: Sequence[str]) -> FeatureSchema:
    """Feature table columns of ``config`` plus any model feature they lack, in table order."""
    from features.definitions import output_features

    numeric: list[str] = []
    cats: list[str] = []
    for d in output_features(config):
        (cats if d.dtype == "string" else numeric).append(d.name)
    for name in model_features:
        if name not in numeric and name not in cats:
            (cats if name in categorical else numeric).append(name)
    return FeatureSchema(numeric=tuple(numeric), categorical=tuple(cats))


def feature_frame(rows: list[dict[str, Any]], schema: FeatureSchema) -> pd.DataFrame:
    """A feature table (``build_features`` layout and dtypes) from JSON rows; 422 naming every problem."""
    import pandas as pd

    problems: list[tuple[str | None, str]] = []
    expected = set(schema.columns)
    numeric = set(schema.numeric)
    seen: dict[str, int] = {}
    as_ofs: list[pd.Timestamp | None] = []
    for i, row in enumerate(rows):
        missing = [c for c in schema.columns if c not in row]
        extra = sorted(set(row) - expected)
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            problems.append((f"rows[{i}]", f"missing features: {shown}"))
        if extra:
            shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
            problems.append((f"rows[{i}]", f"unknown features: {shown}"))
        uid = row.get("user_id")
        if "user_id" in row and not (isinstance(uid, str) and uid):
            problems.append((f"rows[{i}].user_id", f"must be a non-empty string (got {uid!r})"))
        elif isinstance(uid, str):
            if uid in seen:
                problems.append((f"rows[{i}].user_id", f"{uid!r} repeats rows[{seen[uid]}]"))
            seen[uid] = i
        as_ofs.append(_row_as_of(row.get("as_of"), f"rows[{i}].as_of", problems) if "as_of" in row else None)
        for name in schema.columns[2:]:
            if name not in row:
                continue
            value = row[name]
            if name in numeric:
                if value is not None and not isinstance(value, float):
                    problems.append((f"rows[{i}].{name}", f"must be a number or null (got {_short(value)})"))
            elif not isinstance(value, str):
                problems.append((f"rows[{i}].{name}",
                                 f"must be a string (categorical feature; 'unknown' if absent), got {_short(value)}"))
    if problems:
        first_field, first_msg = problems[0]
        raise APIError(422, f"{first_field}: {first_msg}", field=first_field, details=problems)
    data: dict[str, Any] = {
        "user_id": pd.Series([r["user_id"] for r in rows], dtype=object),
        "as_of": pd.Series(as_ofs, dtype="datetime64[ns, UTC]"),
    }
    for name in schema.numeric:
        data[name] = pd.Series([math.nan if r[name] is None else r[name] for r in rows], dtype="float64")
    for name in schema.categorical:
        data[name] = pd.Series([r[name] for r in rows], dtype=object)
    return pd.DataFrame(data)[schema.columns]


def _short(value: Any) -> str:
    from serving.security import describe_value

    return describe_value(value)


def _row_as_of(value: Any, where: str, problems: list[tuple[str | None, str]]) -> pd.Timestamp | None:
    import pandas as pd

    if not isinstance(value, str):
        problems.append((where, f"must be an ISO 8601 timestamp string (got {_short(value)})"))
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append((where, f"cannot parse {_short(value)} as an ISO 8601 timestamp"))
        return None
    if not 1678 <= parsed.year <= 2261:
        problems.append((where, f"year {parsed.year} is out of the supported range 1678..2261"))
        return None
    ts = pd.Timestamp(parsed)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class VersionState:
    """State built once per model version at load time and swapped together with its scorer."""

    schema: FeatureSchema


# ----------------------------------------------------------------------------- micro-batching


@dataclass
class _Pending:
    user_ids: list[str]
    future: asyncio.Future[dict[str, dict[str, Any]]]


@dataclass
class StoredScoring:
    """Coalesces concurrent by-id lookups: one store read and one scoring call per batch.

    While a batch is being scored in the worker thread, new requests queue; when it finishes, all queued
    requests form the next batch. No request waits for a timer, so a lone request is scored at once.
    """

    service: StrataService
    max_batch_users: int = 4096
    _queue: list[_Pending] = field(default_factory=list)
    _running: bool = False

    async def score(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        pending = _Pending(user_ids, loop.create_future())
        self._queue.append(pending)
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await pending.future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Pending] = []
                n = 0
                while self._queue and (not batch or n + len(self._queue[0].user_ids) <= self.max_batch_users):
                    p = self._queue.pop(0)
                    batch.append(p)
                    n += len(p.user_ids)
                ids = list(dict.fromkeys(u for p in batch for u in p.user_ids))
                try:
                    found = await asyncio.to_thread(self.service.score_stored, ids)
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
    return JSONResponse(openapi_document())


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
    logging={"access": {"enabled": False}},
)
@bentoml.asgi_app(info_app, path="/")
class StrataService:
    """Online churn / value / layer / intervention predictions, the same numbers as batch scoring."""

    def __init__(self) -> None:
        from serving.model_watcher import ModelWatcher
        from serving.online_store import OnlineStore

        self.config = load_service_config()
        self.store: OnlineStore = OnlineStore(self.config.serving.online_store)
        self.model_name = self.config.training.model_name
        self.watcher: ModelWatcher[Scorer] = ModelWatcher(
            resolve_version=self._champion_version,
            load=self._load_version,
            warm_up=self._warm_up,
            poll_seconds=self.config.serving.model_poll_seconds,
        )
        self.stored_scoring = StoredScoring(self)
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

        Returns the per-version state (the feature-row schema) kept with the scorer.
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
        format_results(scores)
        self.store.count()
        bundle = scorer.bundle
        schema = feature_schema_for(self.config, bundle.feature_names, list(bundle.categorical_levels))
        return VersionState(schema=schema)

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
            raise APIError(503, "the service is not ready: no model is loaded yet (see /readyz)")
        return live

    # -- scoring (worker thread) ----------------------------------------------------------------

    def score_stored(self, user_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Score users from their stored features with the served model; unknown ids are absent."""
        live = self._live()
        features = self.store.get_features(user_ids)
        if len(features) == 0:
            return {}
        return format_results(live.scorer.score_features(features))

    def _score_raw(self, request: PredictRequest) -> dict[str, dict[str, Any]]:
        live = self._live()
        dataset, as_of = dataset_from_request(request, self.config)
        scores = live.scorer.score_raw(dataset, as_of)
        wanted = set(request.user_ids)
        scores = scores[scores["user_id"].astype(str).isin(wanted)]
        return format_results(scores)

    def _score_feature_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        live = self._live()
        frame = feature_frame(rows, self.feature_schema(live))
        found = format_results(live.scorer.score_features(frame))
        return [found[str(u)] for u in frame["user_id"]]

    # -- API ------------------------------------------------------------------------------------

    def _check_ids(self, user_ids: list[str]) -> None:
        limit = self.config.serving.max_user_ids
        if len(user_ids) > limit:
            raise APIError(
                422,
                f"user_ids: {len(user_ids)} ids in one call; the limit is {limit} (serving.max_user_ids)",
                field="user_ids",
            )

    @bentoml.api(route="/predict", output_spec=PredictResponse)
    async def predict(self, request: PredictRequest, /) -> PredictResponse | Response:
        """Predictions for users by id (stored features), or from raw rows sent with the request."""
        try:
            self._check_ids(request.user_ids)
            if request.has_raw_rows:
                found = await asyncio.to_thread(self._score_raw, request)
            else:
                self._live()
                found = await self.stored_scoring.score(list(request.user_ids))
        except APIError as err:
            return err.response()
        return _response_bytes([found.get(u) or _unknown(u) for u in request.user_ids])

    @bentoml.api(route="/predict/features", output_spec=PredictResponse)
    async def predict_features(self, request: FeaturesRequest, /) -> PredictResponse | Response:
        """Predictions for precomputed feature rows (``user_id``, ``as_of`` and every model feature)."""
        try:
            if len(request.rows) > self.config.serving.max_user_ids:
                raise APIError(
                    422,
                    f"rows: {len(request.rows)} rows in one call; the limit is "
                    f"{self.config.serving.max_user_ids} (serving.max_user_ids)",
                    field="rows",
                )
            results = await asyncio.to_thread(self._score_feature_rows, list(request.rows))
        except APIError as err:
            return err.response()
        return _response_bytes(results)

    @bentoml.api(route="/admin/reload", output_spec=ReloadResponse)
    async def admin_reload(self, request: ReloadRequest, /) -> ReloadResponse | Response:
        """Look up the ``champion`` alias now and swap versions if it moved (API key required)."""
        outcome = await asyncio.to_thread(self.watcher.check_now)
        if outcome.error is not None and outcome.version is None:
            return APIError(503, f"no model could be loaded: {outcome.error}").response()
        return ReloadResponse(changed=outcome.changed, model_version=outcome.version,
                              previous_version=outcome.previous_version)

    async def metadata_response(self) -> Response:
        """``GET /metadata``: the served model and the online store (503 before a model is loaded)."""
        try:
            live = self._live()
        except APIError as err:
            return err.response()
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
        return Response(body.model_dump_json().encode("utf-8"), media_type="application/json")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of this API (BentoML's, with the real error responses and GET routes)."""
    spec: dict[str, Any] = StrataService.openapi_spec.asdict()
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorResponse, MetadataResponse, PredictionResult):
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = doc
    error_ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

    def errors(*codes: int) -> dict[str, Any]:
        texts = {
            400: "Body is not valid JSON",
            401: "Missing or invalid X-API-Key",
            403: "Endpoint disabled (no API key configured)",
            413: "Body larger than serving.max_body_bytes",
            415: "Content-Type is not application/json",
            422: "Request does not match the schema (fields and values named)",
            503: "No model loaded yet",
        }
        return {str(c): {"description": texts[c], "content": error_ref} for c in codes}

    for path in ("/predict", "/predict/features", "/admin/reload"):
        post = spec["paths"][path]["post"]
        for code in ("400", "404", "500"):
            post["responses"].pop(code, None)
        post["responses"].update(errors(400, 401, 413, 415, 422, 503))
    spec["paths"]["/admin/reload"]["post"]["responses"].update(errors(403))
    spec["paths"]["/metadata"] = {
        "get": {
            "operationId": "strata__metadata",
            "description": "The served model and the online store.",
            "responses": {
                "200": {"description": "Metadata", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/MetadataResponse"}}}},
                **errors(401, 503),
            },
        }
    }
    for infra in ("/healthz",):
        spec["paths"].pop(infra, None)
    spec["info"]["title"] = "Strata prediction API"
    spec["info"]["version"] = API_VERSION
    spec["info"]["description"] = (
        "Churn risk, future value, refined layers and interventions per user; see docs/api.md."
    )
    spec["info"].pop("contact", None)
    spec["components"]["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    spec["security"] = [{"ApiKey": []}]
    for probe in ("/livez", "/readyz", "/metrics"):
        if probe in spec["paths"]:
            spec["paths"][probe]["get"]["security"] = []
    return spec


def _guard_settings() -> Any:
    return guard_settings(load_service_config())


StrataService.add_asgi_middleware(
    RequestGuard,
    settings_loader=_guard_settings,
    request_models={"/predict": PredictRequest, "/predict/features": FeaturesRequest,
                    "/admin/reload": ReloadRequest},
    key_required_paths=("/admin/reload",),
)

__all__ = ["StrataService", "format_results", "load_service_config", "openapi_document"]
