"""The data contract: tables, columns, dtypes and event types. Defined once; everything imports it.

All tables are keyed by a string ``user_id``; timestamps are UTC (tz-aware ``datetime64[ns, UTC]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ENTITY_KEY = "user_id"

#: Event types the product knows (DOMAIN.md). The accepted list is configuration
#: (``[data] event_types``); this tuple is its default.
DEFAULT_EVENT_TYPES: tuple[str, ...] = (
    "add_wecom",
    "join_group",
    "group_message",
    "article_read",
    "link_click",
    "coupon_claim",
    "coupon_redeem",
    "consult",
    "checkin",
    "share",
    "referral",
    "review",
    "cart_add",
    "page_view",
)

ORDER_STATUSES: tuple[str, ...] = ("paid", "refunded")


@dataclass(frozen=True)
class TableSchema:
    """Columns of one input table: ``required`` must be present, ``optional`` may be."""

    name: str
    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    timestamp_columns: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.required, *self.optional]

    @property
    def kinds(self) -> dict[str, str]:
        """The contract type of each column (``string``, ``timestamp``, ``float`` or ``int``)."""
        return {**self.required, **self.optional}


# dtype names: "string", "timestamp", "float", "int"
ORDERS = TableSchema(
    name="orders",
    required={"user_id": "string", "order_id": "string", "ordered_at": "timestamp", "amount": "float"},
    optional={"category": "string", "channel": "string", "status": "string", "quantity": "int"},
    timestamp_columns=("ordered_at",),
)

EVENTS = TableSchema(
    name="events",
    required={"user_id": "string", "occurred_at": "timestamp", "event_type": "string"},
    optional={"value": "float", "channel": "string"},
    timestamp_columns=("occurred_at",),
)

USERS = TableSchema(
    name="users",
    required={"user_id": "string"},
    optional={
        "joined_at": "timestamp",
        "source_channel": "string",
        "region": "string",
        "gender": "string",
        "age_band": "string",
        "membership_level": "string",
    },
    timestamp_columns=("joined_at",),
)

SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (ORDERS, EVENTS, USERS)}
