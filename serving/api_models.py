"""Typed requests and responses of the online prediction API (stable shapes, see docs/api.md).

Prediction results use the column names of the batch output (:mod:`serving.batch`), so a CRM can load
an API answer and a batch file with the same mapping. ``reasons`` and ``interventions`` are JSON strings
in the batch table and parsed lists here. Every model forbids unknown keys and non-finite numbers: a
typo in a field name is an error naming the field, never a silently ignored key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints

if TYPE_CHECKING:
    import pandas as pd

    from features.config import StrataConfig
    from features.dataset import Dataset
    from serving.fast_scorer import FeatureRows

#: A user id as the data contract defines it: a non-empty string.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
#: Hard ceiling on ids per call; the effective limit is ``serving.max_user_ids`` (lower by default).
HARD_MAX_USER_IDS = 100_000
#: Hard ceiling on raw rows or feature rows per call (bodies are also capped by ``serving.max_body_bytes``).
HARD_MAX_ROWS = 100_000
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FeatureValue = Annotated[float, Strict()] | str | None
"""One feature value: a finite number, a string (categorical features) or null (undefined, NaN)."""

# pandas holds nanosecond timestamps, which cover 1677-09-21 .. 2262-04-11.
_MIN_YEAR, _MAX_YEAR = 1678, 2261


def _iso_text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date or timestamp string, e.g. 2024-06-30T12:00:00Z")
    return value


def _in_pandas_range(value: datetime) -> datetime:
    if not _MIN_YEAR <= value.year <= _MAX_YEAR:
        raise ValueError(f"year {value.year} is out of the supported range {_MIN_YEAR}..{_MAX_YEAR}")
    return value


#: Years 1678..2261 (the pandas range), as a JSON-schema pattern on the start of the ISO string.
YEAR_PATTERN = r"^(167[89]|16[89]\d|1[7-9]\d\d|2[01]\d\d|22[0-5]\d|226[01])-"

Timestamp = Annotated[
    datetime,
    Field(strict=False, json_schema_extra={"pattern": YEAR_PATTERN}),
    BeforeValidator(_iso_text),
    AfterValidator(_in_pandas_range),
]
"""An ISO 8601 date or timestamp string; a date means midnight and a time without offset means UTC."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, strict=True)


class OrderRow(_Strict):
    """One order, as in the ``orders`` table of the data contract (amount in shop currency)."""

    user_id: UserId
    order_id: ShortText
    ordered_at: Timestamp
    amount: float = Field(ge=0.0)
    category: ShortText | None = None
    channel: ShortText | None = None
    status: Literal["paid", "refunded"] | None = None
    quantity: int | None = Field(default=None, ge=0, le=1_000_000)


class EventRow(_Strict):
    """One engagement event, as in the ``events`` table of the data contract."""

    user_id: UserId
    occurred_at: Timestamp
    event_type: ShortText
    value: float | None = None
    channel: ShortText | None = None


class UserRow(_Strict):
    """One user profile, as in the ``users`` table of the data contract."""

    user_id: UserId
    joined_at: Timestamp | None = None
    source_channel: ShortText | None = None
    region: ShortText | None = None
    gender: ShortText | None = None
    age_band: ShortText | None = None
    membership_level: ShortText | None = None


class PredictRequest(_Strict):
    """Score users by id.

    Without raw rows, each user is scored from the features stored in the online store (as of the
    store's feature timestamp). With ``orders``/``events``/``users`` rows and ``as_of``, features are
    computed from exactly those rows (the caller's full history of these users up to ``as_of``) with
    the batch feature code, and nothing stored is mixed in.
    """

    user_ids: list[UserId] = Field(min_length=1, max_length=HARD_MAX_USER_IDS)
    as_of: Timestamp | None = None
    """Cutoff for features computed from raw rows (ISO 8601; a naive time means UTC)."""
    orders: list[OrderRow] | None = Field(default=None, max_length=HARD_MAX_ROWS)
    events: list[EventRow] | None = Field(default=None, max_length=HARD_MAX_ROWS)
    users: list[UserRow] | None = Field(default=None, max_length=HARD_MAX_ROWS)

    @property
    def has_raw_rows(self) -> bool:
        return self.orders is not None or self.events is not None or self.users is not None


_USER_IDS_ONLY = frozenset({"user_ids"})


def simple_user_ids(body: bytes, limit: int) -> list[str] | None:
    """The ids of a ``/predict`` body of the common shape ``{"user_ids": [...]}``, else None.

    A cheap check (one ``orjson.loads``, no pydantic model) for the hot path. It accepts only what
    :class:`PredictRequest` certainly accepts and the service answers with 200: an ASCII body whose one
    key is ``user_ids``, a list of 1 to ``limit`` ASCII strings of 1 to 256 characters. Anything else
    (raw rows, other keys, non-ASCII text, bad values, too many ids) gives None, and the caller takes the
    full path, which validates with :class:`PredictRequest` and words any error.
    """
    if not body.isascii():
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # also NaN tokens and huge integers, which json would read: full path
        return None
    if type(data) is not dict or data.keys() != _USER_IDS_ONLY:
        return None
    ids = data["user_ids"]
    if type(ids) is not list or not 1 <= len(ids) <= min(limit, HARD_MAX_USER_IDS):
        return None
    for u in ids:
        if type(u) is not str or not 1 <= len(u) <= 256 or not u.isascii():
            return None
    return ids


class FeaturesRequest(_Strict):
    """Score precomputed feature rows (the columns of ``build_features``: user_id, as_of, features)."""

    rows: list[dict[str, FeatureValue]] = Field(min_length=1, max_length=HARD_MAX_ROWS)


class Reason(BaseModel):
    """One reason code: a feature that pushed the churn score up or down (contribution in log-odds)."""

    model_config = ConfigDict(extra="allow")

    feature: str
    label: str | None = None
    value: Any = None
    contribution: float | None = None
    direction: Literal["up", "down"] | None = None


class Intervention(BaseModel):
    """One eligible action, ranked by expected incremental value (shop currency)."""

    model_config = ConfigDict(extra="allow")

    action_id: str


class PredictionResult(BaseModel):
    """Prediction for one user; fields other than ``user_id`` and ``status`` are null for unknown users.

    Probabilities are over the model's horizon (``horizon_days`` in ``/metadata``); values are in shop
    currency over the same horizon; ``as_of`` is the timestamp the features were computed at.
    """

    user_id: str
    status: Literal["ok", "unknown_user"]
    churn_risk: float | None = None
    conversion_prob: float | None = None
    predicted_value: float | None = None
    value_p10: float | None = None
    value_p90: float | None = None
    lifecycle: str | None = None
    rfm_segment: str | None = None
    value_tier: str | None = None
    activity_tier: str | None = None
    refined_layer: str | None = None
    reasons: list[Reason] | None = None
    interventions: list[Intervention] | None = None
    action_id: str | None = None
    action_name: str | None = None
    action_cost: float | None = None
    expected_incremental_value: float | None = None
    control: bool | None = None
    model_name: str | None = None
    model_version: str | None = None
    as_of: datetime | None = None


_EMPTY_RESULT: dict[str, Any] = {name: None for name in PredictionResult.model_fields}


class PredictResponse(BaseModel):
    """One result per requested id, in request order (duplicates answered once each time asked)."""

    results: list[PredictionResult]


class MetadataResponse(BaseModel):
    """The model being served and the state of the online store."""

    model_name: str
    model_version: str
    model_alias: str | None
    trained_at: str | None
    horizon_days: int | None
    features: list[str]
    categorical_features: list[str]
    loaded_at: datetime
    online_store_users: int | None
    online_store_as_of: datetime | None
    api_version: str


class ReloadRequest(_Strict):
    """Ask the service to look up the champion alias now (instead of waiting for the next poll)."""

    alias: Literal["champion"] = "champion"


class ReloadResponse(BaseModel):
    """Result of a reload: whether the served version changed, and why not if loading failed."""

    changed: bool
    model_version: str | None
    previous_version: str | None
    error: str | None = None
    """Why the alias's version could not be served (the previous version keeps serving)."""


class ErrorItem(BaseModel):
    """One problem with a request: the offending field (dotted path) and what is wrong."""

    field: str | None
    message: str


class ErrorBody(BaseModel):
    """A machine-readable ``code`` (e.g. ``invalid_request``), the first problem and all problems."""

    code: str
    field: str | None
    message: str
    details: list[ErrorItem] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every 4xx/5xx response of the API has this shape."""

    error: ErrorBody


# ----------------------------------------------------------------------------- errors


class APIError(Exception):
    """A request the service refuses: HTTP status, offending field and a message for the client."""

    def __init__(self, status: int, message: str, *, field: str | None = None,
                 details: Sequence[tuple[str | None, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message
        self.details = list(details)

    def body(self) -> bytes:
        """The JSON error body (``{"error": {"code", "field", "message", "details"}}``)."""
        from serving.security import encode_error

        return encode_error(self.status, self.message, field=self.field, details=self.details)


# ----------------------------------------------------------------------------- result formatting

_FLOAT_FIELDS = ("churn_risk", "conversion_prob", "predicted_value", "value_p10", "value_p90",
                 "action_cost", "expected_incremental_value")
_STR_FIELDS = ("lifecycle", "rfm_segment", "value_tier", "activity_tier", "refined_layer", "action_id",
               "action_name", "model_name", "model_version")


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _str_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _finite_float(text: str) -> float | None:
    f = float(text)
    return f if math.isfinite(f) else None


_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_ZERO_RUN = b"0" * 19


def _json_list(value: Any) -> list[Any] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, list):
        return value
    try:
        # orjson refuses NaN/Infinity tokens and overflowing literals, so what it parses has only finite
        # numbers: the same values as the json path below, several times faster. It reads integers beyond
        # 64 bits as floats, though: text with 19 or more digits in a row goes the json way.
        raw = value.encode()
        if raw.translate(_DIGITS_AS_ZERO).find(_ZERO_RUN) >= 0:  # a C-speed scan; a regex costs 10x more
            raise orjson.JSONDecodeError("long integer", value, 0)
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Non-finite numbers (NaN/Infinity tokens, overflowing literals) become None while parsing: JSON
        # has no NaN, and one pass is cheaper than walking the parsed value again.
        parsed = json.loads(value, parse_constant=lambda _token: None, parse_float=_finite_float)
    return parsed if isinstance(parsed, list) else None


def result_from_record(rec: dict[Any, Any]) -> dict[str, Any]:
    """One scorer output row (a ``to_dict("records")`` item) as an API result dict (JSON-ready).

    Floats pass through unchanged (NaN and infinities become null); ``reasons`` and ``interventions``
    JSON strings are parsed into lists; ``as_of`` (a timestamp, or already its ISO text) is ISO 8601.
    """
    as_of = rec.get("as_of")
    row: dict[str, Any] = {**_EMPTY_RESULT, "user_id": str(rec["user_id"]), "status": "ok"}
    for name in _FLOAT_FIELDS:
        row[name] = _float_or_none(rec.get(name))
    for name in _STR_FIELDS:
        row[name] = _str_or_none(rec.get(name))
    row["reasons"] = _json_list(rec.get("reasons"))
    row["interventions"] = _json_list(rec.get("interventions"))
    control = rec.get("control")
    row["control"] = None if control is None else bool(control)
    row["as_of"] = None if as_of is None else (as_of if isinstance(as_of, str) else as_of.isoformat())
    return row


def results_from_scores(scores: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Scorer output rows as API result dicts (:func:`result_from_record`), keyed by user id."""
    out: dict[str, dict[str, Any]] = {}
    for rec in scores.to_dict("records"):
        row = result_from_record(rec)
        out[row["user_id"]] = row
    return out


def unknown_user(user_id: str) -> dict[str, Any]:
    """The result of an id the online store does not know: every field present, null."""
    return {**_EMPTY_RESULT, "user_id": user_id, "status": "unknown_user"}


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value orjson can write (orjson's ``default`` hook)."""
    item = getattr(value, "item", None)
    if item is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return item()


def encode_result(result: dict[str, Any]) -> bytes:
    """One result dict as compact UTF-8 JSON bytes (orjson; floats in their shortest round-trip form).

    :func:`result_from_record` leaves no NaN or infinity; should one slip through, it is written as
    ``null`` (JSON has no NaN), never an error."""
    return orjson.dumps(result, default=_plain)


def encode_results(parts: Sequence[bytes]) -> bytes:
    """``{"results": [...]}`` from already encoded results."""
    return b'{"results":[' + b",".join(parts) + b"]}"


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

    tables: list[tuple[str, Sequence[OrderRow | EventRow | UserRow]]] = [
        ("orders", request.orders or []), ("events", request.events or []), ("users", request.users or [])
    ]
    for table, rows in tables:
        for i, row in enumerate(rows):
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


def dataset_from_request(request: PredictRequest, config: StrataConfig) -> tuple[Dataset, pd.Timestamp]:
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
            "as_of": {"type": "string", "format": "date-time", "pattern": YEAR_PATTERN},
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


def _checked_as_ofs(rows: list[dict[str, Any]], schema: FeatureSchema) -> list[pd.Timestamp | None]:
    """The ``as_of`` of every JSON feature row (UTC), after checking the rows; 422 naming every problem."""
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
        if "user_id" in row and not (isinstance(uid, str) and 1 <= len(uid) <= 256):
            problems.append((f"rows[{i}].user_id", f"must be a string of 1 to 256 characters (got {_short(uid)})"))
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
    return as_ofs


def feature_frame(rows: list[dict[str, Any]], schema: FeatureSchema) -> pd.DataFrame:
    """A feature table (``build_features`` layout and dtypes) from JSON rows; 422 naming every problem."""
    import pandas as pd

    as_ofs = _checked_as_ofs(rows, schema)
    data: dict[str, Any] = {
        "user_id": pd.Series([r["user_id"] for r in rows], dtype=object),
        "as_of": pd.Series(as_ofs, dtype="datetime64[ns, UTC]"),
    }
    for name in schema.numeric:
        data[name] = pd.Series([math.nan if r[name] is None else r[name] for r in rows], dtype="float64")
    for name in schema.categorical:
        data[name] = pd.Series([r[name] for r in rows], dtype=object)
    return pd.DataFrame(data)[schema.columns]


def feature_rows(rows: list[dict[str, Any]], schema: FeatureSchema) -> FeatureRows:
    """The same rows as :func:`feature_frame`, as arrays for :class:`serving.fast_scorer.FastScorer`."""
    import numpy as np

    from serving.fast_scorer import FeatureRows

    as_ofs = _checked_as_ofs(rows, schema)
    numeric = np.array([[math.nan if r[name] is None else r[name] for name in schema.numeric] for r in rows],
                       dtype=np.float64).reshape(len(rows), len(schema.numeric))
    return FeatureRows(
        user_ids=[r["user_id"] for r in rows],
        as_of=["" if ts is None else ts.as_unit("ns").isoformat() for ts in as_ofs],  # None: refused above
        numeric_names=list(schema.numeric),
        numeric=numeric,
        strings={name: [r[name] for r in rows] for name in schema.categorical},
    )


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
