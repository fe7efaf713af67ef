"""Typed requests and responses of the online prediction API (stable shapes, see docs/api.md).

Prediction results use the column names of the batch output (:mod:`serving.batch`), so a CRM can load
an API answer and a batch file with the same mapping. ``reasons`` and ``interventions`` are JSON strings
in the batch table and parsed lists here. Every model forbids unknown keys and non-finite numbers: a
typo in a field name is an error naming the field, never a silently ignored key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints

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


Timestamp = Annotated[
    datetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_in_pandas_range)
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
    """Result of a reload: whether the served version changed."""

    changed: bool
    model_version: str | None
    previous_version: str | None


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
